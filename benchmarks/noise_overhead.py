"""Cost of the noise, measured side by side in one run (CPU).

(a) Samples per second for one million draws: `keras_heavytail.symmetric_stable`
    (traced with `tf.function`, as the optimizer runs it; called eagerly, which
    runs it compiled once per shape, dtype and alpha; and eagerly op by op,
    under `tf.config.run_functions_eagerly(True)`, as before that cache),
    `scipy.stats.levy_stable.rvs` and `keras.random.normal` (eager).
(b) Milliseconds per `model.fit` step of HeavyTailSGD (each noise structure)
    against `keras.optimizers.SGD` on a 784-2048-10 MLP at batch 128 and 1024.

Rounds alternate between the contenders so that drift in the machine's speed
hits all of them alike; medians are reported.

    python benchmarks/noise_overhead.py            # about 3 minutes
    python benchmarks/noise_overhead.py --quick    # a smoke run
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import stats  # noqa: E402

import keras_heavytail as kht  # noqa: E402


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sampler_table(n, repeats, rounds):
    seed = tf.Variable([1, 2], dtype=tf.int64)

    @tf.function
    def stable():
        seed.assign_add([0, 1])
        return kht.optimizers.symmetric_stable((n,), 1.75, seed=tf.identity(seed))

    @tf.function
    def normal():
        seed.assign_add([0, 1])
        return tf.random.stateless_normal((n,), seed=tf.identity(seed))

    @tf.function
    def keras_normal():
        return keras.random.normal((n,), seed=gen)

    def op_by_op():
        tf.config.run_functions_eagerly(True)
        try:
            return kht.optimizers.symmetric_stable((n,), 1.75, seed=2).numpy()
        finally:
            tf.config.run_functions_eagerly(False)

    gen = keras.random.SeedGenerator(0)
    contenders = {
        "keras_heavytail.symmetric_stable": lambda: stable().numpy(),
        "symmetric_stable, eager call": lambda: kht.optimizers.symmetric_stable(
            (n,), 1.75, seed=2
        ).numpy(),
        "symmetric_stable, eager op by op": op_by_op,
        "keras.random.normal, eager": lambda: keras.random.normal(
            (n,), seed=gen
        ).numpy(),
        "keras.random.normal": lambda: keras_normal().numpy(),
        "tf.random.stateless_normal": lambda: normal().numpy(),
        "scipy.stats.levy_stable.rvs": lambda: stats.levy_stable.rvs(
            1.75, 0.0, size=n, random_state=0
        ),
    }
    for fn in contenders.values():
        fn()  # warm-up and tracing
    results = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            reps = 1 if name.startswith("scipy") else repeats
            results[name].append(median_time(fn, reps))
    return {name: float(np.median(ts)) for name, ts in results.items()}


class StepTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.times, self.last = [], None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def step_table(batch, steps, rounds):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, 784)).astype("float32")
    y = rng.integers(0, 10, size=batch * steps)
    contenders = {
        "SGD": lambda: keras.optimizers.SGD(0.01),
        "HeavyTailSGD(noise='neuron')": lambda: kht.HeavyTailSGD(
            0.01, noise="neuron", seed=0
        ),
        "HeavyTailSGD(noise='elliptical')": lambda: kht.HeavyTailSGD(
            0.01, noise="elliptical", seed=0
        ),
        "HeavyTailSGD(noise='entry')": lambda: kht.HeavyTailSGD(
            0.01, noise="entry", seed=0
        ),
    }
    models = {}
    for name, make in contenders.items():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((784,)),
                keras.layers.Dense(2048, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            optimizer=make(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm-up
        models[name] = model
    results = {name: [] for name in contenders}
    timer = StepTimer()
    for _ in range(rounds):
        for name, model in models.items():
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timer])
            results[name].append(float(np.median(timer.times)))
    return {name: float(np.median(ts)) for name, ts in results.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--samplers-only", action="store_true", help="table (a) only")
    args = parser.parse_args()
    n, repeats, rounds, steps = (
        (100_000, 2, 1, 4) if args.quick else (1_000_000, 5, 5, 30)
    )

    print(f"TF {tf.__version__}, Keras {keras.__version__}, cores {os.cpu_count()}")
    print(f"\n(a) {n:,} draws, median of {rounds} rounds x {repeats} calls")
    samplers = sampler_table(n, repeats, rounds)
    ref = samplers["keras.random.normal"]
    print("| sampler | ms | Msamples/s | x keras.random.normal |")
    print("| --- | ---: | ---: | ---: |")
    for name, t in samplers.items():
        print(f"| {name} | {t * 1e3:.1f} | {n / t / 1e6:.1f} | {t / ref:.2f} |")
    ratio = (
        samplers["scipy.stats.levy_stable.rvs"]
        / samplers["keras_heavytail.symmetric_stable"]
    )
    print(f"symmetric_stable is {ratio:.1f}x faster than scipy")
    eager = (
        samplers["symmetric_stable, eager op by op"]
        / samplers["symmetric_stable, eager call"]
    )
    print(f"an eager call is {eager:.2f}x faster compiled than op by op")
    if args.samplers_only:
        return

    for batch in (128, 1024):
        print(f"\n(b) 784-2048-10 MLP, batch {batch}, median ms per fit step")
        steps_ms = step_table(batch, steps, rounds)
        base = steps_ms["SGD"]
        print("| optimizer | ms/step | x SGD |")
        print("| --- | ---: | ---: |")
        for name, t in steps_ms.items():
            print(f"| {name} | {t * 1e3:.2f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
