"""Helpers shared by the tests (imported as `from helpers import ...`).

`assert_round_trips` is the one helper every public Keras object goes
through: config, JSON and (for optimizers) a `.keras` file. `run_python` is
the one way tests start processes.
"""

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

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


def run_python(
    code=None, args=(), env=None, timeout=HANG_GUARD_S, cwd=None, check=True, warm=False
):
    """Runs Python in a fresh process (a script's code, or `args` after `python`).

    The one way tests start processes: TensorFlow's C++ logs off, the
    backend TensorFlow unless `env` says otherwise (a `None` value unsets), `helpers` importable,
    output captured. With `check`, a non-zero exit fails the test with the
    end of stderr.

    With `warm`, a TensorFlow-backend run is a child forked from a process
    that has already imported TensorFlow and Keras (`_Zygote`): the same
    program, arguments, environment and working folder, minus the seconds of
    that import. With `TF_USE_LEGACY_KERAS=1` in `env`, the zygote imported
    tf_keras and tfmot instead of Keras 3. Runs on another backend start cold;
    so does every test that checks what a fresh start imports.
    """
    full_env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    full_env.pop("TF_USE_LEGACY_KERAS", None)
    # The child can `from helpers import ...` too.
    here = os.path.dirname(os.path.abspath(__file__))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset
    argv = [*(["-c", code] if code is not None else []), *map(str, args)]
    if warm and _Zygote.fits(full_env, argv):
        result = _Zygote.run(argv, full_env, cwd, timeout)
    else:
        result = subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd,
        )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


# What a zygote runs: import TensorFlow and Keras once (no op runs, so no
# thread pool exists yet), then fork one child per request. The child takes
# the request's folder, environment, sys.path, argv and output files, runs the
# code or script as `__main__`, and exits through the normal interpreter exit.
ZYGOTE = r"""
import importlib, json, os, runpy, sys, traceback
for name in sys.argv[1:]:
    importlib.import_module(name)
base_path = [p for p in sys.path[1:] if p not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid:
        print(json.dumps({"pid": pid}), flush=True)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}),
              flush=True)
        continue
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
    sys.stdin = sys.__stdin__ = open(0, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    first = "" if argv[0] == "-c" else os.path.dirname(os.path.abspath(argv[0]))
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [first, *extra, *base_path]
    sys.argv = argv[1:] if argv[0] == "-c" else argv
    if argv[0] == "-c":
        sys.argv[0] = "-c"
    code = 0
    try:
        if argv[0] == "-c":
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit:
        code = exit.code
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.exit(code)
"""


class _Zygote:
    """A Python that imported TensorFlow and Keras, forking a child per run.

    Each costs one import; a pool keeps idle ones for the next run (two runs
    at once take two). They end when the test process does.
    """

    # Environment variables read while TensorFlow and Keras import: a run
    # that sets them differently starts cold.
    IMPORT_TIME = ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL",
                   "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES", "KERAS_HOME")  # fmt: skip
    idle = {}  # idle zygotes by the value of TF_USE_LEGACY_KERAS
    lock = threading.Lock()

    @classmethod
    def fits(cls, env, argv):
        ours = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
        ours["TF_USE_LEGACY_KERAS"] = env.get("TF_USE_LEGACY_KERAS")
        if ours["TF_USE_LEGACY_KERAS"] not in (None, "1"):
            return False
        same = all(env.get(k) == ours.get(k) for k in cls.IMPORT_TIME)
        return same and bool(argv) and argv[0] != "-m" and not argv[0].startswith("-X")

    @classmethod
    def run(cls, argv, env, cwd, timeout):
        kind = env.get("TF_USE_LEGACY_KERAS")
        with cls.lock:
            zygote = cls.idle.get(kind, []).pop() if cls.idle.get(kind) else None
        zygote = zygote or cls(env)
        try:
            result = zygote.call(argv, env, cwd, timeout)
        except BaseException:
            zygote.process.kill()  # its state is unknown now: never reused
            raise
        with cls.lock:
            cls.idle.setdefault(kind, []).append(zygote)
        return result

    def __init__(self, env):
        zygote_env = dict(env)
        zygote_env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
        legacy = env.get("TF_USE_LEGACY_KERAS") == "1"
        preload = ["numpy", "tensorflow"]
        preload += ["tf_keras", "tensorflow_model_optimization"] if legacy else ["keras"]
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=zygote_env,
        )
        assert self.process.stdout.readline() == "ready\n", "the zygote did not start"
        atexit.register(self.process.kill)

    def call(self, argv, env, cwd, timeout):
        with tempfile.TemporaryDirectory() as folder:
            out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
            for path in (out, err):
                open(path, "w").close()
            request = {"argv": argv, "env": env, "cwd": os.fspath(cwd or os.getcwd()),
                       "stdout": out, "stderr": err}  # fmt: skip
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = json.loads(self.process.stdout.readline() or '{"pid": null}')["pid"]
            if pid is None:
                raise RuntimeError("the zygote ended: run this test with warm=False to see why")
            fired = threading.Event()

            def kill():
                fired.set()
                os.kill(pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                returncode = json.loads(self.process.stdout.readline())["returncode"]
            finally:
                timer.cancel()
            with open(out) as o, open(err) as e:
                stdout, stderr = o.read(), e.read()
        if fired.is_set():
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
        return subprocess.CompletedProcess([sys.executable, *argv], returncode, stdout, stderr)


# TensorFlow's and absl's C++ log lines, Keras' export chatter, tf.function's
# retracing warnings: none belongs in what an example shows its reader.
NOISE = re.compile(
    r"^[IWEF]\d{4} |absl::|oneDNN custom operations|cuda drivers|cuInit|"
    r"Saved artifact at|TensorSpec\(|triggered tf\.function retracing",
    re.MULTILINE,
)


def unit_noise_spread(make_optimizer, how="fit"):
    """`{variable path: axes along which the noise varies}` after one step.

    A model with a Conv2DTranspose, a DepthwiseConv2D, a SeparableConv2D and
    a Dense layer, and `make_optimizer(sigma, model)`:
    - `"fit"`: one `fit` step at sigma 1 and one at sigma 0 from the same
      start; the difference is the noise.
    - `"evaluate"`: on JAX and PyTorch `evaluate` builds the compiled
      optimizer (which finds its model there), then one `apply` of zero
      gradients: the step is the noise alone (no train step compiled).
    - `"loop"`: a custom loop's `apply` of zero gradients; the optimizer
      does not see the model unless `make_optimizer` tells it.
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((8, 6, 6, 3)).astype("float32")
    y = rng.random((8, 2)).astype("float32")
    weights = {}
    for sigma in (0.0, 1.0) if how == "fit" else (1.0,):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 3))
        h = keras.layers.Conv2DTranspose(4, 3, name="tr")(inputs)
        h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
        h = keras.layers.SeparableConv2D(5, 3, name="sep")(h)
        outputs = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h))
        model = keras.Model(inputs, outputs)
        start = {v.path: np.asarray(v) for v in model.trainable_variables}
        optimizer = make_optimizer(sigma, model)
        if how == "fit":
            model.compile(optimizer=optimizer, loss="mse")
            model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
            weights[sigma] = {v.path: np.asarray(v) for v in model.trainable_variables}
            continue
        if how == "evaluate":
            model.compile(optimizer=optimizer, loss="mse")
            model.evaluate(x, y, verbose=0)
        zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
        optimizer.apply(zeros, model.trainable_variables)
        weights = {0.0: start, 1.0: {v.path: np.asarray(v) for v in model.trainable_variables}}
    spread = {}
    for path, after in weights[1.0].items():
        noise = after - weights[0.0][path]
        if noise.ndim >= 2:
            spread[path] = tuple(
                a for a in range(noise.ndim) if np.ptp(noise, axis=a).max() > 1e-7
            )
    return spread


# Where neuron noise varies: along each kernel's output units.
UNIT_SPREAD = {
    "tr/kernel": (2,),  # (h, w, out, in)
    "dw/kernel": (2,),  # (h, w, channels, multiplier 1)
    "sep/depthwise_kernel": (2,),
    "sep/pointwise_kernel": (3,),
    "out/kernel": (1,),
}
