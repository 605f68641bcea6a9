"""Tests of HeavyTailSGD and HeavyTailNoise.

The distribution tests use the same tolerance as `test_noise.py`: the KS
statistic must stay below 1.95 / sqrt(n), the 0.1% critical value; seeds are
fixed, so the tests are deterministic.
"""

import json
import os
import textwrap
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import HANG_GUARD_S
from helpers import UNIT_SPREAD
from helpers import assert_round_trips
from helpers import ks_ok
from helpers import run_python
from helpers import tiny_data
from helpers import tiny_mlp
from helpers import unit_noise_spread
from scipy import stats

import keras_heavytail as kht
from keras_heavytail import defaults

# One row per case: (alpha, noise structure, inner optimizer or None for SGD).
CASES = [
    (1.75, "entry", None),
    (1.75, "neuron", None),
    (1.75, "elliptical", None),
    (1.5, "entry", "adam"),
    (1.9, "neuron", "rmsprop"),
    (2.0, "elliptical", "nadam"),
]


def make_optimizer(alpha, noise, inner, **kwargs):
    if inner is None:
        return kht.HeavyTailSGD(alpha=alpha, noise=noise, **kwargs)
    lr = kwargs.pop("learning_rate", 0.01)
    inner_opt = keras.optimizers.get({"class_name": inner, "config": {}})
    inner_opt.learning_rate = lr
    return kht.HeavyTailNoise(inner_opt, alpha=alpha, noise=noise, **kwargs)


def increments(optimizer, shape, steps):
    """Weight changes of `steps` zero-gradient steps on a zero variable."""
    var = keras.Variable(np.zeros(shape, "float32"))
    optimizer.build([var])
    out = []
    for _ in range(steps):
        var.assign(np.zeros(shape, "float32"))
        optimizer.apply([keras.ops.zeros(shape)], [var])
        out.append(np.asarray(var))
    return np.stack(out)


@pytest.mark.parametrize("alpha,noise,inner", CASES)
def test_zero_gradient_increments_are_sas(alpha, noise, inner):
    lr, sigma = 0.05, 0.01
    opt = make_optimizer(alpha, noise, inner, learning_rate=lr, sigma=sigma, seed=3)
    # Row 0 across 1000 units and 20 steps: 20000 independent draws for
    # every structure (entries of one unit are dependent for the others).
    steps = increments(opt, (4, 1000), steps=20)
    # The default sigma_scale="fan_in" divides sigma by sqrt(4).
    xi = steps[:, 0, :] / (sigma / 2 * lr ** (1 / alpha))
    ks_ok(xi, stats.levy_stable(alpha, 0.0).cdf)
    if noise == "neuron":
        np.testing.assert_array_equal(steps, np.broadcast_to(steps[:, :1], steps.shape))


@pytest.mark.parametrize("shape", [(784, 8), (3, 3, 16, 4), (3, 3, 8, 1)])
@pytest.mark.parametrize("inner", [None, "adam"])
def test_fan_in_scale_divides_the_paper_noise_by_sqrt_fan_in(shape, inner):
    # Same seed, same draws: only the factor 1/sqrt(prod(shape[:-1])) differs.
    def run(scale):
        opt = make_optimizer(1.75, "entry", inner, sigma=0.01, seed=5, sigma_scale=scale)
        return increments(opt, shape, steps=2)

    absolute, relative = run("absolute"), run("fan_in")
    assert np.all(absolute != 0)
    np.testing.assert_allclose(
        relative, absolute / np.sqrt(np.prod(shape[:-1])), rtol=1e-5
    )


@pytest.mark.parametrize("inner", [None, "adam"])
def test_the_defaults_add_the_documented_noise(inner):
    # A default that silently turned the noise off (or changed its scale)
    # would pass every sigma-given test: here nothing but the seed is given.
    lr = 0.05
    opt = make_optimizer(defaults.ALPHA, defaults.NOISE, inner, learning_rate=lr, seed=1)
    steps = increments(opt, (16, 1000), steps=20)
    scale = defaults.SIGMA / np.sqrt(16) * lr ** (1 / defaults.ALPHA)
    ks_ok(steps[:, 0, :] / scale, stats.levy_stable(defaults.ALPHA, 0.0).cdf)


def test_paper_presets_refuse_to_change_the_papers_values():
    with pytest.raises(ValueError, match="fixes alpha, noise, sigma, sigma_scale.*sigma=0.1"):
        kht.HeavyTailSGD.paper(0.05, sigma=0.1)
    with pytest.raises(ValueError, match="sigma_scale='fan_in'"):
        kht.HeavyTailNoise.paper(keras.optimizers.Adam(), sigma_scale="fan_in")


def test_paper_presets_use_the_papers_absolute_noise():
    for opt in (
        kht.HeavyTailSGD.paper(seed=0),
        kht.HeavyTailNoise.paper(keras.optimizers.Adam(), seed=0),
    ):
        config = opt.get_config()
        assert (config["alpha"], config["sigma"], config["noise"]) == (1.75, 0.003, "neuron")
        assert config["sigma_scale"] == "absolute"
    assert kht.HeavyTailSGD().sigma_scale == "fan_in"


def test_noise_differs_between_steps_and_variables():
    opt = kht.HeavyTailSGD(learning_rate=0.1, sigma=0.1, seed=0, noise="entry")
    a, b = keras.Variable(np.zeros((3, 4))), keras.Variable(np.zeros((3, 4)))
    opt.build([a, b])
    zeros = [keras.ops.zeros((3, 4))] * 2
    opt.apply(zeros, [a, b])
    first_a, first_b = np.asarray(a), np.asarray(b)
    opt.apply(zeros, [a, b])
    assert not np.allclose(first_a, first_b)
    assert not np.allclose(np.asarray(a) - first_a, first_a)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True},
        {"weight_decay": 0.01},
    ],
)
def test_sigma_zero_is_exactly_sgd(kwargs):
    x, y = tiny_data()
    weights = []
    for opt in [
        kht.HeavyTailSGD(learning_rate=0.1, sigma=0.0, seed=1, **kwargs),
        keras.optimizers.SGD(learning_rate=0.1, **kwargs),
    ]:
        model = tiny_mlp()
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for noisy, plain in zip(*weights):
        np.testing.assert_array_equal(noisy, plain)


@pytest.mark.parametrize(
    "kwargs", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}]
)
@pytest.mark.parametrize("noise", ["entry", "neuron"])
def test_noisy_step_is_the_sgd_step_plus_the_noise(kwargs, noise):
    # HeavyTailSGD folds the noise into SGD's write: after two steps with
    # real gradients, it must equal SGD's weights plus the noise alone.
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(6, 5)).astype("float32") for _ in range(2)]

    def run(opt, use_grads=True):
        var = keras.Variable(np.ones((6, 5), "float32"))
        opt.build([var])
        for g in grads:
            opt.apply([g if use_grads else np.zeros_like(g)], [var])
        return np.asarray(var)

    noisy = run(kht.HeavyTailSGD(0.1, sigma=0.2, seed=3, noise=noise, **kwargs))
    plain = run(keras.optimizers.SGD(0.1, **kwargs))
    noise_only = run(
        kht.HeavyTailSGD(0.1, sigma=0.2, seed=3, noise=noise, **kwargs), False
    )
    np.testing.assert_allclose(noisy - plain, noise_only - 1.0, atol=1e-5)


def test_sigma_zero_wrapper_is_exactly_inner_optimizer():
    x, y = tiny_data()
    weights = []
    for opt in [
        kht.HeavyTailNoise(keras.optimizers.Adam(1e-2), sigma=0.0, seed=1),
        keras.optimizers.Adam(1e-2),
    ]:
        model = tiny_mlp()
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for noisy, plain in zip(*weights):
        np.testing.assert_array_equal(noisy, plain)


@pytest.mark.parametrize("alpha,noise,inner", CASES)
def test_biases_and_excluded_variables_are_never_perturbed(alpha, noise, inner):
    model = tiny_mlp()
    opt = make_optimizer(alpha, noise, inner, sigma=1.0, seed=0)
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    opt.exclude_from_noise(var_list=[out.kernel], var_names=["nothing_matches"])
    variables = model.trainable_variables
    before = [np.asarray(v) for v in variables]
    opt.build(variables)
    opt.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    after = dict(zip([v.path for v in variables], [np.asarray(v) for v in variables]))
    old = dict(zip([v.path for v in variables], before))
    assert not np.allclose(after[hidden.kernel.path], old[hidden.kernel.path])
    for v in (hidden.bias, out.kernel, out.bias):
        np.testing.assert_array_equal(after[v.path], old[v.path])


def test_exclude_by_name_and_paper_exclusions():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.Conv2D(4, 3, name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, name="fc"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    excluded = kht.paper_exclusions(model)
    assert {v.path.split("/", 1)[1] for v in excluded} == {
        "conv1/kernel",
        "conv1/bias",
        "logits/kernel",
        "logits/bias",
    }
    opt = kht.HeavyTailSGD(sigma=1.0, seed=0)
    opt.exclude_from_noise(excluded, var_names=["fc/"])
    opt.set_noise_units(model)  # a custom loop's step: the optimizer is told its model
    variables = model.trainable_variables
    before = [np.asarray(v) for v in variables]
    opt.build(variables)
    opt.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    changed = {
        v.path
        for v, b in zip(variables, before)
        if not np.array_equal(np.asarray(v), b)
    }
    assert {path.split("/", 1)[1] for path in changed} == {"conv2/kernel"}


def test_exclude_after_build_raises():
    opt = kht.HeavyTailSGD()
    opt.build([keras.Variable(np.zeros((2, 2)))])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        opt.exclude_from_noise(var_names=["x"])


def test_same_seed_same_trajectory_other_seed_other():
    x, y = tiny_data()
    runs = []
    for seed in (5, 5, 6):
        model = tiny_mlp()
        model.compile(
            optimizer=kht.HeavyTailSGD(0.1, sigma=0.05, seed=seed), loss="mse"
        )
        model.fit(
            x,
            keras.ops.one_hot(y, 3),
            epochs=1,
            batch_size=16,
            verbose=0,
            shuffle=False,
        )
        runs.append(model.get_weights()[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


@pytest.mark.parametrize("alpha,noise,inner", CASES)
def test_save_reload_mid_training_continues_the_same_noise(
    alpha, noise, inner, tmp_path
):
    x, y = tiny_data()
    y = keras.ops.one_hot(y, 3)

    def fit(model, epochs):
        model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=False)

    straight = tiny_mlp()
    straight.compile(
        optimizer=make_optimizer(alpha, noise, inner, sigma=0.05, seed=2), loss="mse"
    )
    fit(straight, 4)

    first = tiny_mlp()
    first.compile(
        optimizer=make_optimizer(alpha, noise, inner, sigma=0.05, seed=2), loss="mse"
    )
    fit(first, 2)
    path = os.path.join(tmp_path, "mid.keras")
    first.save(path)
    resumed = keras.models.load_model(path)
    assert int(resumed.optimizer.iterations) == 8
    fit(resumed, 2)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_jit_compile_is_reproducible_and_exact_at_sigma_zero():
    # XLA draws a different (equally valid) Philox stream than the TF kernels,
    # so jit runs are compared with jit runs; sigma=0 matches SGD up to XLA's
    # float reassociation.
    x, y = tiny_data()

    def fit(opt):
        model = tiny_mlp()
        model.compile(
            optimizer=opt, loss="sparse_categorical_crossentropy", jit_compile=True
        )
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
        return model.get_weights()

    noisy = [
        fit(kht.HeavyTailSGD(0.1, sigma=0.05, seed=4, noise=n))
        for n in ("entry", "entry")
    ]
    for a, b in zip(*noisy):
        np.testing.assert_array_equal(a, b)
    quiet = fit(kht.HeavyTailSGD(0.1, sigma=0.0, seed=4))
    plain = fit(keras.optimizers.SGD(0.1))
    for a, b in zip(quiet, plain):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(noisy[0][0], plain[0])


def test_noise_scales_with_the_scheduled_learning_rate():
    # Same seed, same step: lr_rescaling=True gives lr_t**(1/alpha) times the
    # noise of lr_rescaling=False, with lr_t read from the schedule.
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.5, decay_steps=1, decay_rate=0.5
    )
    alpha = 1.5
    with_lr = increments(
        kht.HeavyTailSGD(schedule, alpha=alpha, seed=1), (3, 5), steps=3
    )
    without = increments(
        kht.HeavyTailSGD(schedule, alpha=alpha, seed=1, lr_rescaling=False),
        (3, 5),
        steps=3,
    )
    for step in range(3):
        lr = 0.5 * 0.5**step
        np.testing.assert_allclose(
            with_lr[step], without[step] * lr ** (1 / alpha), rtol=1e-5
        )


def test_sigma_schedule_anneals_the_noise():
    sigma = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.0])
    steps = increments(kht.HeavyTailSGD(0.1, sigma=sigma, seed=0), (3, 4), steps=4)
    assert np.abs(steps[:2]).min() > 0
    np.testing.assert_array_equal(steps[2:], 0.0)
    constant = increments(kht.HeavyTailSGD(0.1, sigma=0.1, seed=0), (3, 4), steps=1)
    np.testing.assert_array_equal(steps[0], constant[0])


def test_wrapper_delegates_learning_rate_iterations_and_variables():
    inner = keras.optimizers.Adam(learning_rate=0.02)
    opt = kht.HeavyTailNoise(inner, seed=0)
    var = keras.Variable(np.zeros((2, 3)))
    opt.build([var])
    assert float(opt.learning_rate) == pytest.approx(0.02)
    opt.learning_rate = 0.03
    assert float(inner.learning_rate) == pytest.approx(0.03)
    opt.apply([keras.ops.ones((2, 3))], [var])
    assert opt.iterations is inner.iterations and int(opt.iterations) == 1
    assert all(any(v is w for w in opt.variables) for v in inner.variables)


def test_mixed_precision_under_loss_scale_optimizer(mixed_precision):
    # Against the same run at sigma=0: the noise must reach the float32
    # master weights under the loss-scale wrapper (it fails if it is lost).
    x, y = tiny_data()
    kernels = {}
    for sigma in (0.0, 0.05):
        model = tiny_mlp()
        opt = keras.optimizers.LossScaleOptimizer(
            kht.HeavyTailSGD(0.05, sigma=sigma, seed=1)
        )
        model.compile(
            optimizer=opt,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
        assert model.get_layer("hidden").kernel.dtype == "float32"
        kernels[sigma] = model.get_layer("hidden").kernel.numpy()
    assert np.isfinite(kernels[0.05]).all()
    # Neuron noise moves every unit: the largest change is far above float error.
    assert np.abs(kernels[0.05] - kernels[0.0]).max() > 1e-3


def test_float16_draws_stay_finite():
    # A heavy-tailed draw above float16's largest value (65504) would be inf
    # after the cast; draws are clipped to the dtype's range instead.
    x = kht.optimizers.symmetric_stable((100_000,), 1.1, scale=1e3, seed=0, dtype="float16")
    x = np.asarray(x, dtype="float32")
    assert np.isfinite(x).all() and np.abs(x).max() == 65504.0


@pytest.mark.parametrize("alpha,noise,inner", CASES)
def test_get_config_round_trips(alpha, noise, inner, tmp_path):
    opt = make_optimizer(alpha, noise, inner, sigma=0.02, seed=9, lr_rescaling=False)
    assert opt.alpha == alpha and opt.noise == noise and opt.seed == 9
    assert opt.sigma == 0.02 and opt.lr_rescaling is False
    assert_round_trips(opt, tmp_path)


def test_schedules_round_trip(tmp_path):
    sigma = keras.optimizers.schedules.PolynomialDecay(0.01, 100, 0.0)
    lr = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    assert_round_trips(
        kht.HeavyTailSGD(lr, momentum=0.9, nesterov=True, sigma=sigma, seed=1), tmp_path
    )


def test_out_of_range_seeds_are_refused_not_wrapped():
    # One rule for the API and the CLI: int seeds in [0, 2**31 - 1).
    for seed in (2**31 - 1, 2**70, -1):
        with pytest.raises(ValueError, match=f"Received: seed={seed}"):
            kht.HeavyTailSGD(seed=seed)
        with pytest.raises(ValueError, match=f"Received: seed={seed}"):
            kht.optimizers.symmetric_stable((3,), 1.5, seed=seed)
    # The largest valid seed differs from seed 0 (no reduction modulo 2**31 - 1).
    top = increments(kht.HeavyTailSGD(0.1, sigma=0.1, seed=2**31 - 2), (3, 4), 1)
    zero = increments(kht.HeavyTailSGD(0.1, sigma=0.1, seed=0), (3, 4), 1)
    assert not np.allclose(top, zero)


def test_exclusions_are_saved_so_resume_is_exact(tmp_path):
    # paper_exclusions keeps the output layer noise-free; after save and
    # reload it must stay so, or 1 + 1 epochs would differ from 2.
    x, y = tiny_data()

    def fresh():
        model = tiny_mlp()
        opt = kht.HeavyTailSGD(0.05, sigma=0.2, noise="entry", seed=4)
        opt.exclude_from_noise(kht.paper_exclusions(model))
        model.compile(optimizer=opt, loss="mse")
        return model

    def fit(model, epochs):
        model.fit(x, keras.ops.one_hot(y, 3), epochs=epochs, batch_size=16,
                  verbose=0, shuffle=False)  # fmt: skip

    straight = fresh()
    fit(straight, 2)
    first = fresh()
    fit(first, 1)
    path = os.path.join(tmp_path, "mid.keras")
    first.save(path)
    resumed = keras.models.load_model(path)
    assert resumed.optimizer.noise_exclusions == first.optimizer.noise_exclusions
    assert "(^|/)out/kernel$" in resumed.optimizer.noise_exclusions
    fit(resumed, 1)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _as_saved_by_release_0_3(path):
    """Rewrites a `.keras` file's config as keras-heavytail 0.3 wrote it: no `sigma_scale`."""

    def drop(node):
        if isinstance(node, dict):
            return {k: drop(v) for k, v in node.items() if k != "sigma_scale"}
        if isinstance(node, list):
            return [drop(v) for v in node]
        return node

    with zipfile.ZipFile(path) as old:
        members = {name: old.read(name) for name in old.namelist()}
    config = json.loads(members["config.json"])
    assert "sigma_scale" in json.dumps(config)
    members["config.json"] = json.dumps(drop(config)).encode()
    with zipfile.ZipFile(path, "w") as new:
        for name, data in members.items():
            new.writestr(name, data)


def test_files_from_before_sigma_scale_resume_with_the_absolute_scale(tmp_path):
    # A 0.3 file was trained with the absolute scale; loading it with today's
    # default (fan_in) would shrink its noise and change the trajectory.
    x, y = tiny_data()

    def fresh():
        model = tiny_mlp()
        opt = kht.HeavyTailSGD(0.05, sigma=0.05, seed=4, sigma_scale="absolute")
        model.compile(optimizer=opt, loss="mse")
        return model

    def fit(model, epochs):
        model.fit(x, keras.ops.one_hot(y, 3), epochs=epochs, batch_size=16,
                  verbose=0, shuffle=False)  # fmt: skip

    straight = fresh()
    fit(straight, 2)
    first = fresh()
    fit(first, 1)
    path = os.path.join(tmp_path, "old.keras")
    first.save(path)
    _as_saved_by_release_0_3(path)
    resumed = keras.models.load_model(path)
    assert resumed.optimizer.sigma_scale == "absolute"
    fit(resumed, 1)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_seed_none_is_drawn_and_kept():
    opt = kht.HeavyTailSGD()
    assert isinstance(opt.seed, int)
    assert kht.HeavyTailSGD.from_config(opt.get_config()).seed == opt.seed


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": 2.5}, "Received: alpha=2.5"),
        ({"alpha": 0}, "Received: alpha=0"),
        ({"sigma": -0.1}, "Received: sigma=-0.1"),
        ({"sigma": float("nan")}, "Received: sigma=nan"),
        ({"sigma": float("inf")}, "Received: sigma=inf"),
        ({"noise_exclusions": ["(unclosed"]}, "Received: '\\(unclosed'"),
        ({"noise": "row"}, "Received: noise='row'"),
        ({"seed": 1.5}, "Received: seed=1.5"),
        ({"seed": "1"}, "Received: seed='1'"),
        ({"lr_rescaling": "yes"}, "Received: lr_rescaling='yes'"),
    ],
)
def test_invalid_arguments_repeat_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kht.HeavyTailSGD(**kwargs)
    with pytest.raises(ValueError, match=message):
        kht.HeavyTailNoise(keras.optimizers.Adam(), **kwargs)


def test_wrapper_rejects_non_keras3_optimizer():
    with pytest.raises(ValueError, match="Received: inner_optimizer='adam'"):
        kht.HeavyTailNoise("adam")


MIRRORED = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, keras_heavytail as kht
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = np.arange(64) % 3
    def train(opt_fn, sigma):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
                                      keras.layers.Dense(3)])
            model.compile(optimizer=opt_fn(sigma),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
        replicas = [v.numpy() for v in model.layers[0].kernel.value.values]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])
        return replicas[0]
    for opt_fn in (lambda s: kht.HeavyTailSGD(0.1, sigma=s, seed=1, noise="entry"),
                   lambda s: kht.HeavyTailNoise(keras.optimizers.Adam(1e-2), sigma=s, seed=1)):
        # Identical replicas, and different from the noise-free run: the
        # noise was drawn, and drawn the same on both replicas.
        assert np.abs(train(opt_fn, 0.05) - train(opt_fn, 0.0)).max() > 1e-3
    print("replicas identical")
    """
)


def test_mirrored_replicas_draw_identical_noise():
    result = run_python(MIRRORED, timeout=HANG_GUARD_S, warm=True)
    assert "replicas identical" in result.stdout


def test_paper_exclusions_on_a_functional_model_exclude_only_those_layers():
    # Functional paths have no model name (`conv1/kernel`): an exclusion must
    # not shrink to `kernel` and switch the noise off everywhere.
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    opt = kht.HeavyTailSGD(sigma=1.0, seed=0)
    opt.exclude_from_noise(kht.paper_exclusions(model))
    noisy = {v.path for v in model.trainable_variables if opt.gets_noise(v)}
    assert noisy == {model.get_layer("conv2").kernel.path}


def test_heavy_tail_noise_wraps_an_inner_optimizer_and_reads_0_2_configs():
    inner = keras.optimizers.Adam(1e-3)
    wrapper = kht.HeavyTailNoise(inner, seed=3)
    assert wrapper.inner_optimizer is inner
    config = wrapper.get_config()
    assert "inner_optimizer" in config and "optimizer" not in config
    old = dict(config)
    old["optimizer"] = old.pop("inner_optimizer")  # a release 0.2 .keras file
    assert kht.HeavyTailNoise.from_config(old).get_config() == config
    with pytest.warns(DeprecationWarning, match="inner_optimizer"):
        again = kht.HeavyTailNoise(optimizer=inner, seed=3)
    assert again.inner_optimizer is inner and again.get_config() == config


def test_paper_exclusions_on_keras_applications_name_the_stem_and_the_classifier():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )
    excluded = [v.path for v in kht.paper_exclusions(model)]
    assert excluded == ["Conv1/kernel", "predictions/kernel", "predictions/bias"]


def test_the_wrapper_around_sgd_draws_what_heavy_tail_sgd_draws_at_each_step():
    # Both draw the noise of iteration k at step k (on TensorFlow the wrapper
    # once read the counter after the inner step had incremented it).
    x = np.random.default_rng(0).normal(size=(12, 5)).astype("float32")
    y = np.arange(12) % 3
    weights = []
    for make in (lambda: kht.HeavyTailSGD(0.1, sigma=0.5, seed=4),
                 lambda: kht.HeavyTailNoise(keras.optimizers.SGD(0.1), sigma=0.5, seed=4)):  # fmt: skip
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="out")])
        model.compile(make(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        weights.append(model.get_layer("out").kernel.numpy())
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_the_wrapper_refuses_to_wrap_a_loss_scale_optimizer():
    inner = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match=r"LossScaleOptimizer\(HeavyTailNoise\(inner\)\)"):
        kht.HeavyTailNoise(inner)


@pytest.mark.parametrize(
    "make, how",
    [
        (lambda sigma, model: kht.HeavyTailSGD(0.01, sigma=sigma, seed=1), "fit"),
        (lambda sigma, model: kht.HeavyTailNoise(
            keras.optimizers.Adam(0.01), sigma=sigma, seed=1), "fit"),
        (lambda sigma, model: keras.optimizers.LossScaleOptimizer(
            kht.HeavyTailSGD(0.01, sigma=sigma, seed=1)), "fit"),
    ],
    ids=["HeavyTailSGD", "HeavyTailNoise", "LossScaleOptimizer"],
)  # fmt: skip
def test_neuron_noise_is_shared_per_output_unit_of_every_kernel_layout(make, how):
    # fit builds the optimizer: it reads the units of
    # Conv2DTranspose (axis -2), DepthwiseConv2D and SeparableConv's depthwise
    # kernel (channels) from the model. Sharing along the last axis fails here.
    assert unit_noise_spread(make, how) == UNIT_SPREAD


def test_a_custom_loop_names_the_model_with_set_noise_units():
    def told(sigma, model):
        optimizer = kht.HeavyTailSGD(0.01, sigma=sigma, seed=1)
        optimizer.set_noise_units(model)
        return optimizer

    assert unit_noise_spread(told, how="loop") == UNIT_SPREAD

    def told_inside(sigma, model):  # mixed precision's wrapper: tell the inner one
        wrapped = keras.optimizers.LossScaleOptimizer(
            kht.HeavyTailSGD(0.01, sigma=sigma, seed=1)
        )
        wrapped.inner_optimizer.set_noise_units(model)
        return wrapped

    assert unit_noise_spread(told_inside, how="loop") == UNIT_SPREAD
    # Untold, a custom loop's optimizer takes every kernel's last axis, and says so.
    with pytest.warns(UserWarning, match=r"built without its model .*set_noise_units\(model\)"):
        untold = unit_noise_spread(
            lambda sigma, model: kht.HeavyTailSGD(0.01, sigma=sigma, seed=1), how="loop"
        )
    assert untold["tr/kernel"] == (3,) and untold["dw/kernel"] == ()


@pytest.mark.parametrize(
    "bad, message",
    [(None, "Received: model=None"), ("model", "Received: model='model'"),
     (3, "Received: model=3"),
     (keras.Sequential([keras.layers.Dense(2)]), "has no weights yet")],
    ids=["None", "a string", "a number", "an unbuilt model"],
)  # fmt: skip
def test_set_noise_units_refuses_what_is_not_a_built_model(bad, message):
    with pytest.raises(ValueError, match=message):
        kht.HeavyTailSGD(0.01, seed=0).set_noise_units(bad)


def test_noise_units_of_subclassed_wrapped_and_inner_layers():
    # A subclass of Conv2DTranspose, one inside TimeDistributed and a
    # DepthwiseConv2D inside a custom layer keep their units' axes.
    class MyUp(keras.layers.Conv2DTranspose):
        pass

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dw = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")

        def call(self, x):
            return self.dw(x)

    inputs = keras.Input((2, 6, 6, 3))
    h = keras.layers.TimeDistributed(keras.layers.Conv2DTranspose(4, 3, name="td"))(inputs)
    h = keras.layers.Reshape((16, 8, 4))(h)
    h = Block()(MyUp(5, 3, name="up")(h))
    model = keras.Model(inputs, h)
    axes = {v.path.split("/")[-2]: a for v in model.weights
            for i, a in kht.ModelGraph(model).unit_axes().items() if id(v) == i}  # fmt: skip
    assert axes == {"td": (-2,), "up": (-2,), "dw": (-2, -1)}


def test_a_gan_style_train_step_finds_its_model():
    class TwoOptimizers(keras.Model):
        def compile(self, g_optimizer, **kwargs):
            super().compile(**kwargs)
            self.g_optimizer = g_optimizer

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((self(x) - y) ** 2)
            grads = tape.gradient(loss, self.trainable_variables)
            self.g_optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    kernels = []
    for sigma in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 3))
        h = keras.layers.Conv2DTranspose(4, 3, name="tr")(inputs)
        model = TwoOptimizers(inputs, keras.layers.GlobalAveragePooling2D()(h))
        model.compile(g_optimizer=kht.HeavyTailSGD(0.01, sigma=sigma, seed=1), optimizer="sgd")
        x = np.ones((4, 6, 6, 3), "float32")
        model.fit(x, np.zeros((4, 4), "float32"), epochs=1, verbose=0)  # no warning
        kernels.append(model.get_layer("tr").kernel.numpy())
    noise = kernels[1] - kernels[0]
    assert [np.ptp(noise, axis=a).max() > 1e-7 for a in range(4)] == [False, False, True, False]


def test_set_noise_units_after_the_first_step_is_refused():
    model = tiny_mlp()
    optimizer = kht.HeavyTailSGD(0.01, seed=0)
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.set_noise_units(model)
