"""Group pruning + `shrink` on real edge architectures, measured in LiteRT.

MobileNetV2 (alpha 0.35, 96x96x3) and ResNet50 (64x64x3), built without
weights (the numbers are about size and speed, not accuracy) and with
batch-norm statistics away from the identity. For each, the dense model
and `shrink(prune(model, r, structure="neuron"))` for r in 0.3 and 0.5 (r
of every channel group's channels): parameters, FLOPs (2 x multiply-adds of
the conv and dense layers), `.tflite` bytes and 1-thread single-example
LiteRT latency (median over 5 interleaved rounds of 100 runs, so drift on
the shared machine hits every file alike) in float32 and int8, and the largest
difference between the shrunk and the masked model's outputs.

    python benchmarks/structured_edge.py      # about 5 minutes on 2 cores
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_heavytail as kht  # noqa: E402

L = keras.layers


def lively(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.uniform(-0.5, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n))
    return model


def flops(model):
    """2 x multiply-adds of every Dense and convolution, at batch size 1."""
    total = 0
    for layer in model.layers:
        out = layer.output.shape
        positions = int(np.prod(out[1:-1])) if len(out) > 2 else 1
        if isinstance(layer, L.DepthwiseConv2D):
            total += positions * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, L.SeparableConv2D):
            total += positions * int(np.prod(layer.depthwise_kernel.shape))
            total += positions * int(np.prod(layer.pointwise_kernel.shape))
        elif isinstance(layer, (L.Conv2D, L.Dense)):
            total += positions * int(np.prod(layer.kernel.shape))
    return 2 * total


def measure(name, model, x, tmp):
    """One row per ratio; `.tflite` paths under `row["paths"]`, not yet timed."""
    rows = []
    for ratio in (0.0, 0.3, 0.5):
        pruned = kht.prune(model, ratio, structure="neuron") if ratio else model
        small = kht.shrink(pruned) if ratio else model
        diff = float(
            np.max(np.abs(small.predict(x, verbose=0) - pruned.predict(x, verbose=0)))
        )
        row = {
            "model": name,
            "ratio": ratio,
            "params": small.count_params(),
            "mflops": flops(small) / 1e6,
            "diff": diff,
            "paths": {},
        }
        for quantize in (None, "int8"):
            key = quantize or "float32"
            path = Path(tmp) / f"{name.split()[0]}_{ratio}_{key}.tflite"
            report = kht.export_tflite(
                small, path, sparse=False, quantize=quantize, representative_data=x
            )
            row[f"bytes_{key}"] = report.bytes
            row["paths"][key] = path
        rows.append(row)
        print({k: v for k, v in row.items() if k != "paths"}, flush=True)
    return rows


def time_interleaved(rows, rounds=5, runs=100):
    """Median over `rounds` interleaved rounds of each file's median latency."""
    results = {}
    for _ in range(rounds):
        for i, row in enumerate(rows):
            for key, path in row["paths"].items():
                timing = kht.benchmark_tflite(path, num_threads=1, runs=runs)
                results.setdefault((i, key), []).append(timing["median_ms"])
    for (i, key), values in results.items():
        rows[i][f"ms_{key}"] = float(np.median(values))


def main():
    keras.utils.set_random_seed(0)
    models = [
        (
            "MobileNetV2 a0.35 96x96",
            keras.applications.MobileNetV2(
                input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10,
                classifier_activation=None,
            ),
        ),
        (
            "ResNet50 64x64",
            keras.applications.ResNet50(
                input_shape=(64, 64, 3), weights=None, classes=10,
                classifier_activation=None,
            ),
        ),
    ]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            lively(model)
            shape = (64,) + tuple(model.inputs[0].shape[1:])
            x = np.random.default_rng(0).normal(size=shape).astype("float32")
            rows += measure(name, model, x, tmp)
        time_interleaved(rows)
    print(
        "\n| model | channels removed | parameters | MFLOPs | float32 bytes | int8 bytes "
        "| float32 ms | int8 ms | max abs(shrunk - masked) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['ratio']:.0%} | {r['params']:,} | {r['mflops']:.1f} "
            f"| {r['bytes_float32']:,} | {r['bytes_int8']:,} | {r['ms_float32']:.2f} "
            f"| {r['ms_int8']:.2f} | {r['diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
