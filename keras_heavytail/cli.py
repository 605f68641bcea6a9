"""The `keras-heavytail` command (also `python -m keras_heavytail`).

Subcommands: `demo` (the main job), `train`, `analyze`, `prune`, `export`,
`benchmark` and `reproduce`. Bad arguments and missing data end with one
line on stderr and exit code 2, never a traceback.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEMO_SIGMA = 0.005


class CommandError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""


def _settings(args, baseline=True):
    from keras_heavytail import experiments

    settings = [experiments.Setting("SGD")] if baseline else []
    for noise in args.noise:
        label = f"HeavyTailSGD({noise}, alpha={args.alpha:g}, sigma={args.sigma:g})"
        settings.append(
            experiments.Setting(label, noise, args.alpha, args.sigma, args.anneal)
        )
    return settings


def _fresh_log(output):
    """`output/runs.jsonl`, emptied: each finished run is appended to it."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "runs.jsonl"
    path.write_text("")
    return path


def _load(args):
    from keras_heavytail import datasets

    return datasets.load_dataset(
        args.dataset,
        data_dir=args.data,
        standardize=not args.raw_pixels,
        limit=args.limit,
    )


def _write_indexes(output):
    """The output's model index, and `saved_models/README.md` when inside it."""
    from keras_heavytail import deploy

    deploy.write_index(output)
    if output.resolve().parent.name == "saved_models":
        deploy.write_index(output.resolve().parent)


def cmd_demo(args):
    from keras_heavytail import datasets
    from keras_heavytail import deploy
    from keras_heavytail import experiments
    from keras_heavytail import report

    output = Path(args.output)
    data = datasets.load_dataset("digits", seed=0)
    settings = [
        experiments.Setting("SGD"),
        experiments.Setting(
            f"HeavyTailSGD(neuron, alpha=1.75, sigma={DEMO_SIGMA:g})",
            "neuron",
            1.75,
            DEMO_SIGMA,
        ),
    ]
    seeds = tuple(range(args.seeds))
    print(
        f"Training {len(settings)} settings x {len(seeds)} seeds on the embedded digits ..."
    )
    result = experiments.run_protocol(
        data,
        settings,
        architecture="mlp",
        width=args.width,
        lr=0.05,
        batch_size=64,
        epochs=args.epochs,
        seeds=seeds,
        log_path=_fresh_log(output),
    )
    print(result.markdown())
    exports = {}
    for setting in settings:
        model = result.models[(setting.label, seeds[0])]
        name = "sgd" if setting.noise is None else "heavytail"
        print(f"Exporting {setting.label} to LiteRT ...")
        exports[setting.label] = deploy.export_variants(
            model,
            output / name,
            data.x_train[:500],
            data.x_test,
            data.y_test,
            training={
                **vars(setting),
                "lr": 0.05,
                "batch_size": 64,
                "epochs": args.epochs,
                "seed": seeds[0],
            },
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
    _write_indexes(output)
    print(
        f"Report: {output / 'report.md'} (also report.json, PNG plots, .tflite models and cards)"
    )


def cmd_reproduce(args):
    from keras_heavytail import experiments
    from keras_heavytail import report

    data = _load(args)
    result = experiments.run_protocol(
        data,
        _settings(args),
        architecture=args.architecture,
        width=args.width,
        depth=args.depth,
        lr=args.lr,
        momentum=args.momentum,
        batch_size=args.batch_size,
        epochs=args.epochs,
        target_train_accuracy=args.target_train_accuracy,
        seeds=tuple(args.seeds),
        scores=("norm", "path"),
        log_path=_fresh_log(Path(args.output)),
    )
    print(result.markdown())
    report.write_report(
        Path(args.output),
        result,
        data,
        title=f"keras-heavytail reproduce: {args.dataset}",
    )
    print(f"Report: {Path(args.output) / 'report.md'}")


def cmd_train(args):
    from tqdm.auto import tqdm

    from keras_heavytail import experiments

    data = _load(args)
    setting = _settings(args, baseline=False)[0]
    with tqdm(total=args.epochs, desc=setting.label, unit="epoch", disable=None) as bar:
        model, seconds, ran = experiments.train_one(
            data, setting, args.architecture, args.width, args.depth, args.lr,
            args.momentum, args.batch_size, args.epochs, args.target_train_accuracy,
            args.seeds[0], progress=bar,
        )  # fmt: skip
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    model.save(args.output)
    print(
        f"{ran} epochs in {seconds:.1f} s; test accuracy {accuracy:.4f}; saved {args.output}"
    )


def _load_model(path):
    import keras

    if not Path(path).is_file():
        raise CommandError(f"no model file at {path!r}")
    return keras.saving.load_model(path)


def cmd_analyze(args):
    from keras_heavytail import compressibility

    report = compressibility.compressibility_report(
        _load_model(args.model), args.max_error
    )
    print(report.to_json(indent=1) if args.json else report)


def cmd_prune(args):
    from keras_heavytail import pruning
    from keras_heavytail.shrinking import shrink

    model = _load_model(args.model)
    if args.criterion is None and args.ratio is None:
        raise CommandError("give --ratio R or --criterion paper")
    pruned = pruning.prune(
        model,
        args.ratio,
        structure=args.structure,
        scope=args.scope,
        exclude=args.exclude,
        criterion=args.criterion,
        score=args.score,
    )
    if args.shrink:
        pruned = shrink(pruned)
    pruned.save(args.output)
    print(
        f"parameters {model.count_params():,} -> {pruned.count_params():,}; saved {args.output}"
    )


def cmd_export(args):
    from keras_heavytail import export

    model = _load_model(args.model)
    data = _load(args) if (args.quantize == "int8" or args.evaluate) else None
    report = export.export_tflite(
        model,
        args.output,
        sparse=not args.dense,
        quantize=args.quantize,
        representative_data=None if data is None else data.x_train[:500],
    )
    print(json.dumps(report.to_dict(), indent=1))
    if args.evaluate:
        print(
            json.dumps(
                export.evaluate_tflite(report.path, data.x_test, data.y_test), indent=1
            )
        )


def cmd_benchmark(args):
    from keras_heavytail import export

    print(
        json.dumps(
            export.benchmark_tflite(args.model, args.threads, args.warmup, args.runs),
            indent=1,
        )
    )


def _data_options(parser):
    from keras_heavytail.datasets import NAMES

    parser.add_argument(
        "--dataset", default="digits", choices=NAMES, help="default: digits (embedded)"
    )
    parser.add_argument("--data", help="directory with the dataset's standard files")
    parser.add_argument(
        "--limit", type=_positive_int, help="use at most this many examples"
    )
    parser.add_argument(
        "--raw-pixels", action="store_true", help="do not standardise inputs"
    )


def _training_options(parser, width=2000, epochs=10):
    from keras_heavytail.experiments import ARCHITECTURES
    from keras_heavytail.noise import STRUCTURES

    parser.add_argument("--architecture", default="mlp", choices=ARCHITECTURES)
    parser.add_argument("--width", type=_positive_int, default=width)
    parser.add_argument(
        "--depth", type=_positive_int, default=2, help="hidden layers of deep_mlp"
    )
    parser.add_argument("--epochs", type=_positive_int, default=epochs)
    parser.add_argument(
        "--target-train-accuracy", type=float, help="stop early at this train accuracy"
    )
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--alpha", type=float, default=1.75)
    parser.add_argument("--sigma", type=float, default=DEMO_SIGMA)
    parser.add_argument("--noise", nargs="+", default=["neuron"], choices=STRUCTURES)
    parser.add_argument(
        "--anneal", action="store_true", help="decay sigma linearly to 0"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-heavytail",
        description="Heavy-tailed SGD for Keras: train, measure compressibility, prune, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the main job on the embedded digits (~1-2 min)")
    p.add_argument("--output", default="saved_models/demo")
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument("--width", type=_positive_int, default=2000)
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds")
    p.add_argument(
        "--runs", type=_positive_int, default=200, help="timed LiteRT invocations"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "reproduce", help="the paper's protocol: SGD vs heavy-tailed SGD"
    )
    _data_options(p)
    _training_options(p, width=2000, epochs=10)
    p.add_argument("--output", default="results/reproduce")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("train", help="train one model and save it as .keras")
    _data_options(p)
    _training_options(p)
    p.add_argument("--output", default="model.keras")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("analyze", help="compressibility report of a .keras file")
    p.add_argument("model")
    p.add_argument(
        "--max-error", type=float, default=0.1, help="paper criterion budget"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("prune", help="one-shot pruning (and shrink) of a .keras file")
    p.add_argument("model")
    p.add_argument("--ratio", type=float)
    p.add_argument("--criterion", choices=["paper"])
    p.add_argument("--structure", default="neuron", choices=["entry", "neuron"])
    p.add_argument("--scope", default="layer", choices=["layer", "global"])
    p.add_argument("--score", default="norm", choices=["norm", "path"])
    p.add_argument("--exclude", nargs="*", default=None, help="layer names to keep")
    p.add_argument("--shrink", action="store_true", help="remove pruned neurons")
    p.add_argument("--output", default="pruned.keras")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("export", help="convert a .keras file to .tflite")
    p.add_argument("model")
    p.add_argument("--output", default="model.tflite")
    p.add_argument("--quantize", choices=["dynamic", "float16", "int8"])
    p.add_argument("--dense", action="store_true", help="no sparse storage")
    p.add_argument(
        "--evaluate", action="store_true", help="accuracy in LiteRT on --dataset"
    )
    _data_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", help="1-example latency of a .tflite in LiteRT")
    p.add_argument("model")
    p.add_argument("--threads", type=_positive_int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--runs", type=_positive_int, default=200)
    p.set_defaults(func=cmd_benchmark)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (
        CommandError,
        ValueError,
        FileNotFoundError,
        ImportError,
        RuntimeError,
    ) as error:
        message = " ".join(str(error).split())
        print(f"keras-heavytail {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
