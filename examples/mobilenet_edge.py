"""MobileNetV2 on the edge: train, prune channel groups, shrink, int8 LiteRT.

Trains `keras.applications.MobileNetV2(alpha=0.35)` from scratch on the
embedded digits (8x8 upsampled to 32x32x3) with HeavyTailSGD and with SGD,
prunes `--ratio` of the channels of every channel group (residual additions
prune the same channels in all their branches), removes them with `shrink`
(a smaller dense MobileNetV2: its outputs equal the masked model's), then
fine-tunes the small model briefly and exports it to int8 LiteRT. Prints,
for each optimizer, parameters, file size, LiteRT accuracy and 1-thread
latency of the dense float32 model and of the shrunk int8 one. Offline;
the `.tflite` files go under `--output`.

    python examples/mobilenet_edge.py            # a few minutes on 2 cores
"""

import argparse
import os
import re
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_heavytail as kht  # noqa: E402


def upsampled(x):
    """8x8x1 digits to 32x32x3 (each pixel a 4x4 block, grey to RGB)."""
    return np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3)


def optimizer_for(name, model, sigma):
    if name == "SGD":
        return keras.optimizers.SGD(0.05, momentum=0.9)
    optimizer = kht.HeavyTailSGD(0.05, momentum=0.9, sigma=sigma, seed=0)
    # The paper's noise-free layers (first conv, classifier), named as layers:
    # `exclude_from_noise(paper_exclusions(model))` drops the first component
    # of each path as a model name, but keras.applications paths have none
    # ("Conv1/kernel"), so it would exclude every kernel.
    names = sorted({v.path.split("/")[-2] for v in kht.paper_exclusions(model)})
    optimizer.exclude_from_noise(var_names=[f"(^|/){re.escape(n)}/" for n in names])
    return optimizer


def trained(name, x, y, args):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=x.shape[1:], alpha=0.35, weights=None, classes=10,
        classifier_activation=None,
    )  # fmt: skip
    for layer in model.layers:  # Keras' 0.999 needs thousands of steps to settle
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    fit(model, optimizer_for(name, model, args.sigma), x, y, args.epochs)
    return model


def fit(model, optimizer, x, y, epochs):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)


def litert_row(name, variant, model, path, data, args, quantize):
    kht.export_tflite(
        model, path, sparse=False, quantize=quantize,
        representative_data=data["x_train"][:200],
    )  # fmt: skip
    scores = kht.evaluate_tflite(path, data["x_test"], data["y_test"], from_logits=True)
    timing = kht.benchmark_tflite(path, num_threads=1, runs=args.runs)
    return (
        f"| {name} | {variant} | {model.count_params():,} | {path.stat().st_size:,} "
        f"| {scores['accuracy']:.4f} | {timing['median_ms']:.2f} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--sigma", type=float, default=0.005)
    parser.add_argument("--limit", type=int, default=None, help="training examples")
    parser.add_argument("--runs", type=int, default=100, help="latency runs")
    parser.add_argument("--optimizers", nargs="+", default=["HeavyTailSGD", "SGD"],
                        choices=["HeavyTailSGD", "SGD"])  # fmt: skip
    parser.add_argument("--output", default="results/mobilenet_edge")
    args = parser.parse_args(argv)

    digits = kht.experiments.load_dataset("digits", limit=args.limit)
    data = {
        "x_train": upsampled(digits.x_train), "y_train": digits.y_train,
        "x_test": upsampled(digits.x_test), "y_test": digits.y_test,
    }  # fmt: skip
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.optimizers:
        model = trained(name, data["x_train"], data["y_train"], args)
        pruned = kht.prune(model, args.ratio, structure="neuron")
        small = kht.shrink(pruned)
        gap = np.max(
            np.abs(small.predict(data["x_test"], verbose=0) - pruned.predict(data["x_test"], verbose=0))
        )
        print(f"{name}: max |shrunk - masked| = {gap:.1e}")
        fit(small, optimizer_for(name, small, args.sigma), data["x_train"],
            data["y_train"], args.fine_tune_epochs)  # fmt: skip
        stem = out / name.lower()
        rows.append(litert_row(name, "dense float32", model, Path(f"{stem}_dense.tflite"), data, args, None))
        rows.append(litert_row(name, "shrunk int8", small, Path(f"{stem}_shrunk_int8.tflite"), data, args, "int8"))
    print("\n| optimizer | variant | parameters | bytes | LiteRT accuracy | 1-thread ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
