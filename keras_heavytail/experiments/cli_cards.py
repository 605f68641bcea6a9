"""The cards the CLI reads beside a model file, and the data they name.

`train` writes a data card (`m.json` beside `m.keras`: dataset,
preprocessing, settings); `compress` and `export` read it so that a model is
calibrated, fine-tuned and evaluated on the data it was trained on, and
`export` writes its model card without replacing another file's card.
Also what the CLI reports about a model on that data: accuracy before and
after pruning, live units, stale BatchNormalization statistics.
"""

import json
from pathlib import Path

from keras_heavytail import defaults
from keras_heavytail.experiments import cli_io
from keras_heavytail.experiments.parser import CommandError


def read_card(path):
    """The data card `train` wrote beside a .keras file, as a dict."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CommandError(
            f"{str(path)!r} is not a data card ({error}); pass --ignore-card"
        ) from None
    if not isinstance(card, dict):
        raise CommandError(f"{str(path)!r} is not a data card; pass --ignore-card")
    return card


def data_card(model_path):
    """The data card beside a .keras file (what `train` wrote), or None.

    Another `.json` there (an export's model card) is no data card.
    """
    path = Path(model_path).with_suffix(".json")
    if not path.is_file():
        return None
    card = read_card(path)
    return card if "raw_pixels" in card and "dataset" in card else None


def training_data(args):
    """The dataset for int8 calibration and --evaluate, as the model was trained."""
    card_path = Path(args.model).with_suffix(".json")
    card = None if args.ignore_card else data_card(args.model)
    if card is not None:
        trained_on = (card.get("dataset") or {}).get("name")
        if args.dataset is not None and trained_on not in (None, args.dataset):
            print(
                f"The model was trained on {trained_on} ({card_path}); using --dataset "
                f"{args.dataset} as asked."
            )
        if args.dataset is None and trained_on in defaults.DATASETS:
            args.dataset = trained_on
            print(
                f"Using the dataset the model was trained on ({card_path}): {trained_on}."
            )
        if card.get("raw_pixels") is not None and card["raw_pixels"] != args.raw_pixels:
            print(
                f"Using the preprocessing the model was trained with ({card_path}): "
                f"raw pixels {card['raw_pixels']}.",
            )  # on stdout, as below
            args.raw_pixels = card["raw_pixels"]
    args.dataset = args.dataset or defaults.DATASET
    if card is None and not args.ignore_card:
        print(
            f"No data card beside {args.model} ({card_path.name}): using --dataset "
            f"{args.dataset}{' from ' + args.data if args.data else ''}, "
            f"{'raw pixels' if args.raw_pixels else 'standardised'}.",
        )  # on stdout: a failure that follows stays one line on stderr
    return cli_io.load_data(args)


def model_card_path(output, model_path):
    """`<output>.json` if free, an earlier export's card of this file, or the
    data card of the model exported (`m.keras -> m.tflite` in one folder: the
    model card then keeps the data card's fields, so it still serves
    `m.keras`); else None (another file's card, never replaced).
    """
    path = output.with_suffix(".json")
    if not path.exists():
        return path
    if path.resolve() == Path(model_path).with_suffix(".json").resolve() and data_card(
        model_path
    ):
        return path
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ours = (
        isinstance(card, dict) and card.get("model") == output.name and "export" in card
    )
    return path if ours else None


def test_accuracy_before_after(card, model, pruned):
    """A line with both models' test accuracy on the data the card names.

    The data is loaded as `train` loaded it (the card's dataset, its
    preprocessing and example count); where it cannot be (no card, data
    files elsewhere), the line says so instead.
    """
    from keras_heavytail import metrics
    from keras_heavytail.experiments import datasets

    dataset = (card or {}).get("dataset") or {}
    if dataset.get("name") not in defaults.DATASETS:
        return "Test accuracy: no data card naming the dataset, not measured."
    source = Path(str(dataset.get("source", "")))
    try:
        data = datasets.load_dataset(
            dataset["name"],
            data_dir=source if source.is_dir() else None,
            standardize=not card.get("raw_pixels", False),
            limit=dataset.get("train"),
        )
        before, after = (metrics.accuracy(m, data.x_test, data.y_test) for m in (model, pruned))
    except (OSError, ValueError) as error:
        return f"Test accuracy: not measured ({error})."
    return (
        f"Test accuracy on {len(data.y_test):,} {data.name} examples: {before:.4f} -> "
        f"{after:.4f} ({100 * (after - before):+.2f} points)"
    )


def batch_norm_hint(model, x_fit, data, accuracy):
    """Says so when re-estimated BatchNormalization statistics (on a copy)
    would score much better: noise moves the weights after every step, and
    the moving averages lag behind."""
    from keras_heavytail import metrics
    from keras_heavytail.pruning import batch_norm
    from keras_heavytail.pruning import one_shot
    from keras_heavytail.pruning.graph import ModelGraph

    if not batch_norm.batch_norm_layers(ModelGraph(model)):
        return
    copy = one_shot.copy_model(model)
    batch_norm.recalibrate_batch_norm(copy, x_fit)
    fresh = metrics.accuracy(copy, data.x_test, data.y_test)
    if fresh - accuracy > 0.02:
        print(
            f"Its BatchNormalization statistics are stale: re-estimated on the training "
            f"data, test accuracy is {fresh:.4f}, not {accuracy:.4f} (the model saved "
            "keeps them as trained). `keras-heavytail compress` re-estimates them; in "
            "Python, kht.pruning.batch_norm.recalibrate_batch_norm(model, x_train)."
        )


def live_units(model):
    """Units of the prunable kernel layers with a nonzero incoming weight."""
    import numpy as np

    from keras_heavytail import compressibility
    from keras_heavytail.pruning import one_shot

    count = 0
    for layer in one_shot.prunable_layers(model):
        kernel = compressibility.units_last(layer, np.asarray(layer.kernel))
        count += int(np.sum(np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)))
    return count
