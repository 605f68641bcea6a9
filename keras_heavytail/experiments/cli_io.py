"""What the CLI reads and writes: data, model files, output paths, quiet logs.

Every path check ends in a `CommandError` (one line on stderr, exit code 2):
nothing a user has is replaced without `--overwrite`.
"""

import contextlib
import json
import os
from pathlib import Path

from keras_heavytail import files
from keras_heavytail.experiments.parser import CommandError


def tensorflow_first():
    """On JAX or PyTorch, imports TensorFlow (when installed) before Keras.

    Keras imports it anyway for `set_random_seed`, `get_config` and the
    export, but after jaxlib TensorFlow's C++ start-up lines ignore
    `TF_CPP_MIN_LOG_LEVEL`; imported first, under the caller's captured
    stderr, they stay quiet.
    """
    import importlib.util

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow" and importlib.util.find_spec("tensorflow"):
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def quiet(verbose):
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
        # `module` is a regular expression matched at the start of the name:
        # a bare "keras" would also hide keras_heavytail's own warnings.
        warnings.filterwarnings("ignore", module=r"keras(\.|$)")
        warnings.filterwarnings("ignore", module=r"tensorflow(\.|$)")
        yield


def output_folder(path, writes=()):
    """The folder a job writes into; never one whose files it did not write.

    A folder with a run log (`runs.jsonl` with its header) is an earlier
    run's, which the job resumes (the log refuses another job's). Otherwise
    none of the names in `writes` may exist there (dangling links included):
    they would be replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandError(f"--output {str(path)!r} is a file; give a folder")
    _check_parents(path)
    if files.is_run_log(path / "runs.jsonl"):
        return path
    taken = [name for name in writes if os.path.lexists(path / name)]
    if taken:
        raise CommandError(
            f"--output {str(path)!r} already holds {', '.join(map(repr, taken))}, "
            "which this command writes; give a new or empty folder"
        )
    return path


def _check_parents(path):
    """Refuses an --output below a file (the folder it needs cannot be made)."""
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise CommandError(
                    f"--output {str(path)!r} lies below {str(parent)!r}, which is a "
                    "file, not a folder"
                )
            return


# A file name's bytes the CLI leaves for what it writes beside it: the lock
# (`NAME.lock`) and train's epoch backup (`.NAME.backup-<12 hex>`).
SIDE_FILE_BYTES = 21
NAME_MAX = 255  # bytes in one path component on Linux and macOS file systems


def output_file(path, overwrite, suffix):
    if str(path).endswith(("/", os.sep)):  # Path() would drop the slash: a file
        raise CommandError(f"--output {str(path)!r} ends in a slash (a folder); give a {suffix} file")
    path = Path(path)
    if len(path.name.encode()) > NAME_MAX - SIDE_FILE_BYTES:
        raise CommandError(
            f"--output's file name is {len(path.name.encode())} bytes long; keep it to "
            f"{NAME_MAX - SIDE_FILE_BYTES} (its lock and backup add {SIDE_FILE_BYTES} "
            f"to it, and a name holds {NAME_MAX}). Received: {str(path)[:60]!r}..."
        )
    _check_parents(path)
    if path.is_dir():
        raise CommandError(f"--output {str(path)!r} is a folder; give a {suffix} file")
    if path.suffix != suffix:
        raise CommandError(f"--output must end in {suffix}. Received: {str(path)!r}")
    if os.path.lexists(path) and not overwrite:  # a dangling link is a user's too
        raise CommandError(
            f"--output {str(path)!r} exists; pass --overwrite to replace it"
        )
    return path


def card_file(output, overwrite):
    """The data card beside a written .keras file; never a user's file replaced."""
    card = output.with_suffix(".json")
    if card.is_dir():  # --overwrite replaces files, never a folder
        raise CommandError(
            f"{str(card)!r} (where the data card of --output goes) is a folder; move it "
            "or choose another --output"
        )
    if os.path.lexists(card) and not overwrite:
        raise CommandError(
            f"{str(card)!r} (the data card of --output) exists; pass --overwrite "
            "to replace it"
        )
    return card


def load_data(args):
    from keras_heavytail.experiments import datasets

    return datasets.load_dataset(
        args.dataset,
        data_dir=args.data,
        standardize=not args.raw_pixels,
        limit=args.limit,
    )


# The one file each command writes (its data card beside it for train and
# compress), checked before Keras is imported by `check_files`.
OUTPUT_FILES = {"train": ".keras", "prune": ".keras", "compress": ".keras", "export": ".tflite"}


def check_files(args):
    """The model file a command reads and the file it writes, checked without Keras."""
    if args.command in ("analyze", "prune", "compress", "export"):
        check_model_file(args.model)
    suffix = OUTPUT_FILES.get(args.command)
    if suffix is not None:
        output = output_file(args.output, args.overwrite, suffix)
        if args.command in ("train", "compress"):
            card_file(output, args.overwrite)


def check_model_file(path):
    """Raises a CommandError unless `path` is a file that could be a .keras archive."""
    import zipfile

    if not Path(path).is_file():
        raise CommandError(f"no model file at {path!r}")
    try:
        open(path, "rb").close()
    except OSError as error:
        raise CommandError(f"cannot read the model file {path!r} ({error.strerror})") from None
    if not zipfile.is_zipfile(path):
        raise CommandError(f"{path!r} is not a .keras file (not a zip archive)")


def load_model(path):
    import keras

    from keras_heavytail.optimizers import heavy_tail as optimizers  # noqa: F401  registers our classes

    check_model_file(path)
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises many types for broken files
        if "safe_mode" in str(error):  # a Lambda layer: Keras' advice fits Python only
            raise CommandError(
                f"cannot load {path!r}: it holds a Lambda layer (Python code), which "
                "the command line does not run. In Python, load it with "
                "keras.saving.load_model(path, safe_mode=False) and use the "
                "keras_heavytail API, or rebuild it without Lambda layers."
            ) from None
        raise CommandError(f"cannot load {path!r}: {error}") from None


def protocol(args, **extra):
    """The protocol preset `--protocol` names, with the options given."""
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
    protocol = experiments.Protocol.preset(
        getattr(args, "protocol", "default"), **overrides, **extra
    )
    if "depth" in overrides and protocol.architecture not in ("deep_mlp", "resnet"):
        raise CommandError(
            "--depth sets the hidden layers of deep_mlp and the blocks per stage of "
            f"resnet; {protocol.architecture} has none. Received: --depth "
            f"{overrides['depth']} with --architecture {protocol.architecture}"
        )
    return protocol


def settings(args, baseline=True):
    """The settings to run: SGD (with `baseline`) and one per `--noise`."""
    from keras_heavytail.experiments import runner as experiments

    settings = [experiments.Setting("SGD")] if baseline else []
    for noise in args.noise:
        label = f"HeavyTailSGD({noise}, alpha={args.alpha:g}, sigma={args.sigma:g}"
        label += ", fan_in" if args.sigma_scale == "fan_in" else ""
        label += ", annealed)" if args.anneal else ")"
        settings.append(
            experiments.Setting(
                label, noise, args.alpha, args.sigma, args.anneal, args.sigma_scale
            )
        )
    return settings


@contextlib.contextmanager
def locked_file(args, suffix):
    """Yields the checked `--output` file while holding its lock (see `locked_output`)."""
    output = output_file(args.output, args.overwrite, suffix)
    with files.Lock(output):
        yield output_file(args.output, args.overwrite, suffix)


@contextlib.contextmanager
def locked_output(args):
    """Yields the checked `--output` file and its card while holding their lock.

    Another job writing the same file is refused; the checks are made again
    once the lock is held, so a job that finished in between is not
    overwritten.
    """
    with locked_file(args, ".keras") as output:
        yield output, card_file(output, args.overwrite)


def backup_dir(args, output):
    """Where a killed `train` keeps its last epoch: beside `output`, per arguments.

    A rerun with the same arguments resumes from it;
    other arguments get another folder, so they never mix.
    """
    import hashlib

    asked = {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in ("output", "overwrite", "verbose")
    }
    digest = hashlib.sha256(json.dumps(asked, default=str).encode()).hexdigest()
    return output.with_name(f".{output.name}.backup-{digest[:12]}")


def fitting(x, model, what):
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
