"""The optimizers on Keras 3's JAX backend (the backend of the GPU path).

Runs in a subprocess with KERAS_BACKEND=jax: the backend is fixed when Keras
is first imported. Same KS tolerance as `test_noise.py`.
"""

import importlib.util
import textwrap

import pytest
from helpers import HANG_GUARD_S
from helpers import NOISE
from helpers import run_python

# Other backends and several devices, each in processes of its own.
pytestmark = pytest.mark.slow

if importlib.util.find_spec("jax") is None:
    pytest.skip("the JAX backend checks need jax", allow_module_level=True)

CODE = textwrap.dedent(
    """
    import math, os, tempfile
    import numpy as np, keras
    from scipy import stats
    import keras_heavytail as kht
    from helpers import ks_statistic

    assert keras.backend.backend() == "jax"
    bound = lambda n: 1.95 / math.sqrt(n)
    x = np.asarray(kht.optimizers.symmetric_stable((20000,), 1.5, seed=1))
    assert ks_statistic(x, stats.levy_stable(1.5, 0).cdf) < bound(20000)

    # Zero-gradient increments through stateless_apply (jitted by fit) are SaS.
    for opt in (kht.HeavyTailSGD(0.05, alpha=1.5, sigma=0.01, noise="elliptical", seed=2),
                kht.HeavyTailNoise(keras.optimizers.Adam(0.05), alpha=1.5, sigma=0.01, seed=2)):
        var = keras.Variable(np.zeros((2, 20000), "float32"))
        opt.build([var])
        new_vars, _ = opt.stateless_apply(
            [v.value for v in opt.variables], [np.zeros((2, 20000), "float32")], [var.value])
        xi = np.asarray(new_vars[0])[0] / (0.01 / np.sqrt(2) * 0.05 ** (1 / 1.5))  # fan_in 2
        d = ks_statistic(xi, stats.levy_stable(1.5, 0).cdf)
        assert d < bound(xi.size), (type(opt).__name__, d)

    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(64, 8)).astype("float32"), np.arange(64) % 3

    def model():
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(3)])
        return m

    def fit(m, epochs):
        m.fit(xs, ys, epochs=epochs, batch_size=16, verbose=0, shuffle=False)
        return m

    # sigma=0 is exactly SGD.
    weights = []
    for opt in (kht.HeavyTailSGD(0.1, sigma=0.0, seed=1), keras.optimizers.SGD(0.1)):
        m = model(); m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        weights.append(fit(m, 2).get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)

    # Save mid-training, reload, continue: same weights as straight through.
    for make in (lambda: kht.HeavyTailSGD(0.1, sigma=0.05, seed=3),
                 lambda: kht.HeavyTailNoise(keras.optimizers.Adam(1e-2), sigma=0.05, seed=3)):
        straight = model(); straight.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
        fit(straight, 4)
        half = model(); half.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
        fit(half, 2)
        path = os.path.join(tempfile.mkdtemp(), "m.keras")
        half.save(path)
        resumed = fit(keras.saving.load_model(path), 2)
        for a, b in zip(straight.get_weights(), resumed.get_weights()):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert not np.allclose(straight.get_weights()[0], weights[1][0])

    # A JAX-trained model exports to LiteRT (Keras writes the SavedModel
    # through jax2tf) and scores there as in JAX.
    trained = straight
    path = os.path.join(tempfile.mkdtemp(), "j.tflite")
    kht.export_tflite(trained, path)
    logits, _ = kht.predict_tflite(path, xs)
    np.testing.assert_allclose(logits, np.asarray(trained.predict(xs, verbose=0)), atol=1e-4)
    evaluation = kht.evaluate_tflite(path, xs, ys, from_logits=True)
    assert evaluation["accuracy"] == np.mean(np.argmax(logits, -1) == ys)
    # Neuron noise shares a draw per output unit of every kernel layout.
    from helpers import UNIT_SPREAD, unit_noise_spread
    assert unit_noise_spread(lambda s, m: kht.HeavyTailSGD(0.01, sigma=s, seed=1), how="evaluate") == UNIT_SPREAD
    print("jax ok")
    """
)


def test_optimizers_on_the_jax_backend():
    result = run_python(CODE, env={"KERAS_BACKEND": "jax"}, timeout=HANG_GUARD_S)
    assert "jax ok" in result.stdout


def test_the_cli_on_jax_prints_no_tensorflow_lines(tmp_path):
    # After jaxlib, TensorFlow's start-up lines ignore TF_CPP_MIN_LOG_LEVEL;
    # `train` imports TensorFlow (Keras' set_random_seed does), and the
    # user has not set the variable.
    result = run_python(
        args=["-m", "keras_heavytail", "train", "--epochs", "1", "--limit", "200",
              "--output", tmp_path / "m.keras"],
        env={"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": None},
        timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert (tmp_path / "m.keras").exists()
    for stream in (result.stdout, result.stderr):
        found = NOISE.search(stream)
        assert found is None, stream[max(0, found.start() - 300) : found.end() + 300]
