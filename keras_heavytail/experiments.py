"""The paper's protocol as one function: train with and without noise, measure.

`run_protocol` trains a noise-free SGD baseline and heavy-tailed runs under
the same budget (epochs, or until a train-accuracy threshold as the paper's
code stops), then measures test accuracy, compressibility and pruning
curves, and returns per-run rows and a mean/spread table over seeds.
"""

import dataclasses
import json
import math
import time

import keras
import numpy as np

from keras_heavytail import compressibility
from keras_heavytail import pruning
from keras_heavytail.optimizers import HeavyTailSGD
from keras_heavytail.optimizers import paper_exclusions

ARCHITECTURES = ("mlp", "deep_mlp", "cnn")
PRUNE_RATIOS = (0.5, 0.7, 0.9)


def build_model(architecture, input_shape, num_classes, width=2000, depth=2, seed=0):
    """The paper's networks: one-hidden-layer MLP, deeper MLP, small CNN.

    Args:
        architecture: `"mlp"` (one hidden layer of `width`), `"deep_mlp"`
            (`depth` hidden layers of `width`) or `"cnn"` (two 3x3 conv
            blocks of 32 and 64 filters, max-pooling, a dense layer of
            `width`). Defaults to none; required.
        input_shape: e.g. `(28, 28, 1)`.
        num_classes: outputs (logits).
        width: hidden units. Defaults to `2000`.
        depth: hidden layers of `"deep_mlp"`. Defaults to `2`.
        seed: weight initialisation seed. Defaults to `0`.

    Returns:
        An uncompiled `keras.Sequential`.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"`architecture` must be one of {ARCHITECTURES}. Received: architecture={architecture!r}"
        )
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(tuple(input_shape))]
    if architecture == "cnn":
        layers += [
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
        ]
    layers.append(keras.layers.Flatten(name="flatten"))
    hidden = depth if architecture == "deep_mlp" else 1
    for i in range(hidden):
        layers.append(
            keras.layers.Dense(width, activation="relu", name=f"hidden{i + 1}")
        )
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=f"{architecture}_{width}")


@dataclasses.dataclass
class Setting:
    """One optimiser setting of the protocol; `noise=None` is the SGD baseline."""

    label: str
    noise: str = None
    alpha: float = 1.75
    sigma: float = 0.0
    anneal: bool = False  # sigma decays linearly to 0 over the budget


def default_settings(alpha=1.75, sigma=0.05, noises=("elliptical",)):
    """The SGD baseline and one heavy-tailed setting per noise structure."""
    return [Setting("SGD")] + [
        Setting(f"HeavyTailSGD({noise})", noise, alpha, sigma) for noise in noises
    ]


class _StopAtTrainAccuracy(keras.callbacks.Callback):
    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get("accuracy", 0.0) >= self.threshold:
            self.model.stop_training = True


class _EpochProgress(keras.callbacks.Callback):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.3f}")


def make_optimizer(setting, lr, momentum, seed, total_steps=None, model=None):
    """SGD for the baseline, else HeavyTailSGD (sigma annealed if asked).

    With `model`, its output layer and first convolution stay noise-free, as
    in the paper.
    """
    if setting.noise is None:
        return keras.optimizers.SGD(lr, momentum=momentum)
    sigma = setting.sigma
    if setting.anneal:
        if not total_steps:
            raise ValueError("An annealed setting needs the number of training steps.")
        sigma = keras.optimizers.schedules.PolynomialDecay(sigma, total_steps, 0.0)
    optimizer = HeavyTailSGD(
        lr,
        momentum=momentum,
        alpha=setting.alpha,
        sigma=sigma,
        noise=setting.noise,
        seed=seed,
    )
    if model is not None:
        optimizer.exclude_from_noise(paper_exclusions(model))
    return optimizer


def train_one(
    dataset,
    setting,
    architecture="mlp",
    width=2000,
    depth=2,
    lr=0.05,
    momentum=0.0,
    batch_size=64,
    epochs=5,
    target_train_accuracy=None,
    seed=0,
    progress=None,
):
    """Trains one model; returns it with its training time in seconds."""
    model = build_model(
        architecture, dataset.input_shape, dataset.num_classes, width, depth, seed
    )
    model.compile(
        optimizer=make_optimizer(
            setting,
            lr,
            momentum,
            seed,
            total_steps=epochs * math.ceil(len(dataset.y_train) / batch_size),
            model=model,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if target_train_accuracy is not None:
        callbacks.append(_StopAtTrainAccuracy(target_train_accuracy))
    if progress is not None:
        callbacks.append(_EpochProgress(progress))
    start = time.perf_counter()
    history = model.fit(
        dataset.x_train,
        dataset.y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
        shuffle=True,
    )
    if progress is not None:  # early stop: count the epochs that did not run
        progress.update(epochs - len(history.history.get("loss", [])))
    return model, time.perf_counter() - start, len(history.history.get("loss", []))


def measure(
    model, dataset, ratios=PRUNE_RATIOS, scores=("norm",), max_rel_sq_error=0.1
):
    """Test accuracy, compressibility and neuron-pruning accuracy of one model.

    Pruning accuracies are named `accuracy@70%pruned` for the first score and
    `accuracy@70%pruned(path)` for the others.
    """
    _, accuracy = model.evaluate(
        dataset.x_test, dataset.y_test, verbose=0, batch_size=512
    )
    report = compressibility.compressibility_report(model, max_rel_sq_error)
    prunable = [layer.name for layer in pruning.prunable_layers(model)]
    hidden = [row for row in report.rows if row["layer"] in prunable]
    row = {
        "test_accuracy": float(accuracy),
        "tail_index": float(np.mean([r["tail_index"] for r in hidden])),
        "neuron_tail_index": float(np.mean([r["neuron_tail_index"] for r in hidden])),
        "paper_prune_ratio": float(np.mean([r["neuron_prune_ratio"] for r in hidden])),
        "best_k_error@0.1": float(np.mean([r["best_k_error@0.1"] for r in hidden])),
    }
    for i, score in enumerate(scores):
        curve = pruning.pruning_curve(
            model, dataset.x_test, dataset.y_test, list(ratios), "neuron", score=score
        )
        suffix = "" if i == 0 else f"({score})"
        for point in curve:
            row[f"accuracy@{int(round(point['ratio'] * 100))}%pruned{suffix}"] = point[
                "accuracy"
            ]
    return row, report


@dataclasses.dataclass
class ProtocolResult:
    """Per-run rows, the mean/spread table and the trained models of a protocol run."""

    config: dict
    runs: list
    table: list
    models: dict

    def to_dict(self):
        return {"config": self.config, "runs": self.runs, "table": self.table}

    def markdown(self):
        columns = [c for c in self.table[0] if c not in ("setting", "seeds")]
        lines = [
            "| setting | " + " | ".join(columns) + " |",
            "| --- |" + " ---: |" * len(columns),
        ]
        for row in self.table:
            cells = []
            for column in columns:
                mean, spread = row[column]
                cells.append(
                    f"{mean:.3f} ± {spread:.3f}" if row["seeds"] > 1 else f"{mean:.3f}"
                )
            lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _aggregate(runs, labels):
    table = []
    for label in labels:
        mine = [run for run in runs if run["setting"] == label]
        numbers = [
            k for k, v in mine[0].items() if isinstance(v, float) and k != "seed"
        ]
        row = {"setting": label, "seeds": len(mine)}
        for key in numbers:
            values = np.array([run[key] for run in mine], dtype="float64")
            spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            row[key] = (float(values.mean()), spread)
        table.append(row)
    return table


def run_protocol(
    dataset,
    settings=None,
    architecture="mlp",
    width=2000,
    depth=2,
    lr=0.05,
    momentum=0.0,
    batch_size=64,
    epochs=5,
    target_train_accuracy=None,
    seeds=(0,),
    ratios=PRUNE_RATIOS,
    scores=("norm",),
    max_rel_sq_error=0.1,
    progress=True,
    log_path=None,
):
    """Trains every setting for every seed under one budget and measures it.

    Args:
        dataset: a `keras_heavytail.datasets.Dataset`.
        settings: list of `Setting`. Defaults to `default_settings()`: SGD
            and HeavyTailSGD with elliptical noise, alpha 1.75, sigma 0.05.
        architecture, width, depth: as in `build_model`.
        lr, momentum, batch_size: SGD's, shared by all settings.
        epochs: the budget. Defaults to `5`.
        target_train_accuracy: stop a run early once its training accuracy
            reaches this (the paper's convergence rule). Defaults to `None`.
        seeds: one run per seed and setting. Defaults to `(0,)`.
        ratios: neuron-pruning ratios of the pruning curve.
            Defaults to `(0.5, 0.7, 0.9)`.
        scores: neuron scores of the pruning curves (`"norm"`, `"path"`).
            Defaults to `("norm",)`.
        max_rel_sq_error: the paper criterion's budget. Defaults to `0.1`.
        progress: show a progress bar over all epochs (on a terminal).
            Defaults to `True`.
        log_path: a JSON-lines file that gets each run's row as soon as it
            is measured, so a crash or an interrupt loses at most the run in
            progress. Defaults to `None`.

    Returns:
        A `ProtocolResult`: `runs` (one dict per run), `table` (per setting,
        `(mean, sample std)` of every number), `models` (`{(label, seed): model}`).
    """
    from tqdm.auto import tqdm

    settings = settings or default_settings()
    config = {
        "dataset": dataset.summary(),
        "architecture": architecture,
        "width": width,
        "depth": depth,
        "lr": lr,
        "momentum": momentum,
        "batch_size": batch_size,
        "epochs": epochs,
        "target_train_accuracy": target_train_accuracy,
        "seeds": list(seeds),
        "settings": [dataclasses.asdict(s) for s in settings],
        "pruning": {
            "ratios": list(ratios),
            "scores": list(scores),
            "max_rel_sq_error": max_rel_sq_error,
        },
    }
    runs, models = [], {}
    total = len(settings) * len(seeds) * epochs
    with tqdm(
        total=total, desc="training", unit="epoch", disable=None if progress else True
    ) as bar:
        for setting in settings:
            for seed in seeds:
                bar.set_description(f"{setting.label} seed {seed}")
                model, seconds, ran = train_one(
                    dataset,
                    setting,
                    architecture,
                    width,
                    depth,
                    lr,
                    momentum,
                    batch_size,
                    epochs,
                    target_train_accuracy,
                    seed,
                    bar,
                )
                row, _ = measure(model, dataset, ratios, scores, max_rel_sq_error)
                runs.append(
                    {
                        "setting": setting.label,
                        "seed": seed,
                        "epochs_run": ran,
                        **row,
                        "train_seconds": seconds,
                    }
                )
                models[(setting.label, seed)] = model
                if log_path is not None:
                    with open(log_path, "a") as log:
                        log.write(json.dumps(runs[-1]) + "\n")
    result = ProtocolResult(
        config, runs, _aggregate(runs, [s.label for s in settings]), models
    )
    if any(math.isnan(run["test_accuracy"]) for run in runs):
        raise RuntimeError("A run diverged (NaN); lower sigma or the learning rate.")
    return result
