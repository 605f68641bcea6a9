"""The `keras-heavytail` argument parser: every subcommand, option and default.

Imports no Keras (so `--help` answers at once); `cli` runs the commands.
The builders below are long because they are flat lists of options, one
`add_argument` each.
"""

import argparse

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
# Rates and scales are applied in float32: above its largest value, inf.
_positive = _number(float, 0, low_open=True, high=3.4e38)
_nonnegative = _number(float, 0, high=3.4e38)
_fraction = _number(float, 0, high=1)
_positive_float = _positive
_open_fraction = _number(float, 0, low_open=True, high=1)
_alpha = _number(float, 0, low_open=True, high=2)
_seed = _number(int, 0, high=2**31 - 1, high_open=True)
_sigma = _nonnegative


# ----------------------------------------------------------------------------
# Shared pieces


# ----------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------


def _data_options(parser, card=False):
    # A command that reads the model's data card takes the dataset from it
    # unless --dataset is given: the default is resolved then (None here).
    parser.add_argument(
        "--dataset", default=None if card else defaults.DATASET, choices=defaults.DATASETS,
        help="digits is embedded; teacher_student is synthetic; the others read --data"
        + (" (default: the model's data card's, else digits)" if card else ""),
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
        "--alpha", type=_alpha, default=[defaults.PAPER_ALPHA] if many else defaults.PAPER_ALPHA,
        nargs=nargs, help="stability index of the noise, in (0, 2]",
    )  # fmt: skip
    parser.add_argument(
        "--sigma", type=_sigma, default=[defaults.PAPER_SIGMA] if many else defaults.PAPER_SIGMA,
        nargs=nargs, help="noise scale (0: plain SGD)",
    )  # fmt: skip
    parser.add_argument(
        "--noise", nargs="+", default=[defaults.PAPER_NOISE], choices=defaults.NOISE_STRUCTURES,
        help="noise structure(s)",
    )  # fmt: skip
    parser.add_argument(
        "--sigma-scale", default=defaults.PAPER_SIGMA_SCALE, choices=defaults.SIGMA_SCALES,
        help="absolute: the paper's sigma; fan_in: sigma / sqrt(fan-in) per kernel",
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


def _add(sub, name, help_text, description=None):
    parser = sub.add_parser(
        name, help=help_text, description=description or help_text,
        formatter_class=_HelpFormatter,
    )  # fmt: skip
    SUBCOMMANDS[name] = parser
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and the converter's logs",
    )
    return parser


IGNORE_CARD = "ignore the model's data card (its .json)"


def _output_file_options(parser, suffix):
    parser.add_argument("--output", required=True, help=f"the {suffix} file to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output"
    )


def _demo_command(sub):
    p = _add(sub, "demo", "the main job on the embedded digits (a few minutes)",
        "Trains SGD and HeavyTailSGD (the paper's setting: absolute sigma 0.003) on the embedded digits, "
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
        "--fine-tune-epochs", type=_nonnegative_int, default=defaults.ISO_FINE_TUNE_EPOCHS,
        help="masked fine-tune epochs at each step of the iso-accuracy search "
        "(0: measure pruning without fine-tuning, faster)",
    )  # fmt: skip
    p.add_argument(
        "--runs", type=_positive_int, default=200, help="timed LiteRT invocations"
    )


def _reproduce_command(sub):
    p = _add(sub, "reproduce", "the paper's protocol: SGD vs heavy-tailed SGD",
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


def _sweep_command(sub):
    p = _add(sub, "sweep", "a grid over sigma, alpha, noise, annealing, width, protocol",
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
    p.add_argument(
        "--fine-tune-epochs", type=_nonnegative_int,
        help="masked fine-tune epochs at iso-accuracy (default: the protocol's)",
    )  # fmt: skip
    p.add_argument("--seeds", type=_seed, nargs="+", default=[0], help="seeds")
    p.add_argument(
        "--output", default="results/sweep", help="folder for the runs, table and plot"
    )


def _train_command(sub):
    p = _add(sub, "train", "train one model and save it as .keras",
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
    _output_file_options(p, ".keras")


def _analyze_command(sub):
    p = _add(sub, "analyze", "compressibility report of a .keras file", (
        "Compressibility report of a .keras file: one row per kernel layer and "
        "one for the whole model. More compressible reads as a LOWER tail_index "
        "(2 = Gaussian or lighter, the estimate is capped there), LOWER "
        "best_k_error@k (the error of keeping the largest k of the entries) and "
        "a HIGHER neuron_prune_ratio (the paper's criterion: the share of units "
        "it would remove). The table ends with a line per column."
    ))  # fmt: skip
    p.add_argument("model", help="a .keras file")
    p.add_argument(
        "--max-error", type=_fraction, default=defaults.MAX_REL_SQ_ERROR,
        help="the paper criterion's budget of relative squared error",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON instead of a table")


def _prune_command(sub):
    p = _add(sub, "prune", "one-shot pruning (and shrink) of a .keras file")
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
    _output_file_options(p, ".keras")


def _compress_command(sub):
    p = _add(sub, "compress",
             "prune a .keras file to a budget, fine-tune, shrink")  # fmt: skip
    p.add_argument("model", help="a .keras file (a classifier)")
    for flag, what in (("--macs", "multiply-adds"), ("--params", "parameters"),
                       ("--bytes", "bytes of the int8 .tflite")):  # fmt: skip
        p.add_argument(flag, type=_positive_float,
                       help=f"budget of {what}: a fraction in (0, 1) of the dense "
                            "model's, or an absolute number")  # fmt: skip
    p.add_argument("--latency-ms", type=_positive_float,
                   help="budget of 1-thread int8 LiteRT latency, in milliseconds")  # fmt: skip
    p.add_argument("--latency", type=_fraction,
                   help="budget of latency as a fraction of the dense model's")  # fmt: skip
    p.add_argument("--importance", default=defaults.COMPRESS_IMPORTANCE,
                   choices=defaults.IMPORTANCES, help="channel importance criterion")  # fmt: skip
    p.add_argument("--steps", type=_positive_int, default=defaults.COMPRESS_STEPS,
                   help="prune-and-fine-tune rounds")  # fmt: skip
    p.add_argument("--fine-tune-epochs", type=_nonnegative_int,
                   default=defaults.COMPRESS_FINE_TUNE_EPOCHS, help="epochs per round")  # fmt: skip
    p.add_argument("--distill", type=_fraction, default=defaults.COMPRESS_DISTILL,
                   help="weight of distillation from the dense model (0: none)")  # fmt: skip
    p.add_argument("--round-to", type=_positive_int, default=1,
                   help="channels kept per group are a multiple of this")  # fmt: skip
    _output_file_options(p, ".keras")
    p.add_argument("--ignore-card", action="store_true", help=IGNORE_CARD)
    _data_options(p, card=True)


def _export_command(sub):
    p = _add(sub, "export", "convert a .keras file to .tflite (LiteRT)")
    p.add_argument("model", help="a .keras file")
    _output_file_options(p, ".tflite")
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
    p.add_argument("--ignore-card", action="store_true", help=IGNORE_CARD)
    _data_options(p, card=True)


def _benchmark_command(sub):
    p = _add(sub, "benchmark", "1-example latency of a .tflite in LiteRT"
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
    from keras_heavytail import __version__

    parser.add_argument("--version", action="version", version=f"keras-heavytail {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_demo_command, _reproduce_command, _sweep_command, _train_command,
                _analyze_command, _prune_command, _compress_command, _export_command,
                _benchmark_command):  # fmt: skip
        add(sub)
    return parser
