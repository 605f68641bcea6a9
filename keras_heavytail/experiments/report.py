"""Writing a protocol run as report.md, report.json and PNG plots."""

import json
import math

from keras_heavytail import compressibility

# The columns a summary table shows, and what each one means.
SUMMARY_COLUMNS = (
    "test_accuracy",
    "neurons_at_iso_accuracy",
    "iso_neuron_ratio_vs_sgd",
    "test_accuracy_at_iso",
    "neurons_at_iso_accuracy_finetuned",
    "iso_neuron_ratio_vs_sgd_finetuned",
    "tail_index",
    "paper_prune_ratio",
    "paper_prune_ratio_l1",
    "parameter_prune_ratio",
    "accuracy_at_criterion",
    "mean_neuron_norm",
)
COLUMN_HELP = {
    "test_accuracy": "accuracy of the dense model on the test split",
    "val_accuracy": "accuracy on the validation split carved from training data",
    "neurons": "hidden units of the dense model",
    "neurons_at_iso_accuracy": "fewest hidden units whose one-shot pruned model keeps "
    "validation accuracy within the tolerance of the dense SGD model's "
    "(bisection on the validation split)",
    "params_at_iso_accuracy": "parameters of that pruned model once shrunk",
    "test_accuracy_at_iso": "test accuracy of that pruned model",
    "ratio_at_iso": "the pruning fraction found",
    "iso_neuron_ratio_vs_sgd": "neurons_at_iso_accuracy over SGD's for the same seed, "
    "averaged over seeds (so not the ratio of the averaged counts): below 1 the "
    "noise pays",
    "neurons_at_iso_accuracy_finetuned": "the same after a masked fine-tune of each "
    "candidate (plain SGD, pruned weights held at zero)",
    "iso_neuron_ratio_vs_sgd_finetuned": "the fine-tuned count over SGD's fine-tuned count",
    "tail_index": "block-sum tail index of the hidden kernels' entries (2 = Gaussian)",
    "neuron_tail_index": compressibility.COLUMN_HELP["neuron_tail_index"],
    "paper_prune_ratio": "share of hidden units the paper's criterion prunes "
    "(squared norms within 10% of the layer's)",
    "paper_prune_ratio_l1": "the same criterion on plain norms (L1 version)",
    "parameter_prune_ratio": "share of kernel parameters the paper's criterion removes",
    "accuracy_at_criterion": "test accuracy after pruning by the paper's criterion",
    "mean_neuron_norm": "mean l2 norm of hidden units' incoming weights (how far "
    "the noise walked)",
    "best_k_error@0.1": "relative l2 error of keeping the largest 10% of entries",
    "train_seconds": "training time",
    "epochs_run": "epochs trained (fewer when a stopping rule fired)",
    "steps": "optimizer steps trained",
}


def _compare(mine, base, seeds):
    """better / worse / no difference, honest about the spread over seeds."""
    difference = mine[0] - base[0]
    spread = max(mine[1], base[1])
    if difference == 0 or (seeds > 1 and abs(difference) <= spread):
        return "no difference" if seeds > 1 else "equal"
    word = "better" if difference > 0 else "worse"
    return word if seeds > 1 else f"{word}, one seed"


def findings(result):
    """What the numbers say, baseline against each heavy-tailed setting."""
    base = result.table[0]
    lines = []
    for row in result.table[1:]:
        parts = [
            f"**{row['setting']}** vs **{base['setting']}**: test accuracy "
            f"{row['test_accuracy'][0]:.3f} vs {base['test_accuracy'][0]:.3f}",
            f"prunable neurons by the paper's criterion {row['paper_prune_ratio'][0]:.2f} "
            f"vs {base['paper_prune_ratio'][0]:.2f} (L1 version "
            f"{row['paper_prune_ratio_l1'][0]:.2f} vs {base['paper_prune_ratio_l1'][0]:.2f})",
        ]
        for key in ("accuracy@70%pruned", "accuracy@90%pruned"):
            if key in row:
                verdict = _compare(row[key], base[key], row["seeds"])
                parts.append(
                    f"accuracy with {key[9:11]}% of neurons pruned "
                    f"{row[key][0]:.3f} vs {base[key][0]:.3f} ({verdict})"
                )
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def column_definitions(columns):
    """Markdown bullet lines defining each column shown."""
    return [f"- `{c}`: {COLUMN_HELP[c]}" for c in columns if c in COLUMN_HELP]


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _plots(output, result, data):
    from keras_heavytail.experiments import iso_accuracy
    from keras_heavytail.experiments import plots
    from keras_heavytail.pruning import one_shot as pruning

    ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    curves, kernels = {}, {}
    for (label, seed), model in result.models.items():
        if seed != result.config["seeds"][0]:
            continue
        curves[label] = iso_accuracy.pruning_curve(
            model, data.x_test, data.y_test, ratios, from_logits=True
        )
        kernels[label] = pruning.prunable_layers(model)[0].kernel.numpy()
    seed = result.config["seeds"][0]
    plots.plot_pruning_curves(
        curves, output / "pruning_curves.png",
        title=f"Accuracy after one-shot pruning (seed {seed}; the report's table: all seeds)",
    )  # fmt: skip
    plots.plot_norm_tails(kernels, output / "neuron_norm_tails.png")


def _export_lines(exports):
    from keras_heavytail.export import deploy

    lines = [
        "",
        "## Exported to LiteRT (accuracy measured in the interpreter)",
        "",
        "Variants: `dense_float32` as trained; `pruned_sparse_*`: 90% of every "
        "hidden kernel's entries zeroed and stored sparsely; `shrunk_int8`: 70% of "
        "hidden neurons pruned and removed by `shrink`, int8. Latency: one example, "
        "one thread, median µs in LiteRT.",
        "",
    ]
    for label, rows in exports.items():
        lines += [f"### {label}", "", deploy.variants_table(rows), ""]
    return lines


def write_report(output, result, data, exports=None, title="keras-heavytail report"):
    """report.md, report.json and the PNG plots of a protocol run."""
    from keras_heavytail import files

    output.mkdir(parents=True, exist_ok=True)
    summary = result.config["dataset"]
    protocol = result.config["protocol"]
    columns = [c for c in SUMMARY_COLUMNS if c in result.table[0]]
    _plots(output, result, data)
    lines = [
        f"# {title}",
        "",
        *[f"**{line}**" for line in result.headline()],
        "",
        f"Dataset: {summary['name']} ({summary['train']} train, of which "
        f"{protocol['validation_fraction']:.0%} held out for validation; "
        f"{summary['test']} test; {summary['source']}). Preprocessing: "
        f"{summary['preprocessing']}.",
        f"Protocol `{protocol['name']}`: {protocol['architecture']}, width "
        f"{protocol['width']}, bias {protocol['use_bias']}; SGD lr {protocol['lr']}, "
        f"batch {protocol['batch_size']}, at most {protocol['epochs']} epochs"
        + (
            f", stopped at {protocol['target_train_accuracy']:.0%} accuracy on the full "
            f"training set (checked every {protocol['check_every']} steps)"
            if protocol["target_train_accuracy"]
            else ""
        )
        + f"; seeds {result.config['seeds']} (mean ± sample std over seeds). "
        f"Iso-accuracy tolerance: {100 * protocol['iso_tolerance']:g} accuracy point(s).",
        "",
        "## What it shows",
        "",
        *findings(result),
        "",
        "## Numbers",
        "",
        result.markdown(columns),
        "",
        *column_definitions(columns),
        "",
        "Every number of every run: `report.json` and `runs.jsonl`.",
        "",
        "![pruning curves](pruning_curves.png)",
        "![neuron norm tails](neuron_norm_tails.png)",
    ]
    if exports:
        lines += _export_lines(exports)
    files.write_text(output / "report.md", "\n".join(lines) + "\n")
    payload = _json_safe({**result.to_dict(), "exports": exports or {}})
    files.write_text(
        output / "report.json",
        json.dumps(payload, indent=1, default=str, allow_nan=False) + "\n",
    )
