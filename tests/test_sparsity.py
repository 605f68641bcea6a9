"""Pruning during training (`keras_heavytail.pruning.sparsity`) on Keras 3.

tfmot, tf_keras, JAX and MirroredStrategy checks run in their own process
(`run_python`): importing tfmot sets TF_USE_LEGACY_KERAS=1 for the process,
the backend is fixed at import, and logical devices at TensorFlow's start.
"""

import importlib.util
import textwrap

import keras
import numpy as np
import pytest
from helpers import assert_round_trips
from helpers import run_python
from helpers import tiny_data

import keras_heavytail as kht
from keras_heavytail.pruning import sparsity

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(seed=0, batch_norm=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((8,)), keras.layers.Dense(24, activation="relu", name="h1")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [
        keras.layers.Dense(16, activation="relu", name="h2"),
        keras.layers.Dense(3, name="out"),
    ]
    return keras.Sequential(layers)


def cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(10, 3, activation="relu", name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="out"),
        ]
    )


def fit(model, optimizer, callback, steps, jit_compile=False, x=None, y=None):
    """`steps` optimizer steps of batch 16 (64 samples, 4 steps an epoch)."""
    if x is None:
        x, y = tiny_data()
    model.compile(optimizer=optimizer, loss=LOSS, jit_compile=jit_compile)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=steps // 4,
        verbose=0,
        shuffle=False,
        callbacks=[callback] if callback else [],
    )
    return model


def kernel(model, name):
    return model.get_layer(name).kernel.numpy()


class Recorder(keras.callbacks.Callback):
    """Zero fraction of each kernel after every step (runs after GradualPruning)."""

    def __init__(self, names):
        super().__init__()
        self.names, self.rows = names, []

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy()) - 1
        zeros = {n: float(np.mean(kernel(self.model, n) == 0)) for n in self.names}
        self.rows.append((step, zeros))


def test_schedules_follow_tfmots_formula_here():
    schedule = sparsity.PolynomialDecay(
        0.2, 0.8, begin_step=10, end_step=50, frequency=10
    )
    assert schedule(9) == (False, pytest.approx(0.2))
    assert schedule(10) == (True, pytest.approx(0.2))
    assert schedule(11)[0] is False
    # p = 0.5: 0.8 + (0.2 - 0.8) * 0.5**3 = 0.725
    assert schedule(30) == (True, pytest.approx(0.725, abs=1e-7))
    assert schedule(50) == (True, pytest.approx(0.8))
    assert schedule(60) == (False, pytest.approx(0.8))
    constant = sparsity.ConstantSparsity(0.5, begin_step=3, frequency=4)
    assert [constant.should_prune(s) for s in range(12)] == [
        s >= 3 and (s - 3) % 4 == 0 for s in range(12)
    ]
    assert constant(10**9 + 3) == (True, 0.5)  # end_step=-1 prunes forever


@pytest.mark.slow
def test_schedules_match_tfmot_and_tf_keras_objects_are_refused():
    # find_spec, not importorskip: importing tfmot here would set
    # TF_USE_LEGACY_KERAS=1 in the test process itself.
    if importlib.util.find_spec("tensorflow_model_optimization") is None:
        pytest.skip("needs tensorflow-model-optimization")
    code = """
        import numpy as np
        import tensorflow_model_optimization as tfmot
        from keras_heavytail.pruning import sparsity

        cases = [
            ("PolynomialDecay", dict(initial_sparsity=0.0, final_sparsity=0.9,
                                     begin_step=0, end_step=100, frequency=10)),
            ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.75,
                                     begin_step=7, end_step=95, power=2, frequency=13)),
            ("PolynomialDecay", dict(initial_sparsity=0.5, final_sparsity=0.5,
                                     begin_step=20, end_step=40, power=1, frequency=1)),
            ("ConstantSparsity", dict(target_sparsity=0.6, begin_step=5,
                                      frequency=7)),
            ("ConstantSparsity", dict(target_sparsity=0.3, begin_step=0,
                                      end_step=50, frequency=25)),
        ]
        for name, kwargs in cases:
            ours = getattr(sparsity, name)(**kwargs)
            theirs = getattr(tfmot.sparsity.keras, name)(**kwargs)
            for step in range(0, 160):
                should, value = theirs(step)
                assert ours.should_prune(step) == bool(should), (name, step)
                assert ours(step)[0] == bool(should), (name, step)
                assert abs(ours.sparsity(step) - float(value)) < 1e-7, (
                    name, step, ours.sparsity(step), float(value))
        print("schedules match")

        # tf_keras objects are refused, naming their world and what to use.
        import tf_keras
        model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
        schedule = sparsity.ConstantSparsity(0.5, 0)
        for call in (lambda: sparsity.GradualPruning(schedule).set_model(model),
                     lambda: sparsity.strip_pruning(model)):
            try:
                call()
            except ValueError as error:
                message = str(error)
                assert "tf_keras (Keras 2) model" in message, message
                assert "keras_heavytail.legacy" in message, message
            else:
                raise AssertionError("a tf_keras model was accepted")
        try:
            sparsity.GradualPruning(tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
        except ValueError as error:
            assert "tfmot's schedules belong to the tf_keras world" in str(error)
        else:
            raise AssertionError("a tfmot schedule was accepted")
        print("refused")
    """
    # Forked from a process that imported tf_keras and tfmot (`warm`), as the
    # tfmot import here would set TF_USE_LEGACY_KERAS=1 anyway.
    env = {"TF_USE_LEGACY_KERAS": "1"}
    out = run_python(textwrap.dedent(code), env=env, warm=True).stdout
    assert "schedules match" in out and "refused" in out


def test_sparsity_per_layer_follows_the_schedule():
    schedule = sparsity.PolynomialDecay(
        0.1, 0.8, begin_step=2, end_step=14, frequency=3
    )
    recorder = Recorder(["h1", "h2", "out"])
    model = mlp()
    optimizer = kht.HeavyTailSGD(0.05, sigma=0.05, noise="entry", seed=0)
    model.compile(optimizer=optimizer, loss=LOSS)
    x, y = tiny_data()
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=5,
        verbose=0,
        shuffle=False,
        callbacks=[sparsity.GradualPruning(schedule), recorder],
    )
    assert [step for step, _ in recorder.rows] == list(range(20))
    for step, zeros in recorder.rows:
        pruned_at = [s for s in range(step + 1) if schedule.should_prune(s)]
        target = schedule.sparsity(pruned_at[-1]) if pruned_at else 0.0
        for name in ("h1", "h2"):
            size = kernel(model, name).size
            assert zeros[name] == round(target * size) / size, (step, name)
        assert zeros["out"] == 0.0  # the output layer is never pruned
    assert recorder.rows[-1][1]["h1"] == pytest.approx(0.8, abs=1 / 192)


# (optimizer, noise structure, pruning structure, jit_compile): one row a case.
NOISY = [
    ("HeavyTailSGD", "entry", "entry", False),
    ("HeavyTailSGD", "neuron", "neuron", False),
    ("HeavyTailSGD", "elliptical", "entry", False),
    ("HeavyTailSGD", "elliptical", "neuron", True),
    ("HeavyTailNoise", "entry", "neuron", False),
]


def make_optimizer(kind, noise, sigma):
    if kind == "HeavyTailSGD":
        return kht.HeavyTailSGD(0.05, momentum=0.9, sigma=sigma, noise=noise, seed=3)
    return kht.HeavyTailNoise(
        keras.optimizers.Adam(0.01), sigma=sigma, noise=noise, seed=3
    )


@pytest.mark.parametrize("kind,noise,structure,jit_compile", NOISY)
def test_pruned_weights_stay_exactly_zero_after_noisy_steps(
    kind, noise, structure, jit_compile
):
    # Masks are computed once, at step 0; then 16 noisy steps with momentum.
    schedule = sparsity.ConstantSparsity(0.5, begin_step=0, end_step=0, frequency=1)
    results = {}
    for sigma in (0.0, 0.5):
        model = fit(
            mlp(),
            make_optimizer(kind, noise, sigma),
            sparsity.GradualPruning(schedule, structure=structure),
            steps=16,
            jit_compile=jit_compile,
        )
        results[sigma] = {n: kernel(model, n) for n in ("h1", "h2")}
        if structure == "neuron":
            for name in ("h1", "h2"):
                dead = np.all(results[sigma][name] == 0, axis=0)
                assert dead.sum() == results[sigma][name].shape[1] // 2
                np.testing.assert_array_equal(
                    model.get_layer(name).bias.numpy()[dead], 0
                )
    for name in ("h1", "h2"):
        noisy, quiet = results[0.5][name], results[0.0][name]
        # The same weights are pruned (scored at step 0, before any noise)...
        np.testing.assert_array_equal(noisy == 0, quiet == 0)
        assert np.mean(noisy == 0) == pytest.approx(0.5, abs=0.02)
        # ...and the noise did move the live ones.
        alive = noisy != 0
        assert np.max(np.abs(noisy[alive] - quiet[alive])) > 1e-2


def test_neuron_structure_removes_whole_units_and_shrink_keeps_outputs():
    x, y = tiny_data()
    schedule = sparsity.PolynomialDecay(
        0.0, 0.75, begin_step=0, end_step=8, frequency=4
    )
    model = fit(
        mlp(batch_norm=True),
        kht.HeavyTailSGD(0.05, sigma=0.05, seed=0),
        sparsity.GradualPruning(schedule, structure="neuron", score="path"),
        steps=12,
    )
    dead = np.all(kernel(model, "h1") == 0, axis=0)
    assert dead.sum() == 18  # round(0.75 * 24)
    np.testing.assert_array_equal(model.get_layer("bn").gamma.numpy()[dead], 0)
    small = kht.shrink(sparsity.strip_pruning(model))
    assert small.get_layer("h1").kernel.shape == (8, 6)
    assert small.get_layer("h2").kernel.shape == (6, 4)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


def test_filter_structure_and_global_scope_on_a_cnn():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6, 6, 2)).astype("float32"), np.arange(64) % 3
    schedule = sparsity.ConstantSparsity(0.5, begin_step=0, end_step=4, frequency=4)
    model = fit(
        cnn(),
        kht.HeavyTailSGD(0.05, sigma=0.05, noise="neuron", seed=0),
        sparsity.GradualPruning(schedule, structure="filter", scope="global"),
        steps=8,
        x=x,
        y=y,
    )
    dead = [np.all(kernel(model, n) == 0, axis=(0, 1, 2)) for n in ("c1", "c2")]
    assert sum(int(d.sum()) for d in dead) == 9  # half of 18 filters, pooled
    small = kht.shrink(model)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


def test_save_reload_keeps_training_with_its_masks(tmp_path):
    schedule = sparsity.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=16, frequency=8
    )
    with pytest.warns(UserWarning, match="stopped at step 11"):
        model = fit(
            mlp(),
            kht.HeavyTailSGD(0.05, sigma=0.3, noise="entry", seed=0),
            sparsity.GradualPruning(schedule, structure="neuron"),
            steps=12,  # masks updated at steps 0 and 8
        )
    before = sparsity.masks_from_zeros(model, "neuron")
    assert 1 - before["h1"].mean() == pytest.approx(schedule.sparsity(8), abs=1 / 24)
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert int(again.optimizer.iterations.numpy()) == 12
    recorder = Recorder(["h1", "h2"])
    callback = sparsity.GradualPruning(schedule, structure="neuron")
    x, y = tiny_data()
    with pytest.warns(UserWarning, match="stopped at step 15"):
        again.fit(
            x,
            y,
            batch_size=16,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[callback, recorder],
        )  # steps 12 to 15: no update
    for name in ("h1", "h2"):
        np.testing.assert_array_equal(callback.masks[name], before[name])
        dead = ~before[name]
        np.testing.assert_array_equal(kernel(again, name)[:, dead], 0)
        assert np.all(np.any(kernel(again, name)[:, ~dead] != 0, axis=0))
    again.fit(
        x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[callback]
    )  # step 16: the final sparsity
    assert np.mean(np.all(kernel(again, "h1") == 0, axis=0)) == pytest.approx(
        0.8, abs=1 / 24
    )


def test_warns_when_training_stops_before_end_step():
    schedule = sparsity.PolynomialDecay(
        0.0, 0.9, begin_step=0, end_step=100, frequency=4
    )
    with pytest.warns(UserWarning, match=r"before the schedule's end_step=100"):
        fit(mlp(), keras.optimizers.SGD(0.05), sparsity.GradualPruning(schedule), 8)


def test_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match=r"in \[0, 1\).*target_sparsity=1.0"):
        sparsity.ConstantSparsity(1.0, 0)
    with pytest.raises(ValueError, match=r"final_sparsity=-0.1"):
        sparsity.PolynomialDecay(0.0, -0.1, 0, 10)
    with pytest.raises(ValueError, match=r"begin_step=10, end_step=5"):
        sparsity.PolynomialDecay(0.0, 0.5, 10, 5)
    with pytest.raises(ValueError, match=r"or -1.*begin_step=10, end_step=5"):
        sparsity.ConstantSparsity(0.5, 10, 5)
    with pytest.raises(ValueError, match=r"end_step must|`end_step` must be >= 0"):
        sparsity.PolynomialDecay(0.0, 0.5, 0, -1)
    for frequency in (0, -3):
        with pytest.raises(ValueError, match=f"frequency={frequency}"):
            sparsity.ConstantSparsity(0.5, 0, frequency=frequency)
    schedule = sparsity.ConstantSparsity(0.5, 0)
    with pytest.raises(ValueError, match=r"structure=.*'unit'"):
        sparsity.GradualPruning(schedule, structure="unit")
    with pytest.raises(ValueError, match=r"structure='entry', score='path'"):
        sparsity.GradualPruning(schedule, score="path")
    with pytest.raises(ValueError, match=r"keras_heavytail.sparsity.ConstantSparsity"):
        sparsity.GradualPruning(0.5)
    model = mlp()
    model.compile(optimizer="sgd", loss=LOSS, steps_per_execution=2)
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"steps_per_execution=2"):
        model.fit(x, y, verbose=0, callbacks=[sparsity.GradualPruning(schedule)])


def test_round_trips():
    for obj in (
        sparsity.ConstantSparsity(0.25, begin_step=3, end_step=30, frequency=5),
        sparsity.PolynomialDecay(0.1, 0.9, 2, 40, power=2, frequency=7),
        sparsity.GradualPruning(
            sparsity.PolynomialDecay(0.0, 0.5, 0, 10, frequency=2),
            structure="filter",
            scope="global",
            exclude=["h2"],
            score="path",
        ),
    ):
        assert_round_trips(obj)


@pytest.mark.slow
def test_mirrored_strategy_and_jax_keep_pruned_weights_zero():
    code = """
        import os, sys
        import numpy as np
        if os.environ["KERAS_BACKEND"] == "tensorflow":
            import tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        import keras_heavytail as kht
        from keras_heavytail.pruning import sparsity

        def build():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)),
                                      keras.layers.Dense(24, activation="relu"),
                                      keras.layers.Dense(3)])
            model.compile(kht.HeavyTailSGD(0.05, sigma=0.5, noise="entry", seed=0),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            return model

        if os.environ["KERAS_BACKEND"] == "tensorflow":
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
            assert strategy.num_replicas_in_sync == 2
            with strategy.scope():
                model = build()
        else:
            model = build()
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(64, 8)).astype("float32"), np.arange(64) % 3
        schedule = sparsity.ConstantSparsity(0.5, begin_step=0, end_step=0, frequency=1)
        model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                  callbacks=[sparsity.GradualPruning(schedule)])
        k = keras.ops.convert_to_numpy(model.layers[0].kernel)
        assert np.mean(k == 0) == 0.5, np.mean(k == 0)
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 12
        print("zeros kept on", os.environ["KERAS_BACKEND"])
    """
    for backend in ("tensorflow", "jax"):
        out = run_python(textwrap.dedent(code), env={"KERAS_BACKEND": backend}, warm=True)
        assert f"zeros kept on {backend}" in out.stdout
