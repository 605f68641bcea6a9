"""One-shot channel pruning of a BatchNorm + residual CNN, with and without
re-estimating the BatchNormalization statistics (`prune(batch_norm_data=)`).

    python benchmarks/batch_norm_pruning.py

A small CNN (Conv2D, BatchNormalization, a residual Add, a strided Conv2D,
global pooling, Dense) trained on the embedded digits; `prune(...,
structure="neuron")` at three ratios with two importance criteria; test
accuracy of the pruned model as it is (stale statistics) and after
`batch_norm_data=` re-estimated them. Two seeds; about a minute on 2 cores.
"""

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_heavytail as kht  # noqa: E402


def cnn(seed):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    h = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(32, 3, padding="same")(inputs)))
    r = L.BatchNormalization(momentum=0.9)(L.Conv2D(32, 3, padding="same")(h))
    h = L.ReLU()(L.Add()([h, r]))
    h = L.Conv2D(64, 3, strides=2, padding="same")(h)
    h = L.ReLU()(L.BatchNormalization(momentum=0.9)(h))
    return keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(h)))


def main():
    data = kht.experiments.load_dataset("digits")
    x, x_test = data.x_train.reshape(-1, 8, 8, 1), data.x_test.reshape(-1, 8, 8, 1)
    print("| seed | dense | ratio | score | pruned (stale BN) | with batch_norm_data |")
    print("| ---: | ---: | ---: | --- | ---: | ---: |")
    for seed in (0, 1):
        model = cnn(seed)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        model.fit(x, data.y_train, epochs=15, batch_size=32, verbose=0)
        dense = kht.metrics.accuracy(model, x_test, data.y_test)
        for ratio in (0.1, 0.3, 0.5):
            for score in ("magnitude", "bn_scale"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the stale-statistics warning
                    stale = kht.prune(model, ratio, structure="neuron", score=score)
                fresh = kht.prune(model, ratio, structure="neuron", score=score,
                                  batch_norm_data=x)  # fmt: skip
                print(f"| {seed} | {dense:.3f} | {ratio} | {score} | "
                      f"{kht.metrics.accuracy(stale, x_test, data.y_test):.3f} | "
                      f"{kht.metrics.accuracy(fresh, x_test, data.y_test):.3f} |", flush=True)


if __name__ == "__main__":
    main()
