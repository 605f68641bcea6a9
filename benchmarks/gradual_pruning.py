"""One-shot vs gradual neuron pruning, SGD vs HeavyTailSGD, on digits.

For each seed and optimizer (SGD, HeavyTailSGD at the defaults with the
paper's noise-free output layer), one-hidden-layer MLPs of `--width` units
train for `--epochs` epochs (batch 32, learning rate 0.05) and lose 70% or
90% of their hidden neurons:

- one-shot: train dense, then prune once (`keras_heavytail.prune`, neuron
  norms), no fine-tuning;
- gradual: `keras_heavytail.sparsity.GradualPruning` with tfmot's polynomial
  schedule from 0 to the ratio over the first 70% of the same number of
  steps (ten mask updates an epoch), so the network trains 30% more at the
  final sparsity.

Every pruned model is `shrink`-ed, exported to float32 LiteRT and evaluated
there on the test split; the shrunk files' single-example latency (one
thread, median over 3 interleaved rounds of 300 invocations) is measured
beside the dense model's. Writes nothing but a JSON of the rows, through
`keras_heavytail.files`.

With `--overhead`, it measures instead what the callback costs: seconds per
epoch of `fit` (SGD, batch 32) with and without `GradualPruning` (neuron
structure, a mask update every 10 steps), median of 5 interleaved epochs.

    python benchmarks/gradual_pruning.py                 # about 5 minutes
    python benchmarks/gradual_pruning.py --overhead      # about 1 minute
    python benchmarks/gradual_pruning.py --seeds 0 --epochs 2 --width 64
"""

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_heavytail as kht  # noqa: E402
from keras_heavytail import files  # noqa: E402
from keras_heavytail.pruning import sparsity  # noqa: E402

RATIOS = (0.7, 0.9)
OPTIMIZERS = ("SGD", "HeavyTailSGD")


def train(data, args, seed, optimizer_name, ratio=None):
    """A trained MLP; with `ratio`, gradually pruned to it during training."""
    model = kht.experiments.build_model("mlp", data.input_shape, 10, width=args.width, seed=seed)
    if optimizer_name == "SGD":
        optimizer = keras.optimizers.SGD(0.05)
    else:
        optimizer = kht.HeavyTailSGD(0.05, seed=seed)
        optimizer.exclude_from_noise(kht.paper_exclusions(model))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    callbacks = []
    if ratio is not None:
        steps = args.epochs * math.ceil(len(data.y_train) / 32)
        frequency = max(1, steps // (10 * args.epochs))
        end_step = int(0.7 * steps) // frequency * frequency
        schedule = sparsity.PolynomialDecay(
            0.0, ratio, 0, end_step, frequency=frequency
        )
        callbacks.append(sparsity.GradualPruning(schedule, structure="neuron"))
    model.fit(
        data.x_train,
        data.y_train,
        epochs=args.epochs,
        batch_size=32,
        verbose=0,
        callbacks=callbacks,
    )
    return model


def overhead(data, args):
    """Seconds per epoch with and without the callback, interleaved."""
    models = {}
    for arm in ("plain fit", "fit + GradualPruning"):
        model = kht.experiments.build_model("mlp", data.input_shape, 10, width=args.width, seed=0)
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        callbacks = []
        if arm != "plain fit":
            schedule = sparsity.ConstantSparsity(0.9, begin_step=0, frequency=10)
            callbacks.append(sparsity.GradualPruning(schedule, structure="neuron"))
        model.fit(data.x_train, data.y_train, batch_size=32, verbose=0)  # warm-up
        models[arm] = (model, callbacks, [])
    for _ in range(5):
        for model, callbacks, seconds in models.values():
            start = time.perf_counter()
            model.fit(
                data.x_train,
                data.y_train,
                batch_size=32,
                verbose=0,
                callbacks=callbacks,
            )
            seconds.append(time.perf_counter() - start)
    steps = math.ceil(len(data.y_train) / 32)
    base = float(np.median(models["plain fit"][2]))
    print(f"width {args.width}, {steps} steps an epoch, median of 5 epochs")
    print("| arm | s/epoch | ms/step | x plain |")
    print("| --- | ---: | ---: | ---: |")
    for arm, (_, _, seconds) in models.items():
        median = float(np.median(seconds))
        print(
            f"| {arm} | {median:.3f} | {1e3 * median / steps:.2f} | {median / base:.2f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--output", default="results/gradual_pruning_benchmark.json")
    parser.add_argument("--overhead", action="store_true")
    args = parser.parse_args()
    data = kht.experiments.load_dataset("digits")
    if args.overhead:
        return overhead(data, args)
    rows, latency_files, dense_accuracy = [], {}, {name: [] for name in OPTIMIZERS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name in OPTIMIZERS:
                dense = train(data, args, seed, name)
                predicted = np.argmax(dense.predict(data.x_test, verbose=0), -1)
                dense_accuracy[name].append(float(np.mean(predicted == data.y_test)))
                if seed == args.seeds[0]:
                    path = Path(tmp) / f"dense_{name}.tflite"
                    kht.export_tflite(dense, path, sparse=False)
                    latency_files[("dense", name, 0.0)] = path
                for ratio in RATIOS:
                    for method in ("one-shot", "gradual"):
                        if method == "one-shot":
                            pruned = kht.prune(dense, ratio, structure="neuron")
                        else:
                            pruned = train(data, args, seed, name, ratio)
                        small = kht.shrink(pruned)
                        path = Path(tmp) / f"{method}_{name}_{ratio}_{seed}.tflite"
                        kht.export_tflite(small, path, sparse=False)
                        accuracy = kht.evaluate_tflite(
                            path, data.x_test, data.y_test, from_logits=True
                        )["accuracy"]
                        units = small.get_layer("hidden1").kernel.shape[-1]
                        rows.append(
                            {
                                "seed": seed,
                                "optimizer": name,
                                "method": method,
                                "ratio": ratio,
                                "units": int(units),
                                "accuracy": float(accuracy),
                            }
                        )
                        print(json.dumps(rows[-1]), flush=True)
                        if seed == args.seeds[0]:
                            latency_files[(method, name, ratio)] = path
        latency = {key: [] for key in latency_files}
        for _ in range(3):  # interleaved rounds: drift hits every file alike
            for key, path in latency_files.items():
                result = kht.benchmark_tflite(path, runs=300, warmup=30)
                latency[key].append(result["median_ms"])
    latency = {key: float(np.median(ms)) for key, ms in latency.items()}
    files.write_text(
        args.output,
        json.dumps(
            {
                "rows": rows,
                "dense_accuracy": dense_accuracy,
                "latency_ms": {" ".join(map(str, k)): v for k, v in latency.items()},
            },
            indent=1,
        ),
    )
    print(f"\n{len(args.seeds)} seeds, width {args.width}, {args.epochs} epochs")
    print(
        "| neurons removed | optimizer | method | LiteRT test accuracy (mean ± sd) "
        "| per seed | hidden units | median µs (seed 0) |"
    )
    print("| ---: | --- | --- | ---: | --- | ---: | ---: |")
    for ratio in RATIOS:
        for name in OPTIMIZERS:
            for method in ("one-shot", "gradual"):
                accs = [
                    r["accuracy"]
                    for r in rows
                    if (r["ratio"], r["optimizer"], r["method"])
                    == (ratio, name, method)
                ]
                units = next(
                    r["units"]
                    for r in rows
                    if (r["ratio"], r["method"]) == (ratio, method)
                )
                print(
                    f"| {ratio:.0%} | {name} | {method} | {np.mean(accs):.4f} ± "
                    f"{np.std(accs):.4f} | {', '.join(f'{a:.3f}' for a in accs)} | "
                    f"{units} | {latency[(method, name, ratio)] * 1e3:.1f} |"
                )
    for name in OPTIMIZERS:
        accs = dense_accuracy[name]
        print(
            f"dense {name}: Keras test accuracy {np.mean(accs):.4f} ± {np.std(accs):.4f}, "
            f"{args.width} hidden units, median µs "
            f"{latency[('dense', name, 0.0)] * 1e3:.1f}"
        )


if __name__ == "__main__":
    main()
