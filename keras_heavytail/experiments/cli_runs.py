"""The `keras-heavytail` commands that run the protocol into a folder.

`demo` (the main job: SGD against heavy-tailed SGD on the embedded digits,
exported to LiteRT), `reproduce` (the paper's protocol on a dataset) and
`sweep` (a grid of noise settings). Each refuses a folder that holds a file
it would write (`FOLDER_WRITES`), resumes a killed run from its run log, and
imports Keras only when it runs.
"""

from keras_heavytail.experiments import cli_io

# What `demo` and `reproduce` write into --output (beside their run log).
REPORT_FILES = ("report.md", "report.json", "pruning_curves.png", "neuron_norm_tails.png", "models")
# What each folder-writing command writes: a folder holding one of them is refused.
FOLDER_WRITES = {
    "demo": REPORT_FILES + ("README.md", "sgd", "heavytail"),
    "reproduce": REPORT_FILES,
    "sweep": ("sweep.md", "sweep.json", "sweep.png"),
}


def cmd_demo(args):
    from keras_heavytail.experiments import datasets
    from keras_heavytail.experiments import report
    from keras_heavytail.experiments import runner as experiments
    from keras_heavytail.export import deploy

    output = cli_io.output_folder(args.output, FOLDER_WRITES["demo"])
    data = datasets.load_dataset("digits", seed=0)
    settings = experiments.default_settings()
    protocol = experiments.Protocol(
        width=args.width, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs
    )
    seeds = tuple(range(args.seeds))
    print(
        f"Training {len(settings)} settings x {len(seeds)} seeds on the embedded "
        f"digits into {output} ...",
        flush=True,
    )
    result = experiments.run_protocol(data, settings, protocol, seeds, output=output)
    print("Summary:")
    for line in result.headline():
        print(line)
    print(result.markdown(report.SUMMARY_COLUMNS))
    exports = {}
    for setting in settings:
        name = "sgd" if setting.noise is None else "heavytail"
        print(f"Exporting {setting.label} to LiteRT ...", flush=True)
        exports[setting.label] = deploy.export_variants(
            result.models[(setting.label, seeds[0])],
            output / name,
            data.x_train[:500],
            data.x_test,
            data.y_test,
            from_logits=True,
            training={**setting.summary(), **vars(protocol), "seed": seeds[0]},
            source="keras-heavytail demo",
            dataset={**data.summary(), "split_seed": 0},
            runs=args.runs,
        )
        print(deploy.variants_table(exports[setting.label]))
    report.write_report(
        output,
        result,
        data,
        exports,
        title="keras-heavytail demo: SGD vs heavy-tailed SGD",
    )
    deploy.write_index(output)
    print(f"Report: {output / 'report.md'} (report.json, plots, .tflite models, cards)")


def cmd_reproduce(args):
    from keras_heavytail.experiments import report
    from keras_heavytail.experiments import runner as experiments

    output = cli_io.output_folder(args.output, FOLDER_WRITES["reproduce"])
    data = cli_io.load_data(args)
    result = experiments.run_protocol(
        data, cli_io.settings(args), cli_io.protocol(args, scores=("magnitude", "path")),
        tuple(args.seeds), output=output,
    )  # fmt: skip
    for line in result.headline():
        print(line)
    print(result.markdown(report.SUMMARY_COLUMNS))
    report.write_report(
        output, result, data, title=f"keras-heavytail reproduce: {args.dataset}"
    )
    print(f"Report: {output / 'report.md'}")


def cmd_sweep(args):
    from keras_heavytail.experiments import sweep

    output = cli_io.output_folder(args.output, FOLDER_WRITES["sweep"])
    data = cli_io.load_data(args)
    grid = sweep.Grid(
        sigma=args.sigma, alpha=args.alpha, noise=args.noise, anneal=args.anneal,
        sigma_scale=args.sigma_scale, width=args.width, protocol=args.protocol, seeds=args.seeds,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        fine_tune_epochs=args.fine_tune_epochs,
    )  # fmt: skip
    result = sweep.run_sweep(data, grid, output)
    print(result.markdown())
    print(f"Table and plot: {output / 'sweep.md'}, {output / 'sweep.png'}")
