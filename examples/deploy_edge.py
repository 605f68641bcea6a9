"""Deploy a heavy-tailed model to the edge: prune, shrink, export, check in LiteRT.

From a model trained with HeavyTailSGD (trained here in about a minute on
the embedded digits if `--model` is not given), writes four LiteRT models
with their cards into `--output`:

- dense float32 (the reference),
- pruned (90% of hidden weights) sparse float32,
- pruned sparse int8 (one quantisation scale per tensor),
- shrunk int8: 70% of the hidden neurons removed, a smaller dense model.

and prints bytes, gzip bytes, accuracy measured in LiteRT and 1-thread
latency. Every accuracy comes from `litert_predict`, the same few lines of
Python that run the file on a Linux board (see the README).

    python examples/deploy_edge.py                          # about 1 minute
    python examples/deploy_edge.py --model my.keras --output saved_models/mine
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_heavytail as kht  # noqa: E402  first: it hides TensorFlow's start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_heavytail.experiments import datasets  # noqa: E402
from keras_heavytail.export import deploy  # noqa: E402


# --8<-- [start:litert_predict]
def litert_predict(model_path, images):
    """Class predictions of a .tflite model, as a Linux board runs it."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    # Sparse int8 models need the builtin kernels (XNNPACK refuses them).
    interpreter = Interpreter(
        model_path=model_path,
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    predictions = []
    for image in images:
        x = image[None].astype(np.float32)
        if inp["dtype"] == np.int8:  # full-integer model: quantise the input
            scale, zero_point = inp["quantization"]
            x = np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        predictions.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
    return np.array(predictions)


# --8<-- [end:litert_predict]


def train(data, epochs, seed):
    model = kht.experiments.build_model(
        "mlp", data.input_shape, data.num_classes, width=2000, seed=seed
    )
    optimizer = kht.HeavyTailSGD(0.05, seed=seed)  # alpha, sigma, noise: defaults
    optimizer.exclude_from_noise(kht.paper_exclusions(model))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data.x_train, data.y_train, batch_size=64, epochs=epochs, verbose=2)
    return model, optimizer.get_config()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras file; trained here if omitted")
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data", help="directory with the dataset's files")
    parser.add_argument(
        "--output",
        default="results/edge",
        help="where to write (the committed copy: --output saved_models/edge)",
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=200, help="timed invocations")
    args = parser.parse_args(argv)

    data = datasets.load_dataset(args.dataset, data_dir=args.data, seed=args.seed)
    if args.model:
        model = keras.saving.load_model(args.model)
        training = {"source_model": args.model}
        if isinstance(model.optimizer, keras.optimizers.Optimizer):
            training["optimizer"] = model.optimizer.get_config()
    else:
        model, training = train(data, args.epochs, args.seed)
    _, keras_accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    print(f"Keras test accuracy: {keras_accuracy:.4f}")
    rows = deploy.export_variants(
        model,
        args.output,
        data.x_train[:500],
        data.x_test,
        data.y_test,
        from_logits=True,
        training=training,
        source="examples/deploy_edge.py",
        dataset={**data.summary(), "split_seed": args.seed},
        runs=args.runs,
    )
    for row in rows:  # the board snippet must agree with the evaluation
        board = np.mean(litert_predict(row["path"], data.x_test) == data.y_test)
        if abs(board - row["litert_accuracy"]) > 1e-9:
            sys.exit(
                f"{row['variant']}: board snippet {board} != {row['litert_accuracy']}"
            )
    print(deploy.variants_table(rows))
    deploy.write_index(args.output)
    parent = os.path.dirname(os.path.abspath(args.output))
    if os.path.basename(parent) == "saved_models":
        deploy.write_index(parent)
    print(f"Wrote {len(rows)} models with cards to {args.output}")


if __name__ == "__main__":
    main()
