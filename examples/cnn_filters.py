"""Beyond the theory: a small CNN, filter pruning and shrink.

Trains a two-block CNN with HeavyTailSGD (the first convolution and the
classifier noise-free, as in the paper), prints its compressibility report,
prunes 50% of the filters and hidden neurons by incoming norm and by path
norm, removes them with `shrink`, and checks that the smaller dense model
computes exactly what the masked one does, with far fewer parameters.

    python examples/cnn_filters.py                 # about 1 minute
    python examples/cnn_filters.py --dataset cifar10 --data ~/cifar --epochs 10
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_heavytail as kht  # noqa: E402  first: it hides TensorFlow's start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_heavytail import defaults  # noqa: E402
from keras_heavytail.experiments import datasets  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data", help="directory with the dataset's files")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=256, help="dense layer width")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--sigma", type=float, default=defaults.SIGMA)
    args = parser.parse_args(argv)

    data = kht.experiments.load_dataset(args.dataset, data_dir=args.data)
    model = kht.experiments.build_model("cnn", data.input_shape, data.num_classes, width=args.width)
    optimizer = kht.HeavyTailSGD(0.05, momentum=0.9, sigma=args.sigma, seed=0)
    optimizer.exclude_from_noise(kht.paper_exclusions(model))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data.x_train, data.y_train, batch_size=64, epochs=args.epochs, verbose=2)
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    print(f"test accuracy {accuracy:.4f}\n")
    print(kht.compressibility_report(model), "\n")
    for score in ("magnitude", "path"):
        # The paper leaves the first convolution (and the classifier) alone.
        pruned = kht.prune(
            model, args.ratio, structure="neuron", score=score, exclude=["conv1"]
        )
        small = kht.shrink(pruned)
        small_logits = small.predict(data.x_test, verbose=0)
        masked_logits = pruned.predict(data.x_test, verbose=0)
        gap = np.max(np.abs(small_logits - masked_logits))
        # The shrunk model computes what the masked one does; sums in another
        # order differ by float32 rounding, which depends on the CPU.
        same = gap <= 1e-5 * max(1.0, float(np.max(np.abs(masked_logits))))
        small_accuracy = np.mean(np.argmax(small_logits, -1) == data.y_test)
        filters = [layer.filters for layer in small.layers if hasattr(layer, "filters")]
        print(
            f"score={score}: {model.count_params():,} -> {small.count_params():,} parameters, "
            f"filters {filters}, accuracy {small_accuracy:.4f} "
            f"(shrunk = masked up to rounding: {'yes' if same else 'NO'}, "
            f"max |shrunk - masked| = {gap:.1e})"
        )


if __name__ == "__main__":
    main()
