"""The `keras-heavytail` command (also `python -m keras_heavytail`).

Subcommands: `demo` (the main job), `reproduce` (the paper's protocol),
`sweep` (a grid of noise settings), `train`, `analyze`, `prune`, `compress`,
`export` and `benchmark`. Bad arguments, missing data and files that would be overwritten
end with one line on stderr and exit code 2, never a traceback. Parsing the
arguments imports no Keras: `--help` answers at once.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from keras_heavytail import defaults
from keras_heavytail.experiments import cli_cards
from keras_heavytail.experiments import cli_io

# The commands that run the protocol into a folder, dispatched by name in `_main`.
from keras_heavytail.experiments.cli_runs import FOLDER_WRITES
from keras_heavytail.experiments.cli_runs import cmd_demo  # noqa: F401
from keras_heavytail.experiments.cli_runs import cmd_reproduce  # noqa: F401
from keras_heavytail.experiments.cli_runs import cmd_sweep  # noqa: F401
from keras_heavytail.experiments.parser import CommandError
from keras_heavytail.experiments.parser import build_parser


def cmd_train(args):
    with cli_io.locked_output(args) as (output, card_file):
        _train(args, output, card_file)


def _train(args, output, card_file):
    import keras

    from keras_heavytail import files
    from keras_heavytail import metrics
    from keras_heavytail.experiments import runner as experiments

    data = cli_io.load_data(args)
    if len(args.noise) > 1:
        raise CommandError(
            f"train trains one model: give one --noise. Received: {' '.join(args.noise)}"
        )
    setting = cli_io.settings(args, baseline=False)[0]
    if args.sigma == 0:
        setting = experiments.Setting("SGD")
    protocol = cli_io.protocol(args, validation_fraction=defaults.VALIDATION_FRACTION)
    split = experiments.Split.of(data, protocol, args.seed)
    history = keras.callbacks.History()  # the epochs run here: fewer if it resumed
    backup = cli_io.backup_dir(args, output)
    with experiments.progress_bar(protocol.epochs, "epoch") as bar:
        bar.set_description(setting.label)
        model, seconds, ran, steps = experiments.train_one(
            data, setting, protocol, args.seed, bar, split, backup, callbacks=[history],
        )  # fmt: skip
    accuracy = metrics.accuracy(model, data.x_test, data.y_test)
    files.save_model(model, output)
    shutil.rmtree(backup, ignore_errors=True)  # only now: a kill before loses nothing
    optimizer = model.optimizer
    config = json.loads(json.dumps(optimizer.get_config(), default=str))
    card = {"dataset": data.summary(), "raw_pixels": args.raw_pixels, "seed": args.seed,
            "optimizer": {"class": type(optimizer).__name__, "config": config}}  # fmt: skip
    files.write_text(card_file, json.dumps(card, indent=1) + "\n")
    if ran > len(history.epoch):
        print(f"Resumed at epoch {ran - len(history.epoch) + 1} from the killed run's backup.")
    shown = ("learning_rate", "momentum", "alpha", "sigma", "sigma_scale", "noise")
    settings = ", ".join(
        f"{k}={config[k]:.6g}" if isinstance(config[k], float) else f"{k}={config[k]}"
        for k in shown
        if k in config
    )
    print(f"Optimizer: {type(optimizer).__name__}({settings}); all of it on the data card.")
    print(
        f"{ran} epochs ({steps} steps) in {seconds:.1f} s; test accuracy "
        f"{accuracy:.4f}; saved {output} (and its data card {output.with_suffix('.json')})"
    )
    cli_cards.batch_norm_hint(model, split.x_fit, data, accuracy)


def cmd_analyze(args):
    from keras_heavytail import compressibility

    report = compressibility.compressibility_report(
        cli_io.load_model(args.model), args.max_error
    )
    if args.json:
        print(report.to_json(indent=1))
        return
    print(report.table())
    print("\n" + compressibility.MORE_COMPRESSIBLE)
    print(report.legend())


def cmd_prune(args):
    _prune_arguments(args)
    with cli_io.locked_file(args, ".keras") as output:
        _prune(args, output)


def _prune_arguments(args):
    if args.criterion is None and args.ratio is None:
        raise CommandError("give --ratio R or --criterion paper")
    if args.criterion is not None and args.ratio is not None:
        raise CommandError(
            "give --ratio R or --criterion paper, not both: the criterion chooses the "
            f"ratio. Received: --ratio {args.ratio} --criterion {args.criterion}"
        )
    if args.criterion and (args.structure == "entry" or args.scope != "layer"
                           or args.score != "magnitude"):  # fmt: skip
        raise CommandError(
            "--criterion paper removes whole units by their squared norms, layer by "
            "layer: --structure entry, --scope and --score do not apply. Received: "
            f"--structure {args.structure} --scope {args.scope} --score {args.score}"
        )
    if args.shrink and args.structure == "entry":
        raise CommandError(
            "--shrink removes whole neurons: use it with --structure neuron "
            "(entry pruning leaves no neuron empty)"
        )


def _prune(args, output):
    import numpy as np

    from keras_heavytail import files
    from keras_heavytail.pruning import one_shot as pruning
    from keras_heavytail.pruning.graph import ModelGraph
    from keras_heavytail.pruning.shrinking import shrink

    source_card = cli_cards.data_card(args.model)
    card_file = cli_io.card_file(output, args.overwrite) if source_card else None
    model = cli_io.load_model(args.model)
    pruned = pruning.prune(
        model, args.ratio, structure=args.structure, scope=args.scope,
        exclude=args.exclude, criterion=args.criterion, score=args.score,
    )  # fmt: skip
    before = sum(int(np.sum(w == 0)) for w in model.get_weights())
    zeroed = sum(int(np.sum(w == 0)) for w in pruned.get_weights()) - before
    line = (
        f"zeroed {zeroed:,} of {model.count_params():,} parameters"
        + (" (the pruned units' incoming weights and biases; --shrink also "
           "removes their outgoing ones)" if args.structure == "neuron" else "")  # fmt: skip
        + "; kernel "
        f"sparsity {ModelGraph(pruned).weight_sparsity():.3f}"
    )
    units = [cli_cards.live_units(model), cli_cards.live_units(pruned)]
    line += f"; hidden units {units[0]:,} -> {units[1]:,}"
    if args.shrink:
        pruned = shrink(pruned)
        line += f"; shrunk to {pruned.count_params():,} parameters"
    scores = cli_cards.test_accuracy_before_after(source_card, model, pruned)
    files.save_model(pruned, output)
    if card_file is not None:  # the pruned model was trained on the same data
        files.write_text(card_file, json.dumps(source_card, indent=1) + "\n")
        line += f"; saved {output} (and its data card {card_file.name})"
    else:
        line += f"; saved {output}"
    print(line)
    print(scores)


def cmd_compress(args):
    kinds = _budget_arguments(args)
    with cli_io.locked_output(args) as (output, card_file):
        _compress(args, kinds, output, card_file)


def _budget_arguments(args):
    kinds = {"macs": args.macs, "params": args.params, "bytes": args.bytes,
             "latency_ms": args.latency_ms, "latency": args.latency}  # fmt: skip
    if all(v is None for v in kinds.values()):
        raise CommandError(
            "give a budget: --macs, --params, --bytes, --latency-ms or --latency"
        )
    return kinds


def _compress(args, kinds, output, card_file):
    from keras_heavytail import files
    from keras_heavytail import metrics
    from keras_heavytail.pruning import compress as compress_lib
    from keras_heavytail.pruning.checkpoints import BackupError

    try:
        budget = compress_lib.Budget(**kinds)
    except ValueError as error:
        raise CommandError(str(error)) from None
    model = cli_io.load_model(args.model)
    data = cli_cards.training_data(args)
    # The validation split `train` held out (its seed is on the data card):
    # fine-tuning on it, or judging the budget on training data, would mislead.
    card = (None if args.ignore_card else cli_cards.data_card(args.model)) or {}
    x_fit, y_fit, x_val, y_val = data.validation_split(seed=card.get("seed", 0))
    x_fit = cli_io.fitting(x_fit, model, "training")
    x_val = cli_io.fitting(x_val, model, "validation")
    x_test = cli_io.fitting(data.x_test, model, "test")
    # A killed run, rerun with the same arguments, resumes after its last round.
    backup = output.parent / f".{output.name}.compress-backup"
    try:
        result = compress_lib.compress(
            model, (x_fit, y_fit), (x_val, y_val), budget,
            importance=args.importance, steps=args.steps, round_to=args.round_to,
            fine_tune_epochs=args.fine_tune_epochs, distill=args.distill, backup_dir=backup,
        )  # fmt: skip
    except BackupError:
        raise CommandError(
            f"{str(backup)!r} holds the backup of a killed compress run with other "
            "arguments, model or data: rerun with those, or delete it to start again"
        ) from None
    before = metrics.accuracy(model, x_test, data.y_test)
    after = metrics.accuracy(result.model, x_test, data.y_test)
    files.save_model(result.model, output)
    card["compress"] = {
        "source": str(args.model), "budget": dict(budget.items()),
        "importance": args.importance, "macs": result.cost.macs,
        "params": result.cost.params, "dense_macs": result.dense_cost.macs,
        "test_accuracy": after, "dense_test_accuracy": before,
    }  # fmt: skip
    files.write_text(card_file, json.dumps(card, indent=1) + "\n")
    print(
        f"{result.summary()}; test accuracy {before:.4f} -> {after:.4f}; "
        f"saved {output} (and its card {output.with_suffix('.json').name})"
    )


def cmd_export(args):
    import shutil
    import tempfile

    with cli_io.locked_file(args, ".tflite") as output, tempfile.TemporaryDirectory(
        dir=output.parent, prefix=f".{output.name}.old-"
    ) as keep:
        old = Path(keep) / output.name
        if output.exists():  # --overwrite: put back if this run fails after writing
            shutil.copy2(output, old)
        try:
            _export(args, output)
        except BaseException:
            if old.exists():
                os.replace(old, output)
            else:  # a file this failed run wrote is not a result
                output.unlink(missing_ok=True)
            raise


def _export(args, output):
    from keras_heavytail.export import cards
    from keras_heavytail.export import litert as export

    card_file = cli_cards.model_card_path(output, args.model)
    model = cli_io.load_model(args.model)
    data = (
        cli_cards.training_data(args)
        if (args.quantize == "int8" or args.evaluate)
        else None
    )
    if data is not None:  # checked before anything is written
        calibration = cli_io.fitting(data.x_train[:500], model, "calibration")
        x_test = cli_io.fitting(data.x_test, model, "test")
    report = export.export_tflite(
        model,
        output,
        sparse=not args.dense,
        quantize=args.quantize,
        representative_data=None if data is None else calibration,
    )
    print(
        f"Wrote {report.path}: {report.bytes:,} bytes ({report.gzip_bytes:,} gzipped), "
        f"{report.quantization}, weight sparsity {report.weight_sparsity:.3f}"
        + (f", int8 calibrated on {min(500, len(data.x_train))} {data.name} training inputs"
           if args.quantize == "int8" else "")  # fmt: skip
    )
    print(json.dumps(report.to_dict(), indent=1))
    evaluation = None
    if args.evaluate:
        evaluation = export.evaluate_tflite(
            report.path, x_test, data.y_test, from_logits=not args.probabilities
        )
        from keras_heavytail import metrics

        keras_accuracy = metrics.accuracy(model, x_test, data.y_test)
        print(
            f"Test accuracy on {len(data.y_test):,} {data.name} examples: Keras "
            f"{keras_accuracy:.4f}, LiteRT {evaluation['accuracy']:.4f} "
            f"({100 * (evaluation['accuracy'] - keras_accuracy):+.2f} points)"
        )
        print(json.dumps(evaluation, indent=1, allow_nan=False, default=str))
    if card_file is None:
        print(f"No model card: {output.with_suffix('.json')} is another model's card; "
              "export to another name for one.")  # fmt: skip
        return
    training = None if args.ignore_card else cli_cards.data_card(args.model)
    # Written over the exported model's own data card: keep what it says.
    own = training is not None and card_file == Path(args.model).with_suffix(".json")
    reserved = {"model", "source", "bytes", "training", "export", "litert_evaluation",
                "litert_latency", "versions", "dataset", "calibration"}  # fmt: skip
    kept = {k: v for k, v in training.items() if k not in reserved} if own else {}
    if args.quantize == "int8":
        kept["calibration"] = {"dataset": data.name, "split": "train",
                               "inputs": min(500, len(data.x_train))}  # fmt: skip
    cards.model_card(
        output,
        source=f"keras-heavytail export {args.model}",
        training=training,
        export=report,
        evaluation=evaluation,
        dataset=(training or {}).get("dataset") if data is None else data.summary(),
        **kept,
    )
    print(f"Model card: {card_file}")


def cmd_benchmark(args):
    from keras_heavytail.export import cards
    from keras_heavytail.export import litert as export

    if not Path(args.model).is_file():
        raise CommandError(f"no .tflite file at {args.model!r}")
    timing = export.benchmark_tflite(args.model, args.threads, args.warmup, args.runs)
    print(
        f"{args.model}: median {cards.format_latency(timing['median_ms'])}, "
        f"p90 {cards.format_latency(timing['p90_ms'])} per example over "
        f"{timing['runs']} runs, {timing['num_threads']} thread(s), {timing['runtime']}"
    )
    print(json.dumps(timing, indent=1))


# `benchmark` runs a .tflite file in LiteRT alone: no Keras, no TensorFlow.
KERAS_FREE = frozenset({"benchmark"})


def preflight(args):
    """The checks that need no Keras, made before it is imported, so that a
    wrong argument or path is answered at once; each command makes the path
    checks again when it runs (under its lock)."""
    checks = {"prune": _prune_arguments, "compress": _budget_arguments}
    if args.command in checks:
        checks[args.command](args)
    if args.command in FOLDER_WRITES:
        cli_io.output_folder(args.output, FOLDER_WRITES[args.command])
    cli_io.check_files(args)


def main(argv=None):
    try:
        return _main(argv)
    except KeyboardInterrupt:  # during start-up; a command's own is caught below
        print("keras-heavytail: interrupted", file=sys.stderr)
        return 130


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if args.verbose:
        os.environ["KERAS_HEAVYTAIL_VERBOSE"] = "1"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_heavytail.files import RunLogError
    from keras_heavytail.files import captured_stderr

    try:
        preflight(args)
    except (CommandError, RunLogError, OSError) as error:  # OSError: a name too long...
        print(f"keras-heavytail {args.command}: error: {error}", file=sys.stderr)
        return 2
    failed = False
    with captured_stderr() as log:  # TensorFlow's C++ start-up logs
        try:
            if args.command not in KERAS_FREE:
                cli_io.tensorflow_first()
                import keras  # noqa: F401
        except (ImportError, ValueError) as error:  # ValueError: an unknown KERAS_BACKEND
            failed = error
    if failed:
        if isinstance(failed, ImportError):  # what the import printed may say why
            print("".join(log), file=sys.stderr, end="")
        failed = " ".join(str(failed).split())
        print(
            f"keras-heavytail {args.command}: error: cannot import Keras ({failed})",
            file=sys.stderr,
        )
        return 2

    try:
        with cli_io.quiet(args.verbose):
            globals()[f"cmd_{args.command}"](args)
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
    except Exception as error:
        if not isinstance(error, MemoryError) and type(error).__name__ != "ResourceExhaustedError":
            raise
        print(
            f"keras-heavytail {args.command}: error: out of memory "
            f"({type(error).__name__}): ask for a smaller model or batch "
            "(--width, --batch-size, --limit)",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
