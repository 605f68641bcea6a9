"""Helpers shared by the tests (imported as `from helpers import ...`).

`assert_round_trips` is the one helper every public Keras object goes
through: config, JSON and (for optimizers) a `.keras` file. `run_python` is
the one way tests start processes.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np

# A guard against a hung child process only, never a speed limit: a loaded
# 2-core machine must not reach it (CI itself stops at 90 minutes).
HANG_GUARD_S = 2400


def tiny_mlp(seed=0, inputs=8, hidden=16, outputs=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(outputs, name="out"),
        ]
    )


def tiny_data(n=64, inputs=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, inputs)).astype("float32"), np.arange(n) % classes


def assert_round_trips(obj, tmp_path=None, model_fn=tiny_mlp):
    """`get_config` -> `from_config` -> same config; JSON too; `.keras` file too.

    Every constructor argument must survive, so the configs are compared
    whole, not key by key.
    """
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(restored) is type(obj)
    assert restored.get_config() == config
    if tmp_path is not None and isinstance(obj, keras.optimizers.Optimizer):
        model = model_fn()
        model.compile(optimizer=obj, loss="mse")
        obj.build(model.trainable_variables)  # save the optimizer's variables too
        path = os.path.join(tmp_path, "round_trip.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)  # no custom_objects
        assert type(reloaded.optimizer) is type(obj)
        assert reloaded.optimizer.get_config() == config




def ks_statistic(samples, cdf, grid=2000):
    """The Kolmogorov-Smirnov distance sup |F_n - F|, with F at `grid` quantiles.

    scipy's `levy_stable.cdf` integrates numerically (~0.3 ms a point), so F
    is evaluated at `grid` sample quantiles, 1/grid apart in probability: by
    monotonicity of F_n and F, the full statistic is at most this one plus
    1/grid, a margin small against the test's bound (1.95/sqrt(n)).
    """
    x = np.sort(np.asarray(samples, dtype="float64").ravel())
    points = x[np.unique(np.linspace(0, x.size - 1, grid).round().astype(int))]
    f = cdf(points)
    after = np.searchsorted(x, points, side="right") / x.size
    before = np.searchsorted(x, points, side="left") / x.size
    return float(max(np.max(after - f), np.max(f - before)))


def ks_ok(samples, cdf):
    """Asserts the samples follow `cdf` (KS at the 0.1% level)."""
    n = np.asarray(samples).size
    statistic = ks_statistic(samples, cdf)
    assert statistic < 1.95 / np.sqrt(n), statistic


def run_python(code=None, args=(), env=None, timeout=HANG_GUARD_S, cwd=None, check=True):
    """Runs Python in a fresh process (a script's code, or `args` after `python`).

    The one way tests start processes: TensorFlow's C++ logs off, the
    backend TensorFlow unless `env` says otherwise, `helpers` importable,
    output captured. With
    `check`, a non-zero exit fails the test with the end of stderr.
    """
    full_env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    full_env.pop("TF_USE_LEGACY_KERAS", None)
    # The child can `from helpers import ...` too.
    here = os.path.dirname(os.path.abspath(__file__))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    full_env.update(env or {})
    command = [sys.executable, *(["-c", code] if code is not None else []), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result
