"""Compress to a budget on Fashion-MNIST: MobileNetV2 and a CIFAR-style ResNet.

For each architecture and dense optimizer (SGD, HeavyTailSGD) and seed:
train the dense model, export it (float32 and int8 LiteRT), then
`kht.compress` it to each MACs budget with each importance criterion, with
and without distillation, and export the result to int8. Every row: LiteRT
test accuracy, MACs, parameters, int8 bytes, 1-thread latency, and the
seconds each step took. Rows go to `--output/rows.jsonl` (a rerun skips the
rows it has), a table to `--output/compress.md` and a Pareto plot
(accuracy against MACs and against latency) to `--output/pareto.png`.

    apt-get install dataset-fashion-mnist   # the IDX .gz files
    python benchmarks/compress.py --data /usr/share/datasets/fashion-mnist

Fashion-MNIST images are 28x28x1; MobileNetV2 (alpha 0.35, from scratch)
gets them zero-padded to 32x32. Nothing here runs in the tests: it needs
the real data and tens of minutes on 2 cores.
"""

import argparse
import itertools
import json
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


def architecture(name, input_shape, classes, seed):
    keras.utils.set_random_seed(seed)
    if name.startswith("resnet"):
        depth = {"resnet8": 1, "resnet14": 2, "resnet20": 3}[name]
        return kht.experiments.build_model("resnet", input_shape, classes, depth=depth, seed=seed)
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 1), alpha=0.35, weights=None, classes=classes,
        classifier_activation=None,
    )  # fmt: skip
    for layer in model.layers:  # Keras' 0.999 needs thousands of steps to settle
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def images(x, arch):
    x = x.reshape(-1, 28, 28, 1)
    return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))) if arch == "mobilenet" else x


def optimizer(name, seed, lr=0.05):
    if name == "SGD":
        return keras.optimizers.SGD(lr, momentum=0.9)
    return kht.HeavyTailSGD(lr, momentum=0.9, seed=seed)


def litert(model, x_cal, x_test, y_test, quantize, runs=100):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.tflite")
        kht.export_tflite(model, path, quantize=quantize, sparse=False,
                          representative_data=x_cal[:300])  # fmt: skip
        accuracy = kht.evaluate_tflite(path, x_test, y_test, from_logits=True)["accuracy"]
        latency = kht.benchmark_tflite(path, num_threads=1, runs=runs)["median_ms"]
        return {"litert_accuracy": accuracy, "bytes": os.path.getsize(path),
                "latency_ms": latency}  # fmt: skip


def describe(model, x_cal, x_test, y_test, quantize):
    row = {**describe_cost(model),
           "keras_accuracy": kht.metrics.accuracy(model, x_test, y_test)}  # fmt: skip
    row.update(litert(model, x_cal, x_test, y_test, quantize))
    return row


def model_file(out, key):
    return out / (key.replace("|", "_") + ".keras")


def latency_pass(out, rows, x_train, runs=200):
    """Every row's latency again, on an idle machine, plus a floor per arch;
    int8 files calibrated on the same 300 training images as the first pass."""
    rows = [r for r in rows if r["budget"] != "floor"]
    for row in rows:
        model = keras.models.load_model(model_file(out, row["key"]), compile=False)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "m.tflite")
            kht.export_tflite(model, path, sparse=False, quantize=(
                None if row["quantize"] == "float32" else "int8"),
                representative_data=images(x_train, row["arch"])[:300])
            row["latency_ms"] = kht.benchmark_tflite(path, num_threads=1, runs=runs)[
                "median_ms"]  # fmt: skip
        row["latency_pass"] = True
        print(row["key"], row["latency_ms"], flush=True)
    for arch in sorted({r["arch"] for r in rows}):
        dense = next(r for r in rows if r["arch"] == arch and r["budget"] == 1.0)
        model = keras.models.load_model(model_file(out, dense["key"]), compile=False)
        graph = kht.ModelGraph(model)
        masks = kht.pruning.one_shot.group_masks(graph, 1.0, round_to=ROUND_TO, min_channels=ROUND_TO)
        floor = kht.shrink(kht.pruning.apply_masks(model, masks, graph))
        x = images(x_train, arch)[:300]
        row = {"key": f"{arch}|floor", "arch": arch, "optimizer": "-", "seed": "-",
               "budget": "floor", "importance": "-", "distill": "-", "quantize": "int8",
               "seconds": None, "latency_pass": True, **describe_cost(floor),
               **litert(floor, x, x[:1], np.zeros(1, "int64"), "int8", runs),
               "litert_accuracy": float("nan")}  # fmt: skip
        rows = [r for r in rows if r["key"] != row["key"]] + [row]
        print(json.dumps(row), flush=True)
    return rows


def describe_cost(model):
    cost = kht.count_macs(model)
    return {"macs": cost.macs, "params": cost.params}


ROUND_TO = 8


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--archs", nargs="+", default=["resnet14", "mobilenet"])
    parser.add_argument("--optimizers", nargs="+", default=["SGD", "HeavyTailSGD"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.05,
                        help="of the dense model's SGD (momentum 0.9)")  # fmt: skip
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--importances", nargs="+", default=["magnitude", "bn_scale", "taylor"])
    parser.add_argument("--distill", nargs="+", type=float, default=[0.0, 0.5])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--limit", type=int, help="examples per split (a quick run)")
    parser.add_argument("--output", default="results/compress")
    parser.add_argument("--latency-pass", action="store_true",
                        help="only measure every saved model's latency again")  # fmt: skip
    args = parser.parse_args()
    out = Path(args.output)
    if args.latency_pass:
        global ROUND_TO
        ROUND_TO = args.round_to
        rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
        data = kht.experiments.load_dataset("fashion_mnist", data_dir=args.data)
        rows = latency_pass(out, rows, data.x_train)
        files.write_text(out / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_table(rows, out)
        return
    data = kht.experiments.load_dataset("fashion_mnist", data_dir=args.data, limit=args.limit)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "rows.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {row["key"] for row in rows}
    for arch, opt, seed in itertools.product(args.archs, args.optimizers, args.seeds):
        x, x_test = images(data.x_train, arch), images(data.x_test, arch)
        x_fit, y_fit, x_val, y_val = x[6000:], data.y_train[6000:], x[:6000], data.y_train[:6000]
        if args.limit:
            cut = len(x) // 8
            x_fit, y_fit, x_val, y_val = x[cut:], data.y_train[cut:], x[:cut], data.y_train[:cut]
        model_path = out / f"{arch}_{opt}_{seed}.keras"
        start = time.perf_counter()
        if model_path.exists():
            model = keras.models.load_model(model_path)
            train_s = None
        else:
            model = architecture(arch, x.shape[1:], data.num_classes, seed)
            model.compile(optimizer(opt, seed, args.lr),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
            model.fit(x_fit, y_fit, epochs=args.epochs, batch_size=64, verbose=2)
            train_s = time.perf_counter() - start
            files.save_model(model, model_path)
        base = {"arch": arch, "optimizer": opt, "seed": seed}
        for quantize in ("float32", "int8"):
            key = f"{arch}|{opt}|{seed}|dense|{quantize}"
            if key in done:
                continue
            row = {"key": key, **base, "budget": 1.0, "importance": "-", "distill": "-",
                   "quantize": quantize, "seconds": train_s,
                   **describe(model, x_fit, x_test, data.y_test,
                              None if quantize == "float32" else "int8")}  # fmt: skip
            rows.append(row)
            files.save_model(model, model_file(out, key))
            files.write_text(log, "".join(json.dumps(r) + "\n" for r in rows))
            print(json.dumps(row), flush=True)
        for budget, importance, distill in itertools.product(
            args.budgets, args.importances, args.distill
        ):
            key = f"{arch}|{opt}|{seed}|{budget}|{importance}|{distill}"
            if key in done:
                continue
            start = time.perf_counter()
            result = kht.compress(
                model, (x_fit, y_fit), (x_val, y_val), kht.Budget(macs=budget),
                importance=importance, steps=args.steps, round_to=args.round_to,
                fine_tune_epochs=args.fine_tune_epochs, distill=distill,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            row = {"key": key, **base, "budget": budget, "importance": importance,
                   "distill": distill, "quantize": "int8", "seconds": seconds,
                   "val_accuracy": result.accuracy,
                   **describe(result.model, x_fit, x_test, data.y_test, "int8")}  # fmt: skip
            rows.append(row)
            files.save_model(result.model, model_file(out, key))
            files.write_text(log, "".join(json.dumps(r) + "\n" for r in rows))
            print(json.dumps(row), flush=True)
    write_table(rows, out)


def write_summary(rows, out):
    """Per architecture and budget, over seeds: mean ± std of the LiteRT test
    accuracy, its drop from the same seed's dense float32 model, the MACs
    ratio and the 1-thread speed-up over that dense model; `summary.md`."""
    def spread(values):
        values = np.asarray(values, dtype="float64")
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        return f"{values.mean():.4f} ± {std:.4f}" if values.size else "-"

    dense = {(r["arch"], r["optimizer"], r["seed"]): r for r in rows
             if r["budget"] == 1.0 and r["quantize"] == "float32"}  # fmt: skip
    lines = ["| arch | optimizer | variant | seeds | LiteRT test acc | drop vs dense f32 | "
             "MACs ratio | 1-thread speed-up | seconds (compress / dense training) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    groups = {}
    for r in rows:
        if r["budget"] == "floor" or (r["arch"], r["optimizer"], r["seed"]) not in dense:
            continue
        variant = (f"dense {r['quantize']}" if r["budget"] == 1.0 else
                   f"budget {r['budget']} {r['importance']} distill {r['distill']}")  # fmt: skip
        groups.setdefault((r["arch"], r["optimizer"], variant), []).append(r)
    for (arch, opt, variant), mine in sorted(groups.items()):
        base = [dense[(r["arch"], r["optimizer"], r["seed"])] for r in mine]
        times = [r["seconds"] / b["seconds"] for r, b in zip(mine, base)
                 if r["budget"] != 1.0 and r["seconds"] and b["seconds"]]  # fmt: skip
        lines.append(
            f"| {arch} | {opt} | {variant} | {len(mine)} | "
            f"{spread([r['litert_accuracy'] for r in mine])} | "
            f"{spread([b['litert_accuracy'] - r['litert_accuracy'] for r, b in zip(mine, base)])} | "
            f"{spread([r['macs'] / b['macs'] for r, b in zip(mine, base)])} | "
            f"{spread([b['latency_ms'] / r['latency_ms'] for r, b in zip(mine, base)])} | "
            f"{spread(times) if times else '-'} |"
        )
    files.write_text(out / "summary.md", "\n".join(lines) + "\n")


def write_table(rows, out):
    write_summary(rows, out)
    lines = ["| arch | optimizer | seed | budget | importance | distill | quantize | MACs | "
             "params | bytes | LiteRT acc | 1-thread ms | seconds |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        lines.append(
            f"| {r['arch']} | {r['optimizer']} | {r['seed']} | {r['budget']} | "
            f"{r['importance']} | {r['distill']} | {r['quantize']} | {r['macs']:,} | "
            f"{r['params']:,} | {r['bytes']:,} | {r['litert_accuracy']:.4f} | "
            f"{r['latency_ms']:.3f} | {seconds} |"
        )
    files.write_text(out / "compress.md", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (arch, opt), color in zip(
        sorted({(r["arch"], r["optimizer"]) for r in rows}), itertools.cycle("bgrcmyk")
    ):
        mine = [r for r in rows if (r["arch"], r["optimizer"]) == (arch, opt)]
        for ax, key, label in ((axes[0], "macs", "MACs"), (axes[1], "latency_ms",
                                                           "1-thread int8 latency (ms)")):  # fmt: skip
            small = [r for r in mine if r["budget"] != "floor" and r["budget"] < 1]
            ax.scatter([r[key] for r in small], [r["litert_accuracy"] for r in small],
                       c=color, s=18, label=f"{arch} {opt} compressed")  # fmt: skip
            dense = [r for r in mine if r["budget"] == 1 and r["quantize"] == "float32"]
            ax.scatter([r[key] for r in dense], [r["litert_accuracy"] for r in dense],
                       c=color, marker="*", s=160, edgecolors="k",
                       label=f"{arch} {opt} dense float32")  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("LiteRT test accuracy")
    axes[0].legend(fontsize=7)
    fig.suptitle("Fashion-MNIST: accuracy against compute (int8 LiteRT, compressed)")
    fig.tight_layout()
    files.save_figure(fig, out / "pareto.png", dpi=110)


if __name__ == "__main__":
    main()
