"""Size and LiteRT latency of the exported variants, side by side in one run.

Trains the deployment model of `examples/deploy_edge.py` (one hidden layer of
2000 units on the embedded digits, HeavyTailSGD, 20 epochs), then exports:
dense float32; 90% and 95% of the hidden kernel's entries pruned, sparse
float32 and int8 (per-unit and per-tensor quantisation scales); 90% of all
kernel entries pruned (the output layer too), sparse int8; and the
model with 70% of its hidden neurons pruned and removed (`shrink`), float32
and int8. Latency is single-example, one thread, median over 5 interleaved
rounds of 300 invocations each, so drift hits every file alike.

    python benchmarks/edge_export.py      # about 1 minute
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_heavytail as kht  # noqa: E402
from keras_heavytail.export import litert as export  # noqa: E402


def main():
    data = kht.experiments.load_dataset("digits")
    model = kht.experiments.build_model("mlp", data.input_shape, 10, width=2000, seed=0)
    optimizer = kht.HeavyTailSGD(0.05, seed=0)  # alpha, sigma, noise: defaults
    optimizer.exclude_from_noise(kht.paper_exclusions(model))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data.x_train, data.y_train, batch_size=64, epochs=20, verbose=0)
    shrunk = kht.shrink(kht.prune(model, 0.7, structure="neuron"))
    variants = [("dense float32", model, {"sparse": False})]
    for ratio in (0.9, 0.95):
        pruned = kht.prune(model, ratio)
        variants += [
            (f"{ratio:.0%} hidden entries pruned, sparse float32", pruned, {}),
            (
                f"{ratio:.0%} hidden entries pruned, sparse int8",
                pruned,
                {"quantize": "int8"},
            ),
            (
                f"{ratio:.0%} hidden entries pruned, sparse int8 per-tensor",
                pruned,
                {"quantize": "int8", "per_channel": False},
            ),
        ]
    everything = kht.prune(model, 0.9, include_output=True)
    variants.append(
        (
            "90% of all entries pruned, sparse int8 per-tensor",
            everything,
            {"quantize": "int8", "per_channel": False},
        )
    )
    variants += [
        ("70% neurons removed (shrink), float32", shrunk, {"sparse": False}),
        (
            "70% neurons removed (shrink), int8",
            shrunk,
            {"sparse": False, "quantize": "int8"},
        ),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, variant, options) in enumerate(variants):
            report = export.export_tflite(
                variant,
                Path(tmp) / f"{i}.tflite",
                representative_data=data.x_train[:500],
                **options,
            )
            evaluation = export.evaluate_tflite(
                report.path, data.x_test, data.y_test, from_logits=True
            )
            rows.append(
                {"name": name, "report": report, "evaluation": evaluation, "ms": []}
            )
        for _ in range(5):
            for row in rows:
                latency = export.benchmark_tflite(
                    row["report"].path, runs=300, warmup=30
                )
                row["ms"].append(latency["median_ms"])
                row["runtime"] = latency["runtime"]
    base = rows[0]
    base_ms = float(np.median(base["ms"]))
    print(
        f"Keras dense test accuracy: {model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}"
    )
    print(
        "| model | weight sparsity | bytes | x smaller | gzip bytes | x smaller (gzip) "
        "| LiteRT accuracy | median µs | x faster | runtime |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        report, ms = row["report"], float(np.median(row["ms"]))
        print(
            f"| {row['name']} | {report.weight_sparsity:.3f} | {report.bytes:,} | "
            f"{base['report'].bytes / report.bytes:.1f} | {report.gzip_bytes:,} | "
            f"{base['report'].gzip_bytes / report.gzip_bytes:.1f} | "
            f"{row['evaluation']['accuracy']:.4f} | {ms * 1e3:.2f} | {base_ms / ms:.2f} | "
            f"{row['runtime']} |"
        )


if __name__ == "__main__":
    main()
