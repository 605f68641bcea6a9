"""Drop heavy-tailed noise into an existing Keras pipeline.

Nothing about the pipeline changes but the optimizer: callbacks
(EarlyStopping, ModelCheckpoint), a learning-rate schedule, an annealed
noise scale, mixed precision (Keras wraps the optimizer in a
LossScaleOptimizer) and `model.save` / `keras.saving.load_model` with no
custom objects. Trains once with `HeavyTailSGD` and once with `HeavyTailNoise`
around Adam, then reloads the checkpoint and checks it predicts the same.

    python examples/keras_pipeline.py                   # about 30 seconds
    python examples/keras_pipeline.py --mixed-precision
"""

import argparse
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_heavytail as kht  # noqa: E402  first: it hides TensorFlow's start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_heavytail.experiments import datasets  # noqa: E402


def optimizers(steps):
    lr = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=steps)
    sigma = keras.optimizers.schedules.PolynomialDecay(
        0.005, decay_steps=steps, end_learning_rate=0.0
    )
    yield (
        "HeavyTailSGD",
        kht.HeavyTailSGD(lr, momentum=0.9, nesterov=True, sigma=sigma, seed=0),
    )
    adam = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps))
    yield (
        "HeavyTailNoise(Adam)",
        kht.HeavyTailNoise(adam, alpha=1.8, sigma=0.002, seed=0),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data", help="directory with the dataset's files")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--mixed-precision", action="store_true")
    args = parser.parse_args(argv)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    data = kht.experiments.load_dataset(args.dataset, data_dir=args.data)
    steps = args.epochs * int(np.ceil(0.9 * len(data.y_train) / 64))
    with tempfile.TemporaryDirectory() as tmp:
        for name, optimizer in optimizers(steps):
            model = kht.experiments.build_model(
                "mlp", data.input_shape, data.num_classes, width=args.width
            )
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            path = os.path.join(tmp, "best.keras")
            callbacks = [
                keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True),
                keras.callbacks.ModelCheckpoint(path, save_best_only=True),
            ]
            model.fit(
                data.x_train,
                data.y_train,
                validation_split=0.1,
                batch_size=64,
                epochs=args.epochs,
                callbacks=callbacks,
                verbose=0,
            )
            reloaded = keras.saving.load_model(path)  # no custom_objects needed
            _, accuracy = reloaded.evaluate(data.x_test, data.y_test, verbose=0)
            inner = reloaded.optimizer
            if isinstance(inner, keras.optimizers.LossScaleOptimizer):
                inner = inner.inner_optimizer
            print(
                f"{name}: best checkpoint test accuracy {accuracy:.4f}; reloaded optimizer "
                f"{type(inner).__name__} at step {int(inner.iterations)}, "
                f"{kht.compressibility.neuron_prune_ratio(reloaded.get_layer('hidden1').kernel.numpy()):.2f} "
                "of neurons prunable"
            )


if __name__ == "__main__":
    main()
