"""What the end-of-fit divergence check costs: one pass over the weights.

`HeavyTailSGD`/`HeavyTailNoise` check every trainable variable once when
`fit` ends (not finite, or beyond `divergence.BLOWN_UP`), and the model's
non-trainable float weights (not finite). This times that check on MobileNetV2 (alpha 1.0, 224x224, 3.5M weights) and ResNet50 (25M),
median of `--rounds`, against one training step of the same model at batch 8.

    python benchmarks/divergence_check_cost.py --rounds 5
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_heavytail as kht  # noqa: E402, I001  first: it hides TensorFlow's start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402


def median_seconds(fn, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def row(name, build, rounds):
    """One table row: the check and one training step of the same model."""
    model = build(weights=None, classes=10)
    optimizer = kht.HeavyTailSGD(0.01, seed=0)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 224, 224, 3)).astype("float32")
    y = np.arange(8) % 10
    model.train_on_batch(x, y)  # traced and built
    # What fit calls when it ends: the trained weights and the model's
    # non-trainable float ones (BatchNormalization's moving statistics).
    check = median_seconds(
        lambda: optimizer.finalize_variable_values(model.trainable_variables), rounds
    )
    step = median_seconds(lambda: model.train_on_batch(x, y), rounds)
    return (f"| {name} | {model.count_params():,} | {1000 * check[0]:.1f} ms "
            f"({1000 * check[1]:.1f}-{1000 * check[2]:.1f}) | {1000 * step[0]:.0f} ms | "
            f"{check[0] / step[0]:.3f} |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| model | weights | check (median, min-max) | one step at batch 8 | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(row("MobileNetV2", keras.applications.MobileNetV2, args.rounds))
    print(row("ResNet50", keras.applications.ResNet50, args.rounds))


if __name__ == "__main__":
    main()
