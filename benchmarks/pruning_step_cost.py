"""What `GradualPruning(structure="neuron")` costs per training step on MobileNetV2.

Times `model.fit` steps of MobileNetV2 (alpha 0.35, 96x96x3, batch 32,
random data: the cost does not depend on it) three ways, interleaved over
`--rounds` rounds: no callback; `GradualPruning` as shipped (its
`ModelGraph` built once in `on_train_begin`, masks applied after every
step); and the same callback with the model graph rebuilt on every step,
as release 0.2 did. Prints the median milliseconds per step of each and the
spread over rounds.

    python benchmarks/pruning_step_cost.py            # ~5 min on 2 cores
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_heavytail.pruning import one_shot  # noqa: E402
from keras_heavytail.pruning import sparsity  # noqa: E402


class RebuiltEveryStep(sparsity.GradualPruning):
    """Release 0.2's behaviour: a new model graph for every mask application."""

    def _apply(self):
        one_shot.apply_masks(self.model, self.masks)  # no graph: built anew


def model_and_data(size, batch, steps):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, weights=None, classes=10
    )
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, size=batch * steps)
    return model, x, y


def timed(model, x, y, batch, callback):
    callbacks = [] if callback is None else [callback]
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0,
              callbacks=callbacks)  # fmt: skip  (warm-up: tracing, graph)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
    return (time.perf_counter() - start) * 1e3 / (len(x) // batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model, x, y = model_and_data(args.size, args.batch, args.steps)
    schedule = sparsity.ConstantSparsity(0.3, begin_step=0, frequency=10**6)
    ways = {
        "no callback": lambda: None,
        "GradualPruning (graph built once)": lambda: sparsity.GradualPruning(
            schedule, structure="neuron"),
        "graph rebuilt every step (0.2)": lambda: RebuiltEveryStep(
            schedule, structure="neuron"),
    }  # fmt: skip
    results = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, make in ways.items():
            results[name].append(timed(model, x, y, args.batch, make()))
    base = np.median(results["no callback"])
    print(f"MobileNetV2 a0.35 {args.size}x{args.size}, batch {args.batch}, "
          f"{args.steps} steps x {args.rounds} rounds")  # fmt: skip
    print("| training | ms per step (median) | range over rounds | vs no callback |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in results.items():
        print(f"| {name} | {np.median(values):.1f} | {min(values):.1f}-{max(values):.1f} "
              f"| {np.median(values) / base:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
