"""Writing a protocol run as report.md, report.json and PNG plots."""

import json


def findings(result):
    """What the numbers say, baseline against each heavy-tailed setting."""
    base = result.table[0]
    lines = []
    for row in result.table[1:]:
        parts = [
            f"**{row['setting']}** vs **{base['setting']}**: test accuracy "
            f"{row['test_accuracy'][0]:.3f} vs {base['test_accuracy'][0]:.3f}",
            f"prunable neurons (paper criterion) {row['paper_prune_ratio'][0]:.2f} vs "
            f"{base['paper_prune_ratio'][0]:.2f}",
        ]
        for key in ("accuracy@70%pruned", "accuracy@90%pruned"):
            if key in row:
                verdict = "better" if row[key][0] > base[key][0] else "worse"
                parts.append(
                    f"{key.replace('accuracy@', 'accuracy with ').replace('pruned', ' of neurons pruned')} "
                    f"{row[key][0]:.3f} vs {base[key][0]:.3f} ({verdict})"
                )
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def write_report(output, result, data, exports=None, title="keras-heavytail report"):
    """report.md, report.json and the PNG plots of a protocol run."""
    from keras_heavytail import plots
    from keras_heavytail import pruning

    output.mkdir(parents=True, exist_ok=True)
    data_summary = result.config["dataset"]
    ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    curves, kernels = {}, {}
    for (label, seed), model in result.models.items():
        if seed != result.config["seeds"][0]:
            continue
        curves[label] = pruning.pruning_curve(model, data.x_test, data.y_test, ratios)
        first = pruning.prunable_layers(model)[0]
        kernels[label] = first.kernel.numpy()
    plots.plot_pruning_curves(curves, output / "pruning_curves.png")
    plots.plot_norm_tails(kernels, output / "neuron_norm_tails.png")
    lines = [
        f"# {title}",
        "",
        f"Dataset: {data_summary['name']} ({data_summary['train']} train, "
        f"{data_summary['test']} test; {data_summary['source']}).",
        f"Preprocessing: {data_summary['preprocessing']}.",
        f"Model: {result.config['architecture']}, width {result.config['width']}; "
        f"SGD lr {result.config['lr']}, batch {result.config['batch_size']}, "
        f"{result.config['epochs']} epochs, seeds {result.config['seeds']} "
        "(mean ± sample std over seeds).",
        "",
        "## What it shows",
        "",
        *findings(result),
        "",
        "Heavy-tailed noise makes the neuron norms heavy-tailed (straight lines in "
        "the log-log plot) and the paper's criterion prunes more neurons; whether "
        "accuracy after pruning follows is measured here, not assumed.",
        "",
        "## Accuracy, compressibility and one-shot neuron pruning",
        "",
        "`tail_index`: block-sum estimate on the hidden kernels (2 = Gaussian); "
        "`paper_prune_ratio`: share of neurons prunable within 10% squared error "
        "(Wan et al., 2024); `accuracy@k%pruned`: test accuracy after removing k% "
        "of hidden neurons by incoming norm, no fine-tuning.",
        "",
        result.markdown(),
        "",
        "![pruning curves](pruning_curves.png)",
        "![neuron norm tails](neuron_norm_tails.png)",
    ]
    if exports:
        from keras_heavytail import deploy

        lines += [
            "",
            "## Exported to LiteRT (accuracy measured in the interpreter)",
            "",
        ]
        for label, rows in exports.items():
            lines += [f"### {label}", "", deploy.variants_table(rows), ""]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    payload = result.to_dict()
    payload["exports"] = exports or {}
    (output / "report.json").write_text(
        json.dumps(payload, indent=1, default=str) + "\n"
    )
