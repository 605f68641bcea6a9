"""tfmot's path to a pruned int8 model, with heavy-tailed noise (about 1 minute).

For tf_keras (Keras 2) models: tfmot's gradual magnitude pruning
(`legacy.prune_low_magnitude`) while `LegacyHeavyTailSGD` trains an MLP on
the embedded digits (offline); then pruning-preserving quantisation-aware
training (`legacy.quantize_pruned`: tfmot's
`Default8BitPrunePreserveQuantizeScheme`) with the same noisy optimizer, and
an int8 `.tflite` file whose kernels keep the zeros, checked in the LiteRT
interpreter. Writes under `--output` only. Keras 3 models prune during
training with `keras_heavytail.pruning.sparsity` (see `examples/gradual_pruning.py`).

    python examples/tfmot_pruning.py
    python examples/tfmot_pruning.py --epochs 2 --width 64   # a smoke test
"""

import argparse
import math
import os
import sys


from keras_heavytail import legacy  # noqa: E402  first: it hides TensorFlow's start-up lines

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

from keras_heavytail.experiments import datasets  # noqa: E402
from keras_heavytail.export import litert as export  # noqa: E402


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join("results", "tfmot_pruning"))
    return parser.parse_args(argv)


def int8_kernel_sparsity(path, shapes):
    """Fraction of zeros in the int8 kernels of a `.tflite` file, read in LiteRT.

    LiteRT stores a Dense kernel as (units, inputs): `shapes` are those.
    """
    interpreter, _ = export.load_interpreter(path)
    zeros = total = 0
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and tuple(detail["shape"]) in shapes:
            kernel = interpreter.get_tensor(detail["index"])
            zeros, total = zeros + int(np.sum(kernel == 0)), total + kernel.size
    return zeros / total


def main(argv=None):
    args = parse(argv)
    data = datasets.load_dataset("digits")
    tf_keras.utils.set_random_seed(args.seed)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Flatten(input_shape=data.input_shape),
            tf_keras.layers.Dense(args.width, activation="relu"),
            tf_keras.layers.Dense(10),
        ]
    )
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = args.epochs * math.ceil(len(data.y_train) / 32)
    frequency = max(1, steps // (10 * args.epochs))
    end_step = int(0.7 * steps) // frequency * frequency
    pruned = legacy.prune_low_magnitude(
        model, args.sparsity, end_step=end_step, frequency=frequency
    )
    pruned.compile(
        optimizer=legacy.LegacyHeavyTailSGD(0.05, seed=args.seed),
        loss=loss,
        metrics=["accuracy"],
    )
    pruned.fit(
        data.x_train,
        data.y_train,
        epochs=args.epochs,
        batch_size=32,
        verbose=0,
        callbacks=legacy.pruning_callbacks(),
    )
    stripped = legacy.strip_pruning(pruned)
    stripped.compile(loss=loss, metrics=["accuracy"])
    _, accuracy = stripped.evaluate(data.x_test, data.y_test, verbose=0)
    print(
        f"tfmot pruning: kernel sparsity {legacy.kernel_sparsity(stripped):.3f}, "
        f"float test accuracy {accuracy:.3f}"
    )

    qat = legacy.quantize_pruned(stripped)
    qat.compile(
        optimizer=legacy.LegacyHeavyTailSGD(0.01, seed=args.seed),
        loss=loss,
        metrics=["accuracy"],
    )
    qat.fit(
        data.x_train, data.y_train, epochs=args.qat_epochs, batch_size=32, verbose=0
    )
    shapes = {w.shape[::-1] for w in stripped.get_weights() if w.ndim == 2}
    print("| LiteRT model | bytes | int8 kernel sparsity | accuracy |")
    print("| --- | ---: | ---: | ---: |")
    for name, sparse in (("pqat_int8_dense", False), ("pqat_int8_sparse", True)):
        report = export.export_tflite(
            qat,
            os.path.join(args.output, f"{name}.tflite"),
            sparse=sparse,
            quantize="int8",
            representative_data=data.x_train[:256],
        )
        result = export.evaluate_tflite(
            report.path, data.x_test, data.y_test, from_logits=True
        )
        kept = int8_kernel_sparsity(report.path, shapes) if not sparse else None
        kept = f"{kept:.3f}" if kept is not None else "(sparse format)"
        print(f"| {name} | {report.bytes} | {kept} | {result['accuracy']:.3f} |")
    print(f"Files in {args.output}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
