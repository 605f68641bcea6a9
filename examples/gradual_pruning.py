"""Prune while training a Keras 3 model, then shrink and export it (about 1 minute).

tfmot's gradual pruning for Keras 3, with heavy-tailed noise: `HeavyTailSGD`
trains an MLP on the embedded digits (offline) while
`keras_heavytail.sparsity.GradualPruning` removes hidden neurons along
tfmot's polynomial schedule up to `--sparsity` (90% by default). The noise
never revives a pruned neuron: the masks are applied after every step.
`shrink` then turns the pruned network into a smaller dense one, which is
exported to LiteRT (float32 and int8) and checked there. Writes under
`--output` only.

    python examples/gradual_pruning.py
    python examples/gradual_pruning.py --epochs 2 --width 64   # a smoke test
"""

import argparse
import math
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_heavytail as kht  # noqa: E402  first: it hides TensorFlow's start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_heavytail.pruning import sparsity  # noqa: E402


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join("results", "gradual_pruning"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    data = kht.experiments.load_dataset("digits")
    model = kht.experiments.build_model(
        "mlp", data.input_shape, 10, width=args.width, seed=args.seed
    )
    optimizer = kht.HeavyTailSGD(0.05, seed=args.seed)  # alpha, sigma: defaults
    optimizer.exclude_from_noise(kht.paper_exclusions(model))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # Prune over the first 70% of training, ten mask updates an epoch at most;
    # end_step a multiple of the frequency, so the final sparsity is reached.
    steps = args.epochs * math.ceil(len(data.y_train) / args.batch_size)
    frequency = max(1, steps // (10 * args.epochs))
    end_step = int(0.7 * steps) // frequency * frequency
    schedule = sparsity.PolynomialDecay(
        0.0, args.sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )
    model.fit(
        data.x_train,
        data.y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[sparsity.GradualPruning(schedule, structure="neuron")],
    )
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    kept = int(np.sum(np.any(model.get_layer("hidden1").kernel.numpy() != 0, axis=0)))
    small = kht.shrink(sparsity.strip_pruning(model))
    gap = np.max(
        np.abs(
            small.predict(data.x_test, verbose=0)
            - model.predict(data.x_test, verbose=0)
        )
    )
    print(
        f"gradual pruning: {args.width - kept} of {args.width} hidden neurons removed "
        f"({1 - kept / args.width:.0%}), Keras test accuracy {accuracy:.3f}; "
        f"shrunk to {small.count_params()} parameters from {model.count_params()}, "
        f"max |shrunk - pruned| = {gap:.1e}"
    )
    print("| LiteRT model | bytes | accuracy | median latency |")
    print("| --- | ---: | ---: | ---: |")
    for name, quantize in (("shrunk_float32", None), ("shrunk_int8", "int8")):
        report = kht.export_tflite(
            small,
            os.path.join(args.output, f"{name}.tflite"),
            quantize=quantize,
            representative_data=data.x_train[:256],
        )
        result = kht.evaluate_tflite(
            report.path, data.x_test, data.y_test, from_logits=True
        )
        latency = kht.benchmark_tflite(report.path, runs=50)["median_ms"]
        print(f"| {name} | {report.bytes} | {result['accuracy']:.3f} | {kht.export.format_latency(latency)} |")
    print(f"Files in {args.output}. Measurements over seeds: benchmarks/RESULTS.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
