"""Quick start: HeavyTailSGD as a drop-in Keras optimizer (about 20 s on CPU).

Trains the same one-hidden-layer MLP on scikit-learn's bundled handwritten
digits (offline, no download) with plain SGD and with HeavyTailSGD at the
project's defaults (the output layer kept noise-free, as in the paper), and
prints test accuracy, the paper's pruning criterion and the accuracy left
after removing 70% of the hidden neurons.

    python examples/quickstart.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_heavytail as kht  # noqa: E402  first: it hides TensorFlow's start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main():
    data = kht.experiments.load_dataset("digits")
    results = {}
    for name in ("SGD", "HeavyTailSGD"):
        model = kht.experiments.build_model("mlp", data.input_shape, 10, width=1000, seed=0)
        if name == "SGD":
            optimizer = keras.optimizers.SGD(0.05)
        else:
            optimizer = kht.HeavyTailSGD(0.05, seed=0)  # alpha, sigma: defaults
            optimizer.exclude_from_noise(kht.paper_exclusions(model))
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(data.x_train, data.y_train, epochs=10, batch_size=32, verbose=0)
        _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
        report = kht.compressibility_report(model)
        pruned = kht.prune(model, 0.7, structure="neuron")
        predicted = np.argmax(pruned.predict(data.x_test, verbose=0), axis=-1)
        pruned_accuracy = float(np.mean(predicted == data.y_test))
        results[name] = (accuracy, pruned_accuracy)
        print(
            f"{name:>13}: test accuracy {accuracy:.3f}; prunable neurons by the "
            f"paper's criterion {report['hidden1']['neuron_prune_ratio']:.2f}; "
            f"accuracy with 70% of neurons removed {pruned_accuracy:.3f}"
        )
    (sgd, sgd_pruned), (noisy, noisy_pruned) = results["SGD"], results["HeavyTailSGD"]
    print(
        f"What to conclude: dense test accuracy {100 * (noisy - sgd):+.1f} points with "
        f"the noise; with 70% of the neurons removed, HeavyTailSGD scores "
        f"{100 * noisy_pruned:.1f}% against SGD's {100 * sgd_pruned:.1f}%. One seed "
        "proves little: benchmarks/RESULTS.md measures this over seeds and datasets."
    )

if __name__ == "__main__":
    main()
