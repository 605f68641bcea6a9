"""The samplers and optimizers on Keras 3's PyTorch backend.

Runs in its own process with KERAS_BACKEND=torch (the backend is fixed when
Keras is first imported). PyTorch has no stateless random ops, so
`keras_heavytail.optimizers.noise` builds a counter-based stream on it; these checks are
the ones the TensorFlow and JAX backends pass: the same KS tolerance as
`test_noise.py` (1.95 / sqrt(n), the 0.1% critical value, fixed seeds), the
same seed giving the same run, sigma=0 giving exactly SGD, and a `.keras`
file continuing the noise where it stopped.
"""

import importlib.util

import pytest
from helpers import HANG_GUARD_S
from helpers import run_python

# Another backend, in a process of its own.
pytestmark = pytest.mark.slow

if importlib.util.find_spec("torch") is None:
    pytest.skip("the PyTorch backend checks need torch", allow_module_level=True)

CODE = """
import math, os, tempfile
import numpy as np, keras
from scipy import stats
import keras_heavytail as kht
from helpers import ks_statistic

assert keras.backend.backend() == "torch"
bound = lambda n: 1.95 / math.sqrt(n)
levy = lambda alpha: stats.levy_stable(alpha, 0).cdf
for alpha in (1.5, 1.0, 2.0):
    x = np.asarray(kht.optimizers.symmetric_stable((20000,), alpha, seed=1).cpu())
    assert ks_statistic(x, levy(alpha)) < bound(20000), alpha
# A pure function of the seed: same seed, same draw; another seed, another.
a, b, c = (np.asarray(kht.optimizers.stable_noise((50, 40), 1.7, "elliptical", seed=s).cpu())
           for s in (4, 4, 5))
np.testing.assert_array_equal(a, b)
assert not np.allclose(a, c)

# Zero-gradient increments of 20 steps on 1000 units are SaS(alpha, 1) once
# divided by sigma / sqrt(fan_in) * lr**(1/alpha), for every structure and the wrapper.
for alpha, make in (
    (1.5, lambda: kht.HeavyTailSGD(0.05, alpha=1.5, sigma=0.01, noise="entry", seed=2)),
    (1.75, lambda: kht.HeavyTailSGD(0.05, alpha=1.75, sigma=0.01, noise="neuron", seed=2)),
    (1.5, lambda: kht.HeavyTailSGD(0.05, alpha=1.5, sigma=0.01, noise="elliptical", seed=2)),
    (1.5, lambda: kht.HeavyTailNoise(keras.optimizers.Adam(0.05), alpha=1.5, sigma=0.01, seed=2)),
):
    opt = make()
    var = keras.Variable(np.zeros((4, 1000), "float32"))
    opt.build([var])
    steps = []
    for _ in range(20):
        var.assign(np.zeros((4, 1000), "float32"))
        opt.apply([keras.ops.zeros((4, 1000))], [var])
        steps.append(keras.ops.convert_to_numpy(var))
    steps = np.stack(steps)
    xi = steps[:, 0, :] / (0.01 / 2 * 0.05 ** (1 / alpha))  # fan_in 4: sigma / sqrt(4)
    d = ks_statistic(xi, levy(alpha))
    assert d < bound(xi.size), (opt.name, opt.noise, d)
    if opt.noise == "neuron":
        np.testing.assert_array_equal(steps, np.broadcast_to(steps[:, :1], steps.shape))

rng = np.random.default_rng(0)
xs, ys = rng.normal(size=(64, 8)).astype("float32"), np.arange(64) % 3

def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(3)])

def fit(m, epochs):
    m.fit(xs, ys, epochs=epochs, batch_size=16, verbose=0, shuffle=False)
    return m

def train(opt, epochs=2):
    m = model(); m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    return fit(m, epochs).get_weights()

# sigma=0 is SGD: on torch, Keras swaps `SGD` for a fused `torch._foreach`
# version whose rounding differs from the per-variable rule HeavyTailSGD
# inherits by a few float32 ulps, hence the tolerance. The same seed gives
# the same run, another seed another.
plain = train(keras.optimizers.SGD(0.1))
for a, b in zip(train(kht.HeavyTailSGD(0.1, sigma=0.0, seed=1)), plain):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
runs = [train(kht.HeavyTailSGD(0.1, sigma=0.05, seed=s)) for s in (5, 5, 6)]
np.testing.assert_array_equal(runs[0][0], runs[1][0])
assert not np.allclose(runs[0][0], runs[2][0])
assert np.abs(runs[0][0] - plain[0]).max() > 1e-2

# Save mid-training, reload, continue: the same weights as straight through.
for make in (lambda: kht.HeavyTailSGD(0.1, momentum=0.9, sigma=0.05, noise="elliptical", seed=3),
             lambda: kht.HeavyTailNoise(keras.optimizers.Adam(1e-2), sigma=0.05, seed=3)):
    straight = train(make(), epochs=4)
    half = model(); half.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
    fit(half, 2)
    path = os.path.join(tempfile.mkdtemp(), "m.keras")
    half.save(path)
    resumed = keras.saving.load_model(path)
    assert int(resumed.optimizer.iterations) == 8
    for a, b in zip(straight, fit(resumed, 2).get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
# Neuron noise shares a draw per output unit of every kernel layout.
from helpers import UNIT_SPREAD, unit_noise_spread
assert unit_noise_spread(lambda s, m: kht.HeavyTailSGD(0.01, sigma=s, seed=1), how="evaluate") == UNIT_SPREAD
print("torch ok")
"""


def test_samplers_and_optimizers_on_the_torch_backend():
    result = run_python(CODE, env={"KERAS_BACKEND": "torch"}, timeout=HANG_GUARD_S)
    assert "torch ok" in result.stdout, result.stdout
