"""The `keras-heavytail` command (also `python -m keras_heavytail`).

Subcommands: `demo` (the main job), `reproduce` (the paper's protocol),
`sweep` (a grid of noise settings), `train`, `analyze`, `prune`, `export` and
`benchmark`. Bad arguments, missing data and files that would be overwritten
end with one line on stderr and exit code 2, never a traceback. Parsing the
arguments imports no Keras: `--help` answers at once.
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from keras_heavytail import defaults


class CommandError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""


# ----------------------------------------------------------------------------
# Argument types
# ----------------------------------------------------------------------------


def _number(kind, low=None, low_open=False, high=None, high_open=False):
    """An argparse type: a finite number of `kind` within the given bounds."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        bad = value != value or value in (float("inf"), float("-inf"))
        if low is not None:
            bad |= value <= low if low_open else value < low
        if high is not None:
            bad |= value >= high if high_open else value > high
        if bad:
            lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
            hi = "" if high is None else f"{high}" + (")" if high_open else "]")
            raise argparse.ArgumentTypeError(
                f"expected a value in {lo or '(-inf'}, {hi or 'inf)'}; got {text!r}"
            )
        return value

    return parse


_positive_int = _number(int, 1)
_nonnegative_int = _number(int, 0)
_positive = _number(float, 0, low_open=True)
_nonnegative = _number(float, 0)
_fraction = _number(float, 0, high=1)
_positive_float = _number(float, 0, low_open=True)
_open_fraction = _number(float, 0, low_open=True, high=1)
_alpha = _number(float, 0, low_open=True, high=2)
_seed = _number(int, 0, high=2**31 - 1, high_open=True)


# ----------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(verbose):
    """Hides TensorFlow's and the converter's chatter on stderr unless verbose."""
    if verbose:
        yield
        return
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        import warnings

        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", module="keras")
        warnings.filterwarnings("ignore", module="tensorflow")
        yield


def _output_folder(path):
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandError(f"--output {str(path)!r} is a file; give a folder")
    return path


def _output_file(path, overwrite, suffix):
    path = Path(path)
    if path.is_dir():
        raise CommandError(f"--output {str(path)!r} is a folder; give a {suffix} file")
    if path.suffix != suffix:
        raise CommandError(f"--output must end in {suffix}. Received: {str(path)!r}")
    if path.exists() and not overwrite:
        raise CommandError(
            f"--output {str(path)!r} exists; pass --overwrite to replace it"
        )
    return path


def _load(args):
    from keras_heavytail.experiments import datasets

    return datasets.load_dataset(
        args.dataset,
        data_dir=args.data,
        standardize=not args.raw_pixels,
        limit=args.limit,
    )


def _load_model(path):
    import zipfile

    import keras

    from keras_heavytail.optimizers import heavy_tail as optimizers  # noqa: F401  registers our classes

    if not Path(path).is_file():
        raise CommandError(f"no model file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise CommandError(f"{path!r} is not a .keras file (not a zip archive)")
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises many types for broken files
        raise CommandError(f"cannot load {path!r}: {error}") from None


def _protocol(args, **extra):
    from keras_heavytail.experiments import runner as experiments

    fields = (
        "architecture", "width", "depth", "lr", "momentum", "weight_decay",
        "batch_size", "epochs", "target_train_accuracy", "fine_tune_epochs",
    )  # fmt: skip
    overrides = {
        name: getattr(args, name)
        for name in fields
        if getattr(args, name, None) is not None
    }
    if getattr(args, "no_bias", False):
        overrides["use_bias"] = False
    return experiments.Protocol.preset(
        getattr(args, "protocol", "default"), **overrides, **extra
    )


def _settings(args, baseline=True):
    from keras_heavytail.experiments import runner as experiments

    settings = [experiments.Setting("SGD")] if baseline else []
    for noise in args.noise:
        label = f"HeavyTailSGD({noise}, alpha={args.alpha:g}, sigma={args.sigma:g}"
        label += ", annealed)" if args.anneal else ")"
        settings.append(
            experiments.Setting(label, noise, args.alpha, args.sigma, args.anneal)
        )
    return settings


# ----------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------


def cmd_demo(args):
    from keras_heavytail.experiments import datasets
    from keras_heavytail.experiments import report
    from keras_heavytail.experiments import runner as experiments
    from keras_heavytail.export import deploy

    output = _output_folder(args.output)
    data = datasets.load_dataset("digits", seed=0)
    settings = experiments.default_settings()
    protocol = experiments.Protocol(width=args.width, epochs=args.epochs)
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
            training={**vars(setting), **vars(protocol), "seed": seeds[0]},
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

    output = _output_folder(args.output)
    data = _load(args)
    result = experiments.run_protocol(
        data, _settings(args), _protocol(args, scores=("magnitude", "path")),
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

    output = _output_folder(args.output)
    data = _load(args)
    grid = sweep.Grid(
        sigma=args.sigma, alpha=args.alpha, noise=args.noise, anneal=args.anneal,
        width=args.width, protocol=args.protocol, seeds=args.seeds,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
    )  # fmt: skip
    result = sweep.run_sweep(data, grid, output)
    print(result.markdown())
    print(f"Table and plot: {output / 'sweep.md'}, {output / 'sweep.png'}")


def _backup_dir(args, output):
    """Where a killed `train` keeps its last epoch: beside `output`, per arguments.

    A rerun with the same arguments resumes from it (`BackupAndRestore`);
    other arguments get another folder, so they never mix.
    """
    import hashlib

    asked = {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in ("func", "output", "overwrite", "verbose")
    }
    digest = hashlib.sha256(json.dumps(asked, default=str).encode()).hexdigest()
    return output.with_name(f".{output.name}.backup-{digest[:12]}")


def cmd_train(args):
    import keras

    from keras_heavytail import files
    from keras_heavytail import metrics
    from keras_heavytail.experiments import runner as experiments

    output = _output_file(args.output, args.overwrite, ".keras")
    data = _load(args)
    setting = _settings(args, baseline=False)[0]
    if args.sigma == 0:
        setting = experiments.Setting("SGD")
    protocol = _protocol(args, validation_fraction=defaults.VALIDATION_FRACTION)
    split = experiments.Split.of(data, protocol, args.seed)
    history = keras.callbacks.History()  # its first epoch says if it resumed
    with experiments.progress_bar(protocol.epochs, "epoch") as bar:
        bar.set_description(setting.label)
        model, seconds, ran, steps = experiments.train_one(
            data, setting, protocol, args.seed, bar, split, _backup_dir(args, output),
            callbacks=[history],
        )  # fmt: skip
    accuracy = metrics.accuracy(model, data.x_test, data.y_test)
    files.save_model(model, output)
    card = {"dataset": data.summary(), "raw_pixels": args.raw_pixels, "seed": args.seed}
    files.write_text(output.with_suffix(".json"), json.dumps(card, indent=1) + "\n")
    if history.epoch and history.epoch[0] > 0:
        print(f"Resumed at epoch {history.epoch[0] + 1} from the killed run's backup.")
    print(
        f"{ran} epochs ({steps} steps) in {seconds:.1f} s; test accuracy "
        f"{accuracy:.4f}; saved {output} (and its data card {output.with_suffix('.json')})"
    )


def cmd_analyze(args):
    from keras_heavytail import compressibility

    report = compressibility.compressibility_report(
        _load_model(args.model), args.max_error
    )
    print(report.to_json(indent=1) if args.json else report)


def cmd_prune(args):
    import numpy as np

    from keras_heavytail import files
    from keras_heavytail.pruning import one_shot as pruning
    from keras_heavytail.pruning.graph import ModelGraph
    from keras_heavytail.pruning.shrinking import shrink

    if args.criterion is None and args.ratio is None:
        raise CommandError("give --ratio R or --criterion paper")
    if args.shrink and args.structure == "entry":
        raise CommandError(
            "--shrink removes whole neurons: use it with --structure neuron "
            "(entry pruning leaves no neuron empty)"
        )
    output = _output_file(args.output, args.overwrite, ".keras")
    model = _load_model(args.model)
    pruned = pruning.prune(
        model, args.ratio, structure=args.structure, scope=args.scope,
        exclude=args.exclude, criterion=args.criterion, score=args.score,
    )  # fmt: skip
    before = sum(int(np.sum(w == 0)) for w in model.get_weights())
    zeroed = sum(int(np.sum(w == 0)) for w in pruned.get_weights()) - before
    line = (
        f"zeroed {zeroed:,} of {model.count_params():,} parameters; kernel "
        f"sparsity {ModelGraph(pruned).weight_sparsity():.3f}"
    )
    if args.shrink:
        pruned = shrink(pruned)
        line += f"; shrunk to {pruned.count_params():,} parameters"
    files.save_model(pruned, output)
    print(f"{line}; saved {output}")


def _fitting(x, model, what):
    """`x` reshaped to the model's input shape (flat vectors <-> images)."""
    import numpy as np

    shape = tuple(model.inputs[0].shape[1:])
    if tuple(x.shape[1:]) == shape:
        return x
    if None not in shape and int(np.prod(shape)) == int(np.prod(x.shape[1:])):
        return x.reshape((len(x),) + shape)
    raise CommandError(
        f"the {what} inputs have shape {tuple(x.shape[1:])} but the model takes "
        f"{shape}: pick the --dataset the model was trained on"
    )


def cmd_compress(args):
    from keras_heavytail import files
    from keras_heavytail import metrics
    from keras_heavytail.pruning import compress as compress_lib

    kinds = {"macs": args.macs, "params": args.params, "bytes": args.bytes,
             "latency_ms": args.latency_ms}  # fmt: skip
    if all(v is None for v in kinds.values()):
        raise CommandError("give a budget: --macs, --params, --bytes or --latency-ms")
    output = _output_file(args.output, args.overwrite, ".keras")
    try:
        budget = compress_lib.Budget(**kinds)
    except ValueError as error:
        raise CommandError(str(error)) from None
    model = _load_model(args.model)
    data = _export_data(args)
    x = _fitting(data.x_train, model, "training")
    x_test = _fitting(data.x_test, model, "test")
    cut = max(1, int(len(x) * defaults.VALIDATION_FRACTION))
    result = compress_lib.compress(
        model, (x[cut:], data.y_train[cut:]), (x[:cut], data.y_train[:cut]), budget,
        importance=args.importance, steps=args.steps, round_to=args.round_to,
        fine_tune_epochs=args.fine_tune_epochs, distill=args.distill,
    )  # fmt: skip
    before = metrics.accuracy(model, x_test, data.y_test)
    after = metrics.accuracy(result.model, x_test, data.y_test)
    files.save_model(result.model, output)
    print(
        f"{result.summary()}; test accuracy {before:.4f} -> {after:.4f}; "
        f"saved {output}"
    )


def _export_data(args):
    """The dataset for int8 calibration and --evaluate, as the model was trained."""
    card_path = Path(args.model).with_suffix(".json")
    if card_path.is_file() and not args.ignore_card:
        card = json.loads(card_path.read_text())
        if card.get("raw_pixels") is not None and card["raw_pixels"] != args.raw_pixels:
            print(
                f"Using the preprocessing the model was trained with ({card_path}): "
                f"raw pixels {card['raw_pixels']}.",
                file=sys.stderr,
            )
            args.raw_pixels = card["raw_pixels"]
    return _load(args)


def cmd_export(args):
    from keras_heavytail.export import litert as export

    output = _output_file(args.output, args.overwrite, ".tflite")
    model = _load_model(args.model)
    data = _export_data(args) if (args.quantize == "int8" or args.evaluate) else None
    report = export.export_tflite(
        model,
        output,
        sparse=not args.dense,
        quantize=args.quantize,
        representative_data=None if data is None else data.x_train[:500],
    )
    print(json.dumps(report.to_dict(), indent=1))
    if args.evaluate:
        evaluation = export.evaluate_tflite(
            report.path, data.x_test, data.y_test, from_logits=not args.probabilities
        )
        print(json.dumps(evaluation, indent=1, allow_nan=False, default=str))


def cmd_benchmark(args):
    from keras_heavytail.export import litert as export

    if not Path(args.model).is_file():
        raise CommandError(f"no .tflite file at {args.model!r}")
    print(
        json.dumps(
            export.benchmark_tflite(args.model, args.threads, args.warmup, args.runs),
            indent=1,
        )
    )


# ----------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------


def _data_options(parser):
    parser.add_argument(
        "--dataset", default=defaults.DATASET, choices=defaults.DATASETS,
        help="digits is embedded; teacher_student is synthetic; the others read --data",
    )  # fmt: skip
    parser.add_argument(
        "--data",
        help="folder with the dataset's standard files (IDX .gz, CIFAR batches)",
    )
    parser.add_argument(
        "--limit", type=_positive_int, help="use at most this many examples per split"
    )
    parser.add_argument(
        "--raw-pixels", action="store_true", help="scale pixels to [0, 1], no z-score"
    )


def _noise_options(parser, many=False):
    nargs = "+" if many else None
    parser.add_argument(
        "--alpha", type=_alpha, default=[defaults.ALPHA] if many else defaults.ALPHA,
        nargs=nargs, help="stability index of the noise, in (0, 2]",
    )  # fmt: skip
    parser.add_argument(
        "--sigma", type=_nonnegative, default=[defaults.SIGMA] if many else defaults.SIGMA,
        nargs=nargs, help="noise scale (0: plain SGD)",
    )  # fmt: skip
    parser.add_argument(
        "--noise", nargs="+", default=[defaults.NOISE], choices=defaults.NOISE_STRUCTURES,
        help="noise structure(s)",
    )  # fmt: skip


def _training_options(parser):
    parser.add_argument(
        "--architecture", choices=defaults.ARCHITECTURES,
        help="network (default: the protocol's: mlp)",
    )  # fmt: skip
    parser.add_argument(
        "--width", type=_positive_int, help="hidden units (default: the protocol's: 2000, paper 5000)"
    )
    parser.add_argument("--depth", type=_positive_int, help="hidden layers of deep_mlp")
    parser.add_argument(
        "--no-bias", action="store_true", help="bias-free hidden layers"
    )
    parser.add_argument(
        "--epochs", type=_positive_int, help="epoch budget (default: the protocol's)"
    )
    parser.add_argument(
        "--target-train-accuracy", type=_open_fraction,
        help="stop once accuracy on the whole training set reaches this fraction (0.95)",
    )  # fmt: skip
    parser.add_argument(
        "--lr", type=_positive, help="SGD learning rate (default: the protocol's)"
    )
    parser.add_argument("--momentum", type=_fraction, help="SGD momentum (default: 0)")
    parser.add_argument(
        "--weight-decay", type=_nonnegative, help="decoupled weight decay"
    )
    parser.add_argument("--batch-size", type=_positive_int, help="minibatch size (default: the protocol's: 64, paper 5000)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except `None` ("use the protocol's"), said in the help."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


# Subcommand name -> its parser, filled by `build_parser`.
SUBCOMMANDS = {}


def _add(sub, name, func, help_text, description=None):
    parser = sub.add_parser(
        name, help=help_text, description=description or help_text,
        formatter_class=_HelpFormatter,
    )  # fmt: skip
    SUBCOMMANDS[name] = parser
    parser.set_defaults(func=func)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and the converter's logs",
    )
    return parser


def _add_run_commands(sub):
    p = _add(
        sub, "demo", cmd_demo, "the main job on the embedded digits (a few minutes)",
        "Trains SGD and HeavyTailSGD (the project's defaults) on the embedded digits, "
        "measures iso-accuracy pruning, exports LiteRT variants with model cards and "
        "writes report.md. A rerun into the same folder resumes.",
    )  # fmt: skip
    p.add_argument(
        "--output", default="results/demo", help="folder for the report and models"
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=defaults.EPOCHS, help="epochs per run"
    )
    p.add_argument(
        "--width", type=_positive_int, default=defaults.WIDTH, help="hidden units"
    )
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds")
    p.add_argument(
        "--runs", type=_positive_int, default=200, help="timed LiteRT invocations"
    )

    p = _add(
        sub, "reproduce", cmd_reproduce, "the paper's protocol: SGD vs heavy-tailed SGD",
        "Trains SGD and heavy-tailed SGD under a protocol (--protocol paper: the "
        "reference code's setting) and reports accuracy, compressibility and the "
        "iso-accuracy neuron count. A rerun into the same folder resumes.",
    )  # fmt: skip
    p.add_argument(
        "--protocol", default="default", choices=("default", "paper"), help="preset"
    )
    _data_options(p)
    _training_options(p)
    _noise_options(p)
    p.add_argument("--anneal", action="store_true", help="decay sigma linearly to 0")
    p.add_argument(
        "--fine-tune-epochs", type=_nonnegative_int, help="masked fine-tune epochs"
    )
    p.add_argument("--seeds", type=_seed, nargs="+", default=[0], help="seeds")
    p.add_argument(
        "--output", default="results/reproduce", help="folder for the report"
    )

    p = _add(
        sub, "sweep", cmd_sweep, "a grid over sigma, alpha, noise, annealing, width, protocol",
        "Runs every combination, with SGD per width and protocol, and writes one table "
        "and one plot of iso-accuracy neurons against sigma. A rerun of the same grid "
        "skips finished runs; another grid into the same folder is refused.",
    )  # fmt: skip
    _data_options(p)
    _noise_options(p, many=True)
    p.add_argument(
        "--anneal", nargs="+", choices=("off", "on"), default=["off"], help="annealing"
    )
    p.add_argument(
        "--width",
        type=_positive_int,
        nargs="+",
        default=[defaults.WIDTH],
        help="widths",
    )
    p.add_argument(
        "--protocol",
        nargs="+",
        choices=("default", "paper"),
        default=["default"],
        help="presets",
    )
    p.add_argument(
        "--epochs", type=_positive_int, help="epoch budget (default: the protocol's)"
    )
    p.add_argument(
        "--lr", type=_positive, help="learning rate (default: the protocol's)"
    )
    p.add_argument("--batch-size", type=_positive_int, help="minibatch size")
    p.add_argument("--seeds", type=_seed, nargs="+", default=[0], help="seeds")
    p.add_argument(
        "--output", default="results/sweep", help="folder for the runs, table and plot"
    )

    p = _add(
        sub, "train", cmd_train, "train one model and save it as .keras",
        "Trains one model and saves it as .keras (and its data card). A run that "
        "diverges (NaN or inf) ends with an error and writes nothing; a killed run "
        "rerun with the same arguments resumes from its last finished epoch.",
    )  # fmt: skip
    _data_options(p)
    _training_options(p)
    _noise_options(p)
    p.add_argument("--anneal", action="store_true", help="decay sigma linearly to 0")
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of the weights and the noise"
    )
    p.add_argument("--output", required=True, help="the .keras file to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output"
    )


def _add_model_commands(sub):
    p = _add(sub, "analyze", cmd_analyze, "compressibility report of a .keras file")
    p.add_argument("model", help="a .keras file")
    p.add_argument(
        "--max-error", type=_fraction, default=defaults.MAX_REL_SQ_ERROR,
        help="the paper criterion's budget of relative squared error",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON instead of a table")

    p = _add(sub, "prune", cmd_prune, "one-shot pruning (and shrink) of a .keras file")
    p.add_argument("model", help="a .keras file")
    p.add_argument(
        "--ratio", type=_fraction, help="fraction of units (or entries) to prune"
    )
    p.add_argument(
        "--criterion", choices=["paper"], help="prune by the paper's criterion"
    )
    p.add_argument(
        "--structure",
        default="neuron",
        choices=defaults.PRUNE_STRUCTURES,
        help="what to prune",
    )
    p.add_argument(
        "--scope",
        default="layer",
        choices=defaults.PRUNE_SCOPES,
        help="ratio per layer or pooled",
    )
    p.add_argument(
        "--score", default="magnitude", choices=defaults.IMPORTANCES[:-1], help="unit importance"
    )
    p.add_argument("--exclude", nargs="*", default=None, help="layer names to keep")
    p.add_argument(
        "--shrink",
        action="store_true",
        help="remove pruned neurons (needs --structure neuron)",
    )
    p.add_argument("--output", required=True, help="the .keras file to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output"
    )

    p = _add(sub, "compress", cmd_compress,
             "prune a .keras file to a budget, fine-tune, shrink")  # fmt: skip
    p.add_argument("model", help="a .keras file (a classifier)")
    for flag, what in (("--macs", "multiply-adds"), ("--params", "parameters"),
                       ("--bytes", "bytes of the int8 .tflite"),
                       ("--latency-ms", "1-thread int8 LiteRT latency in ms")):  # fmt: skip
        p.add_argument(flag, type=_positive_float,
                       help=f"budget of {what}: a fraction in (0, 1) of the dense "
                            "model's, or an absolute number")  # fmt: skip
    p.add_argument("--importance", default=defaults.IMPORTANCES[0],
                   choices=defaults.IMPORTANCES, help="channel importance criterion")  # fmt: skip
    p.add_argument("--steps", type=_positive_int, default=defaults.COMPRESS_STEPS,
                   help="prune-and-fine-tune rounds")  # fmt: skip
    p.add_argument("--fine-tune-epochs", type=_nonnegative_int,
                   default=defaults.COMPRESS_FINE_TUNE_EPOCHS, help="epochs per round")  # fmt: skip
    p.add_argument("--distill", type=_fraction, default=defaults.COMPRESS_DISTILL,
                   help="weight of distillation from the dense model (0: none)")  # fmt: skip
    p.add_argument("--round-to", type=_positive_int, default=1,
                   help="channels kept per group are a multiple of this")  # fmt: skip
    p.add_argument("--output", required=True, help="the .keras file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--ignore-card", action="store_true",
                   help="ignore the model's data card (its .json)")  # fmt: skip
    _data_options(p)

    p = _add(sub, "export", cmd_export, "convert a .keras file to .tflite (LiteRT)")
    p.add_argument("model", help="a .keras file")
    p.add_argument("--output", required=True, help="the .tflite file to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output"
    )
    p.add_argument(
        "--quantize",
        choices=["dynamic", "float16", "int8"],
        help="weight/activation quantisation (none: float32)",
    )
    p.add_argument("--dense", action="store_true", help="no sparse storage")
    p.add_argument(
        "--evaluate", action="store_true", help="accuracy in LiteRT on --dataset"
    )
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="the model outputs probabilities, not logits",
    )
    p.add_argument(
        "--ignore-card",
        action="store_true",
        help="ignore the model's data card (its .json)",
    )
    _data_options(p)

    p = _add(
        sub, "benchmark", cmd_benchmark, "1-example latency of a .tflite in LiteRT"
    )
    p.add_argument("model", help="a .tflite file")
    p.add_argument(
        "--threads", type=_positive_int, default=1, help="interpreter threads"
    )
    p.add_argument(
        "--warmup", type=_nonnegative_int, default=20, help="untimed invocations"
    )
    p.add_argument("--runs", type=_positive_int, default=200, help="timed invocations")


def options(command):
    """`[(option strings, default, help)]` of one subcommand (`--help` shows them).

    argparse has no public way to list a parser's arguments; this is the one
    place that reads its `_actions` (Python 3.10 to 3.13).
    """
    if command not in SUBCOMMANDS:
        build_parser()
    return [
        (tuple(action.option_strings), action.default, action.help)
        for action in SUBCOMMANDS[command]._actions
    ]


def build_parser():
    """The argument parser of every subcommand (imports no Keras)."""
    parser = argparse.ArgumentParser(
        prog="keras-heavytail",
        description="Heavy-tailed SGD for Keras: train, measure compressibility, prune, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(sub)
    _add_model_commands(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if args.verbose:
        os.environ["KERAS_HEAVYTAIL_VERBOSE"] = "1"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_heavytail.files import RunLogError
    from keras_heavytail.files import captured_stderr

    with captured_stderr() as log:  # TensorFlow's C++ start-up logs
        try:
            import keras  # noqa: F401
        except ImportError:
            failed = True
        else:
            failed = False
    if failed:
        print("".join(log), file=sys.stderr)
        print(f"keras-heavytail {args.command}: error: cannot import Keras", file=sys.stderr)
        return 2

    try:
        with _quiet(args.verbose):
            args.func(args)
    except (
        CommandError,
        RunLogError,
        ValueError,
        OSError,
        ImportError,
        RuntimeError,
        EOFError,
    ) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"keras-heavytail {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keras-heavytail {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
