"""Deployment bundles: the four LiteRT variants of a model, their cards, an index.

Builds on `pruning`, `shrink` and `export`: prune, shrink, convert, evaluate
and time in LiteRT, and write a model card beside every file.
"""

import json
from pathlib import Path

from keras_heavytail.export.cards import format_latency
from keras_heavytail.export.cards import model_card
from keras_heavytail.export.litert import benchmark_tflite
from keras_heavytail.export.litert import evaluate_tflite
from keras_heavytail.export.litert import export_tflite
from keras_heavytail.pruning.checkpoints import array_digest
from keras_heavytail.pruning.checkpoints import file_digest
from keras_heavytail.pruning.checkpoints import fingerprint
from keras_heavytail.pruning.checkpoints import weights_digest

VARIANTS = ("dense_float32", "pruned_sparse_float32", "pruned_sparse_int8", "shrunk_int8")


def _row_from_card(directory, name, key):
    """The row of a variant already exported from these weights, or `None`."""
    path, card_path = directory / f"{name}.tflite", directory / f"{name}.json"
    if not (path.is_file() and card_path.is_file()):
        return None
    try:
        card = json.loads(card_path.read_text())
        if card["variants_key"] != key or card["file_digest"] != file_digest(path):
            return None
        return _row(name, {**card["export"], "path": str(path)}, card["litert_evaluation"],
                    card["litert_latency"], card["hidden_neurons"], card["pruning"])  # fmt: skip
    except (ValueError, KeyError, TypeError):  # an edited or older card: export again
        return None


def _row(name, export, evaluation, latency, hidden, pruned):
    """One variant's row, from its export report (as a dict) and measurements."""
    return {
        "variant": name, "path": str(export["path"]), "bytes": export["bytes"],
        "gzip_bytes": export["gzip_bytes"], "weight_sparsity": export["weight_sparsity"],
        "hidden_neurons": hidden, "pruning": pruned,
        "litert_accuracy": evaluation["accuracy"], "median_ms": latency["median_ms"],
        "runtime": evaluation["runtime"],
    }  # fmt: skip


def _plans(model, entry_ratio, neuron_ratio):
    """The four variants: (name, model, export options)."""
    from keras_heavytail.pruning import one_shot as pruning
    from keras_heavytail.pruning.shrinking import shrink

    entry_pruned = pruning.prune(model, entry_ratio, structure="entry")
    shrunk = shrink(pruning.prune(model, neuron_ratio, structure="neuron"))
    return [
        ("dense_float32", model, dict(sparse=False)),
        ("pruned_sparse_float32", entry_pruned, dict(sparse=True)),
        (
            "pruned_sparse_int8",
            entry_pruned,
            dict(sparse=True, quantize="int8", per_channel=False),
        ),
        ("shrunk_int8", shrunk, dict(sparse=False, quantize="int8")),
    ]


def export_variants(
    model,
    directory,
    x_calibration,
    x_test,
    y_test,
    *,
    from_logits=False,
    entry_ratio=0.9,
    neuron_ratio=0.7,
    training=None,
    source="keras-heavytail",
    dataset=None,
    num_threads=1,
    runs=200,
):
    """Exports the four deployment variants of a model, each with its card.

    1. `dense_float32`: the model as trained.
    2. `pruned_sparse_float32`: `entry_ratio` of every hidden kernel's
       entries pruned, stored sparsely.
    3. `pruned_sparse_int8`: the same, full-integer quantised with one scale
       per tensor (per-unit scales add 12 bytes per unit and tensor).
    4. `shrunk_int8`: `neuron_ratio` of the hidden neurons pruned, then
       removed by `shrink` (a smaller dense model: the fast one), int8.

    Each `.tflite` is evaluated and timed in LiteRT and gets a model card.
    A variant whose file and card were written from the same weights and
    arguments (a resumed run) is read back from its card, not made again;
    only the others are exported.

    Args:
        model: a trained Keras 3 classifier.
        directory: where the files go.
        x_calibration: inputs for int8 calibration (a few hundred).
        x_test, y_test: the evaluation split.
        from_logits: whether the model outputs logits (for the loss in the
            cards). Defaults to `False`.
        entry_ratio: entry sparsity of variants 2 and 3. Defaults to `0.9`.
        neuron_ratio: share of hidden neurons removed in variant 4.
            Defaults to `0.7`.
        training: training settings for the cards. Defaults to `None`.
        source: the cards' source line. Defaults to `"keras-heavytail"`.
        dataset: what the cards say about the data (name, split, preprocessing),
            e.g. `Dataset.summary()`. Defaults to `None`.
        num_threads: LiteRT threads for timing. Defaults to `1`.
        runs: timed invocations per model. Defaults to `200`.

    Returns:
        A list of dicts, one per variant: name, path, bytes, gzip bytes,
        weight sparsity, hidden neurons, LiteRT accuracy, latency, runtime.
    """
    from keras_heavytail.pruning.graph import ModelGraph

    directory = Path(directory)
    key = fingerprint(weights=weights_digest(model), entry_ratio=entry_ratio,
                      neuron_ratio=neuron_ratio, from_logits=from_logits, runs=runs,
                      data=array_digest(x_calibration, x_test, y_test),
                      num_threads=num_threads)  # fmt: skip
    done = {name: _row_from_card(directory, name, key) for name in VARIANTS}
    if all(done.values()):
        return list(done.values())
    rows = []
    for name, variant, options in _plans(model, entry_ratio, neuron_ratio):
        if done[name] is not None:  # this variant's file and card still hold
            rows.append(done[name])
            continue
        report = export_tflite(
            variant,
            directory / f"{name}.tflite",
            representative_data=x_calibration,
            **options,
        )
        evaluation = evaluate_tflite(
            report.path,
            x_test,
            y_test,
            num_threads=num_threads,
            from_logits=from_logits,
        )
        latency = benchmark_tflite(report.path, num_threads=num_threads, runs=runs)
        hidden = [
            layer.kernel.shape[-1] for layer in ModelGraph(variant).kernel_layers[:-1]
        ]
        pruned = {
            "entry_ratio": entry_ratio if "pruned" in name else 0.0,
            "neuron_ratio": neuron_ratio if "shrunk" in name else 0.0,
        }
        model_card(
            report.path,
            source=source,
            training=training,
            export=report,
            evaluation=evaluation,
            benchmark=latency,
            dataset=dataset,
            variant=name,
            hidden_neurons=hidden,
            parameters=int(variant.count_params()),
            pruning=pruned,
            variants_key=key,
            file_digest=file_digest(report.path),
        )
        rows.append(_row(name, report.to_dict(), evaluation, latency, hidden, pruned))
    return rows


def variants_table(rows):
    """A markdown table of `export_variants` rows, sizes relative to the first."""
    base_bytes, base_ms = rows[0]["bytes"], rows[0]["median_ms"]
    lines = [
        "| variant | bytes | gzip bytes | x smaller | LiteRT accuracy | 1-thread latency | x faster | runtime |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['bytes']:,} | {r['gzip_bytes']:,} | "
            f"{base_bytes / r['bytes']:.1f} | {r['litert_accuracy']:.4f} | "
            f"{format_latency(r['median_ms'])} | {base_ms / r['median_ms']:.1f} | {r['runtime']} |"
        )
    return "\n".join(lines)


def write_index(root):
    """Writes `root/README.md`: a table of every `.tflite` under `root` and its card."""
    root = Path(root)
    lines = [
        f"# {root.resolve().name}",
        "",
        "Models exported by keras-heavytail, each with its model card (`.json`",
        "beside it: training settings, sparsity, size, accuracy measured in",
        "LiteRT, latency, library versions). Regenerated by the commands that",
        "write them (`keras-heavytail demo`, `python examples/deploy_edge.py`).",
        "",
        "| file | variant | bytes | hidden neurons | LiteRT accuracy | 1-thread latency | dataset |",
        "| --- | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for path in sorted(root.rglob("*.tflite")):
        card_path = path.with_suffix(".json")
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        evaluation = card.get("litert_evaluation") or {}
        latency = card.get("litert_latency") or {}
        dataset = (card.get("dataset") or {}).get("name", "")
        accuracy = evaluation.get("accuracy")
        median = latency.get("median_ms")
        lines.append(
            f"| `{path.relative_to(root)}` | {card.get('variant', '')} | {path.stat().st_size:,} | "
            f"{card.get('hidden_neurons', '')} | "
            f"{'' if accuracy is None else f'{accuracy:.4f}'} | "
            f"{'' if median is None else format_latency(median)} | {dataset} |"
        )
    from keras_heavytail import files

    files.write_text(root / "README.md", "\n".join(lines) + "\n")
