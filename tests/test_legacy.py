"""The tf_keras path: LegacyHeavyTailSGD and tfmot pruning, then LiteRT.

Each test runs in a process of its own: importing tfmot sets
TF_USE_LEGACY_KERAS=1 for the whole process, which must not leak into the
Keras 3 tests. The KS tolerance is the one of `test_noise.py` (0.1% critical
value, fixed seed).
"""

import importlib.util
import textwrap

import pytest
from helpers import HANG_GUARD_S
from helpers import run_python

# find_spec, not importorskip: importing tfmot here would set
# TF_USE_LEGACY_KERAS=1 in the test process itself.
for _package in ("tf_keras", "tensorflow_model_optimization"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"the legacy path needs {_package}", allow_module_level=True)


# A tf_keras MLP on digits, as the first lines of a test's script.
DIGITS_MLP = """import numpy as np, tf_keras
from keras_heavytail import export
from keras_heavytail.experiments import datasets
from keras_heavytail import legacy
data = datasets.load_dataset("digits")
tf_keras.utils.set_random_seed(0)
model = tf_keras.Sequential([
    tf_keras.layers.Flatten(input_shape=data.input_shape),
    tf_keras.layers.Dense({width}, activation="relu"),
    tf_keras.layers.Dense(10),
])"""


def run(code, prelude=""):
    """Runs `prelude` then the dedented `code` in a process of its own, forked
    from one that imported tf_keras and tfmot (`run_python`'s `warm`)."""
    code = prelude + "\n" + textwrap.dedent(code)
    env = {"TF_USE_LEGACY_KERAS": "1"}
    return run_python(code, env=env, timeout=HANG_GUARD_S, warm=True).stdout


def test_legacy_optimizer_noise_sigma_zero_and_round_trip(tmp_path):
    out = run(
        f"""
        import math, json, numpy as np, tensorflow as tf, tf_keras
        from scipy import stats
        from keras_heavytail.legacy import LegacyHeavyTailSGD

        # Zero gradients: increments / (sigma lr^(1/alpha) / sqrt(fan_in)) are SaS(alpha, 1).
        alpha, lr, sigma = 1.5, 0.05, 0.01
        opt = LegacyHeavyTailSGD(lr, alpha=alpha, sigma=sigma, noise="entry", seed=1)
        var = tf.Variable(np.zeros((4, 5000), "float32"))
        opt.apply_gradients([(tf.zeros_like(var), var)])
        xi = var.numpy()[0] / (sigma / 2 * lr ** (1 / alpha))
        d = stats.kstest(xi, stats.levy_stable(alpha, 0.0).cdf).statistic
        assert d < 1.95 / math.sqrt(xi.size), d

        # Neuron noise is constant along the fan-in; biases never move.
        opt = LegacyHeavyTailSGD(lr, sigma=0.1, noise="neuron", seed=1)
        k, b = tf.Variable(np.zeros((3, 4), "float32")), tf.Variable(np.zeros(4, "float32"))
        opt.apply_gradients([(tf.zeros_like(k), k), (tf.zeros_like(b), b)])
        assert np.all(k.numpy() == k.numpy()[:1]) and np.any(k.numpy() != 0)
        assert np.all(b.numpy() == 0)

        # fit finds the model: a Conv2DTranspose's neuron noise varies along
        # its output filters (kernel axis -2) only.
        conv_x = np.random.default_rng(1).random((8, 6, 6, 3)).astype("float32")
        kernels = []
        for s in (0.0, 1.0):
            tf_keras.utils.set_random_seed(0)
            m = tf_keras.Sequential([tf_keras.Input((6, 6, 3)),
                                     tf_keras.layers.Conv2DTranspose(4, 3),
                                     tf_keras.layers.Flatten(), tf_keras.layers.Dense(2)])
            m.compile(optimizer=LegacyHeavyTailSGD(0.01, sigma=s, seed=1), loss="mse")
            m.fit(conv_x, conv_x[:, 0, 0, :2], epochs=1, batch_size=8, verbose=0, shuffle=False)
            kernels.append(m.layers[0].kernel.numpy())
        noise = kernels[1] - kernels[0]
        assert [np.ptp(noise, axis=a).max() > 1e-7 for a in range(4)] == [False, False, True, False]

        # sigma=0 is exactly tf_keras SGD.
        x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
        y = np.arange(64) % 3
        weights = []
        for opt in (LegacyHeavyTailSGD(0.1, momentum=0.9, sigma=0.0, seed=1),
                    tf_keras.optimizers.SGD(0.1, momentum=0.9)):
            tf_keras.utils.set_random_seed(0)
            m = tf_keras.Sequential([tf_keras.layers.Dense(16, activation="relu", input_shape=(8,)),
                                     tf_keras.layers.Dense(3)])
            m.compile(optimizer=opt, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            m.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
            weights.append(m.get_weights())
        for a, b in zip(*weights):
            np.testing.assert_array_equal(a, b)

        # Config round trip, with a tf_keras schedule as sigma, and a saved model.
        sigma = tf_keras.optimizers.schedules.PolynomialDecay(0.01, 100, 0.0)
        opt = LegacyHeavyTailSGD(0.1, alpha=1.9, sigma=sigma, noise="elliptical", seed=4)
        config = opt.get_config()
        assert LegacyHeavyTailSGD.from_config(config).get_config() == config
        m.compile(optimizer=opt, loss="mse")
        m.fit(x, tf_keras.utils.to_categorical(y, 3), epochs=1, verbose=0)
        path = {str(tmp_path / "legacy.keras")!r}
        m.save(path)
        again = tf_keras.models.load_model(path)
        assert type(again.optimizer).__name__ == "LegacyHeavyTailSGD"
        assert again.optimizer.get_config()["seed"] == 4
        print("legacy ok")
        """
    )
    assert "legacy ok" in out


def test_tfmot_pruning_then_litert_export(tmp_path):
    out = run(
        f"""
        steps = 4 * int(np.ceil(len(data.y_train) / 32))
        pruned = legacy.prune_low_magnitude(model, 0.8, end_step=steps // 2, frequency=10)
        pruned.compile(
            optimizer=legacy.LegacyHeavyTailSGD(0.05, sigma=0.005, seed=0),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        pruned.fit(data.x_train, data.y_train, epochs=4, batch_size=32, verbose=0,
                   callbacks=legacy.pruning_callbacks())
        stripped = legacy.strip_pruning(pruned)
        sparsity = legacy.kernel_sparsity(stripped)
        assert abs(sparsity - 0.8) < 0.01, sparsity
        logits = stripped.predict(data.x_test, verbose=0)
        keras_accuracy = np.mean(np.argmax(logits, -1) == data.y_test)
        report = export.export_tflite(stripped, {str(tmp_path / "t.tflite")!r})
        outputs, _ = export.predict_tflite(report.path, data.x_test)
        assert np.max(np.abs(outputs - logits)) < 1e-4
        assert report.weight_sparsity > 0.75 and keras_accuracy > 0.8
        try:
            legacy.pruning_callbacks(log_dir="logs")
        except ImportError as error:
            assert "tensorboard" in str(error)
        import keras
        try:
            legacy.prune_low_magnitude(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        except ValueError as error:
            assert "tf_keras (Keras 2) models only" in str(error)
            assert "keras_heavytail.sparsity.GradualPruning" in str(error)
        else:
            raise AssertionError("a Keras 3 model was accepted")
        print("tfmot ok", round(sparsity, 3), round(float(keras_accuracy), 3))
        """,
        prelude=DIGITS_MLP.format(width=128),
    )
    assert "tfmot ok" in out


def test_pruning_preserving_qat_with_noise_exports_a_sparse_int8_file(tmp_path):
    out = run(
        f"""
        import warnings
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        steps = int(np.ceil(len(data.y_train) / 32))  # one epoch
        pruned = legacy.prune_low_magnitude(model, 0.8, end_step=2 * steps, frequency=5)
        pruned.compile(optimizer=legacy.LegacyHeavyTailSGD(0.05, sigma=0.005, seed=0),
                       loss=loss)
        # Training stops before end_step: the callbacks say so.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruned.fit(data.x_train, data.y_train, epochs=1, batch_size=32, verbose=0,
                       callbacks=legacy.pruning_callbacks())
        assert any("before the schedule's end_step=" in str(w.message) for w in caught)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruned.fit(data.x_train, data.y_train, epochs=2, batch_size=32, verbose=0,
                       callbacks=legacy.pruning_callbacks())
        assert not any("end_step" in str(w.message) for w in caught)
        stripped = legacy.strip_pruning(pruned)
        zeros = [np.asarray(w) == 0 for w in stripped.get_weights() if np.ndim(w) == 2]
        assert all(abs(z.mean() - 0.8) < 0.01 for z in zeros)

        # Noisy PQAT: the noise moves the stored pruned weights, the int8 file
        # keeps them zero.
        qat = legacy.quantize_pruned(stripped)
        qat.compile(
            optimizer=legacy.LegacyHeavyTailSGD(0.02, sigma=0.05, noise="entry", seed=0),
            loss=loss)
        qat.fit(data.x_train, data.y_train, epochs=1, batch_size=32, verbose=0)
        stored = [w.numpy() for w in qat.weights if w.name.endswith("kernel:0")]
        assert len(stored) == 2
        assert all(np.mean(k[z] != 0) > 0.9 for k, z in zip(stored, zeros))
        report = export.export_tflite(qat, {str(tmp_path / "pqat.tflite")!r},
                                      sparse=False, quantize="int8",
                                      representative_data=data.x_train[:200])
        interpreter, _ = export.load_interpreter(report.path)
        shapes = {{z.T.shape for z in zeros}}  # int8 kernels are (units, inputs)
        kernels = []
        for detail in interpreter.get_tensor_details():
            if detail["dtype"] == np.int8 and tuple(detail["shape"]) in shapes:
                try:
                    kernels.append(interpreter.get_tensor(detail["index"]))
                except ValueError:  # an activation, not a constant
                    pass
        assert sorted(k.shape for k in kernels) == [(10, 64), (64, 64)], kernels
        for k in kernels:
            z = next(z for z in zeros if z.T.shape == k.shape)
            assert np.all(k[z.T] == 0) and np.mean(k == 0) < 0.82, np.mean(k == 0)
        metrics = export.evaluate_tflite(report.path, data.x_test, data.y_test,
                                         from_logits=True)
        assert metrics["accuracy"] > 0.7, metrics

        import keras
        keras3 = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        for helper in (legacy.quantize_pruned, legacy.strip_pruning):
            try:
                helper(keras3)
            except ValueError as error:
                assert "this is a Keras 3 model" in str(error), str(error)
                assert "keras_heavytail.sparsity.GradualPruning" in str(error)
            else:
                raise AssertionError("a Keras 3 model was accepted")
        print("pqat ok", round(float(metrics["accuracy"]), 3))
        """,
        prelude=DIGITS_MLP.format(width=64),
    )
    assert "pqat ok" in out
