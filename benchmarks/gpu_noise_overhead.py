"""Cost of the noise per training step on an accelerator, JAX and TensorFlow side by side.

Milliseconds per training step of `HeavyTailSGD` (each noise structure)
against `keras.optimizers.SGD`, on the paper's one-hidden-layer MLP
(784-5000-10, batch 128 and 5000) and a small CNN (32x32x3 inputs, batch
128), with Keras 3 on each engine:

- `jax`: Keras on JAX (always XLA-compiled);
- `tensorflow`: Keras on TensorFlow with `jit_compile="auto"` (XLA on a GPU,
  plain TF kernels on a CPU);
- `tensorflow-xla`: Keras on TensorFlow with `jit_compile=True`. On a CPU,
  TensorFlow's XLA random ops are much slower than its kernels, so the noisy
  step is much slower there; see `benchmarks/RESULTS.md`.

Each engine runs in its own process (the backend is fixed at Keras' first
import). The batch is put on the device once, before timing, so no input
transfer hides the optimizer; every step is `train_on_batch`, which waits for
the step's loss. Contenders alternate within each round, medians are
reported, and the target is noise <= 5% of the step on a GPU.

    python benchmarks/gpu_noise_overhead.py                 # the full run
    python benchmarks/gpu_noise_overhead.py --tiny          # a CPU smoke run
    python benchmarks/gpu_noise_overhead.py --engines tensorflow tensorflow-xla
"""

import argparse
import json
import os
import subprocess
import sys
import time

ENGINES = {
    "jax": ("jax", "auto"),
    "tensorflow": ("tensorflow", "auto"),
    "tensorflow-xla": ("tensorflow", True),
}
OPTIMIZERS = ("SGD", "neuron", "elliptical", "entry")


def cases(tiny):
    """(name, model kind, width, batch) of each measured setting."""
    if tiny:
        return [("mlp w8 b4", "mlp", 8, 4)]  # the plumbing only: both engines, a table
    return [
        ("mlp w5000 b128", "mlp", 5000, 128),
        ("mlp w5000 b5000", "mlp", 5000, 5000),
        ("cnn b128", "cnn", 64, 128),
    ]


def device_name(backend):
    """The accelerator the backend runs on, in words."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"gpu: {details.get('device_name', gpus[0].name)}"


def build(keras, kind, width):
    if kind == "mlp":
        return keras.Sequential(
            [
                keras.Input((784,)),
                keras.layers.Dense(width, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def worker(engine, tiny, steps, rounds):
    """Times every contender on every case in this process; returns a dict."""
    backend, jit_compile = ENGINES[engine]
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    import keras_heavytail as kht

    def make(name):
        if name == "SGD":
            return keras.optimizers.SGD(0.01)
        return kht.HeavyTailSGD(0.01, noise=name, seed=0)

    results = {}
    for label, kind, width, batch in cases(tiny):
        rng = np.random.default_rng(0)
        shape = (batch, 784) if kind == "mlp" else (batch, 32, 32, 3)
        # On the device once: no input transfer inside the timed steps.
        x = keras.ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))
        y = keras.ops.convert_to_tensor(rng.integers(0, 10, size=batch))
        models = {}
        for name in OPTIMIZERS:
            keras.utils.set_random_seed(0)
            model = build(keras, kind, width)
            model.compile(
                optimizer=make(name),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit_compile,
            )
            model.train_on_batch(x, y)  # compile and warm up
            models[name] = model
        times = {name: [] for name in OPTIMIZERS}
        for _ in range(rounds):
            for name, model in models.items():
                per_step = []
                for _ in range(steps):
                    start = time.perf_counter()
                    model.train_on_batch(x, y)  # returns the loss: waits for the step
                    per_step.append(time.perf_counter() - start)
                times[name].append(float(np.median(per_step)))
        results[label] = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "engine": engine,
        "device": device_name(backend),
        "keras": keras.__version__,
        "results": results,
    }


def run_engine(engine, args):
    """Runs one engine in a fresh process; returns its dict, or an error string."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        engine,
        "--steps",
        str(args.steps),
        "--rounds",
        str(args.rounds),
    ] + (["--tiny"] if args.tiny else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=args.timeout
    )
    if result.returncode != 0:
        return f"failed: {result.stderr.strip().splitlines()[-1:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES),
                        default=["jax", "tensorflow"])  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="tiny CPU smoke run")
    parser.add_argument("--steps", type=int, default=None, help="steps per round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds")
    parser.add_argument("--timeout", type=int, default=1800, help="s per engine")
    parser.add_argument("--worker", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.tiny else 20)
    args.rounds = args.rounds or (1 if args.tiny else 5)
    if args.worker:
        print(json.dumps(worker(args.worker, args.tiny, args.steps, args.rounds)))
        return

    runs = {engine: run_engine(engine, args) for engine in args.engines}
    for engine, run in runs.items():
        if isinstance(run, str):
            print(f"{engine}: {run}")
        else:
            print(f"{engine}: {run['device']}, Keras {run['keras']}")
    done = [e for e in args.engines if not isinstance(runs[e], str)]
    print(f"\nmedian ms per step ({args.rounds} rounds x {args.steps} steps); "
          "x SGD in brackets")  # fmt: skip
    print("| case | optimizer | " + " | ".join(done) + " |")
    print("| --- | --- |" + " ---: |" * len(done))
    for label, _, _, _ in cases(args.tiny):
        for name in OPTIMIZERS:
            cells = []
            for engine in done:
                table = runs[engine]["results"][label]
                cells.append(
                    f"{table[name] * 1e3:.2f} ({table[name] / table['SGD']:.2f})"
                )
            shown = name if name == "SGD" else f"HeavyTailSGD({name})"
            print(f"| {label} | {shown} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
