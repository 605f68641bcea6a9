"""Quick start: HeavyTailSGD as a drop-in Keras optimizer (about 20 s on CPU).

Trains the same one-hidden-layer MLP on scikit-learn's bundled handwritten
digits (offline, no download) with plain SGD and with HeavyTailSGD, and prints
test accuracy next to the share of hidden neurons whose incoming weights hold
less than 10% of the layer's squared norm (the paper's pruning criterion).

    python examples/quickstart.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_heavytail as kht  # noqa: E402


def prunable_fraction(kernel, max_rel_sq_error=0.1):
    sq = np.sort(np.sum(kernel**2, axis=0))
    return float(np.mean(np.cumsum(sq) <= max_rel_sq_error * sq.sum()))


def main():
    digits = load_digits()
    x = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-8)
    x, y = x.astype("float32"), digits.target
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    for name, optimizer in [
        ("SGD", keras.optimizers.SGD(0.05)),
        ("HeavyTailSGD", kht.HeavyTailSGD(0.05, alpha=1.75, sigma=0.05, seed=0)),
    ]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(1000, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        kernel = model.layers[0].kernel.numpy()
        print(
            f"{name:>13}: test accuracy {accuracy:.3f}, "
            f"prunable neurons at 10% error {prunable_fraction(kernel):.2f}"
        )


if __name__ == "__main__":
    main()
