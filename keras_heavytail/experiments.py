"""The paper's protocol as functions: train with and without noise, measure.

`run_protocol` trains a noise-free SGD baseline and heavy-tailed settings
under one `Protocol` (epochs, or until a full-training-set accuracy as the
paper's code stops), then measures every model: test accuracy,
compressibility, pruning curves, and the iso-accuracy point, the fewest
hidden neurons that keep a pruned model within `iso_tolerance` of the dense
SGD model's accuracy (chosen on a validation split, reported on test).

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import dataclasses
import math
import time

import keras
import numpy as np

from keras_heavytail import compressibility
from keras_heavytail import defaults
from keras_heavytail import pruning
from keras_heavytail import topology
from keras_heavytail.noise_update import paper_exclusions
from keras_heavytail.optimizers import HeavyTailSGD
from keras_heavytail.shrinking import shrink

ARCHITECTURES = defaults.ARCHITECTURES


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def build_model(
    architecture,
    input_shape,
    num_classes,
    width=defaults.WIDTH,
    depth=2,
    seed=0,
    use_bias=True,
):
    """The paper's networks: MLPs, a small CNN, and the theory's mean-field net.

    - `"mlp"`: one hidden ReLU layer of `width`, logits out.
    - `"deep_mlp"`: `depth` hidden layers of `width`.
    - `"cnn"`: two 3x3 conv blocks (32 and 64 filters, max-pooling), a dense
      layer of `width`.
    - `"mean_field"`: the two-layer network of the theory,
      `f(x) = (1/n) sum_i b_i relu(<theta_i, x>)` with `n = width`, no hidden
      bias, and a fixed (not trainable) second layer of random signs `b_i`
      (one per unit and class). Its gradients are O(1/n): train it with a
      learning rate scaled by `n` (`Protocol` does).

    Args:
        architecture: one of `defaults.ARCHITECTURES`. Defaults to none; required.
        input_shape: e.g. `(28, 28, 1)`.
        num_classes: outputs (logits).
        width: hidden units. Defaults to `defaults.WIDTH`.
        depth: hidden layers of `"deep_mlp"`. Defaults to `2`.
        seed: weight initialisation seed. Defaults to `0`.
        use_bias: biases in the hidden layers (the paper's code has none).
            Defaults to `True`.

    Returns:
        An uncompiled `keras.Sequential`.
    """
    _check_choice(architecture, "architecture", ARCHITECTURES)
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(tuple(input_shape))]
    if architecture == "cnn":
        for i, filters in enumerate((32, 64), start=1):
            layers += [
                keras.layers.Conv2D(
                    filters, 3, padding="same", activation="relu",
                    use_bias=use_bias, name=f"conv{i}",
                ),
                keras.layers.MaxPooling2D(name=f"pool{i}"),
            ]  # fmt: skip
    layers.append(keras.layers.Flatten(name="flatten"))
    if architecture == "mean_field":
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], (width, num_classes))
        layers += [
            keras.layers.Dense(
                width, activation="relu", use_bias=False, name="hidden1"
            ),
            keras.layers.Dense(
                num_classes,
                use_bias=False,
                trainable=False,
                kernel_initializer=keras.initializers.Constant(signs / width),
                name="logits",
            ),
        ]
        return keras.Sequential(layers, name=f"{architecture}_{width}")
    hidden = depth if architecture == "deep_mlp" else 1
    for i in range(hidden):
        layers.append(
            keras.layers.Dense(
                width, activation="relu", use_bias=use_bias, name=f"hidden{i + 1}"
            )
        )
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=f"{architecture}_{width}")


@dataclasses.dataclass
class Setting:
    """One optimiser setting of the protocol; `noise=None` is the SGD baseline."""

    label: str
    noise: str = None
    alpha: float = defaults.ALPHA
    sigma: float = 0.0
    anneal: bool = False  # sigma decays linearly to 0 over the budget


@dataclasses.dataclass
class Protocol:
    """How every setting of a run is trained and measured.

    `Protocol.preset("paper")` is the reference code's setting where it
    matters: bias-free hidden layers, width 5000, lr 0.01, batch 5000, and
    training until 95% accuracy on the full training set, checked every 100
    steps (at most `epochs`).
    """

    name: str = "default"
    architecture: str = "mlp"
    width: int = defaults.WIDTH
    depth: int = 2
    use_bias: bool = True
    lr: float = defaults.LEARNING_RATE
    momentum: float = 0.0
    weight_decay: float = None
    batch_size: int = defaults.BATCH_SIZE
    epochs: int = defaults.EPOCHS
    target_train_accuracy: float = None
    check_every: int = 100
    validation_fraction: float = 0.2
    ratios: tuple = defaults.PRUNE_RATIOS
    scores: tuple = ("norm",)
    max_rel_sq_error: float = defaults.MAX_REL_SQ_ERROR
    iso_tolerance: float = defaults.ISO_TOLERANCE
    iso_steps: int = 10
    fine_tune_epochs: int = 1

    def __post_init__(self):
        _check_choice(self.architecture, "architecture", ARCHITECTURES)
        if self.target_train_accuracy is not None and not (
            0.0 < self.target_train_accuracy <= 1.0
        ):
            raise ValueError(
                "`target_train_accuracy` is a fraction in (0, 1] (0.95 for 95%). "
                f"Received: target_train_accuracy={self.target_train_accuracy!r}"
            )
        if not (
            isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0
        ):
            raise ValueError(
                f"`lr` must be a finite float > 0. Received: lr={self.lr!r}"
            )
        for name in (
            "width",
            "depth",
            "batch_size",
            "epochs",
            "check_every",
            "iso_steps",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive int. Received: {name}={value!r}"
                )
        self.ratios = tuple(self.ratios)
        self.scores = tuple(self.scores)

    @classmethod
    def preset(cls, name, **overrides):
        """The named protocol (`"default"` or `"paper"`) with `overrides`."""
        _check_choice(name, "protocol", tuple(PRESETS))
        return cls(**{**PRESETS[name], "name": name, **overrides})

    @property
    def effective_lr(self):
        """The optimizer's learning rate: `lr`, times `width` for mean-field."""
        return self.lr * self.width if self.architecture == "mean_field" else self.lr


PRESETS = {
    "default": {},
    "paper": {
        "use_bias": False,
        "width": 5000,
        "lr": 0.01,
        "batch_size": 5000,
        "epochs": 3000,
        "target_train_accuracy": 0.95,
        "check_every": 100,
    },
}


def default_settings(
    alpha=defaults.ALPHA, sigma=defaults.SIGMA, noises=(defaults.NOISE,)
):
    """The SGD baseline and one heavy-tailed setting per noise structure."""
    return [Setting("SGD")] + [
        Setting(
            f"HeavyTailSGD({noise}, alpha={alpha:g}, sigma={sigma:g})",
            noise,
            alpha,
            sigma,
        )
        for noise in noises
    ]


def accuracy(model, x, y, batch_size=1024):
    """Accuracy of a classifier on `(x, y)`, predicted in eager chunks.

    Eager calls work inside a running `fit` (in a callback), where a nested
    `model.evaluate` would not.
    """
    correct = 0
    for start in range(0, len(y), batch_size):
        outputs = keras.ops.convert_to_numpy(model(x[start : start + batch_size]))
        correct += int(np.sum(np.argmax(outputs, -1) == y[start : start + batch_size]))
    return correct / len(y)


class StopAtTrainAccuracy(keras.callbacks.Callback):
    """Stops training once accuracy on the whole training set reaches a threshold.

    The paper's reference code trains until 95% training accuracy, measured
    on every training example (not the running minibatch accuracy) every 100
    iterations. Each check is kept in `checks` as `(step, accuracy)`.

    Args:
        x: the training inputs. Defaults to none; required.
        y: the training integer labels. Defaults to none; required.
        threshold: a fraction in (0, 1] (0.95 for 95%). Defaults to `0.95`.
        every: steps between checks. Defaults to `100`.

    Example:

    >>> stop = StopAtTrainAccuracy(x_train, y_train, 0.95, every=100)
    >>> model.fit(x_train, y_train, epochs=1000, callbacks=[stop])  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    def __init__(self, x, y, threshold=0.95, every=100):
        super().__init__()
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not (0.0 < threshold <= 1.0)
        ):
            raise ValueError(
                "`threshold` is a fraction in (0, 1] (0.95 for 95%). "
                f"Received: threshold={threshold!r}"
            )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"`every` must be a positive int. Received: every={every!r}"
            )
        self.x = np.asarray(x)
        self.y = np.asarray(y).astype("int64").ravel()
        if len(self.x) != len(self.y) or len(self.y) == 0:
            raise ValueError(
                f"`x` and `y` must hold the same number (> 0) of examples. "
                f"Received: {len(self.x)} and {len(self.y)}"
            )
        self.threshold = float(threshold)
        self.every = every
        self.checks = []
        self.stopped_at = None
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every:
            return
        reached = accuracy(self.model, self.x, self.y)
        self.checks.append((self._step, reached))
        if reached >= self.threshold:
            self.stopped_at = self._step
            self.model.stop_training = True


class _EpochProgress(keras.callbacks.Callback):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.3f}")


class _HoldMasks(keras.callbacks.Callback):
    """Re-applies pruning masks after every step, so pruned weights stay zero."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        pruning.apply_masks(self.model, self.masks)


def make_optimizer(setting, protocol, seed, total_steps=None, model=None):
    """SGD for the baseline, else HeavyTailSGD (sigma annealed if asked).

    With `model`, its output layer and first convolution stay noise-free, as
    in the paper.
    """
    lr = protocol.effective_lr
    common = dict(momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    if setting.noise is None:
        return keras.optimizers.SGD(lr, **common)
    sigma = setting.sigma
    if setting.anneal:
        if not total_steps:
            raise ValueError("An annealed setting needs the number of training steps.")
        sigma = keras.optimizers.schedules.PolynomialDecay(sigma, total_steps, 0.0)
    optimizer = HeavyTailSGD(
        lr, alpha=setting.alpha, sigma=sigma, noise=setting.noise, seed=seed, **common
    )
    if model is not None:
        optimizer.exclude_from_noise(paper_exclusions(model))
    return optimizer


@dataclasses.dataclass
class Split:
    """The arrays of one run: fit, validation and test."""

    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @classmethod
    def of(cls, dataset, protocol, seed=0):
        x_fit, y_fit, x_val, y_val = dataset.validation_split(
            protocol.validation_fraction, seed
        )
        return cls(x_fit, y_fit, x_val, y_val, dataset.x_test, dataset.y_test)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or inf; keeps that step.

    `keras.callbacks.TerminateOnNaN` stops as quietly; `train_one` then
    raises, naming the step and the first non-finite variable.
    """

    def __init__(self):
        super().__init__()
        self.step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.model.stop_training = True


def train_one(
    dataset,
    setting,
    protocol,
    seed=0,
    progress=None,
    split=None,
    backup_dir=None,
    callbacks=None,
):
    """Trains one model on the fit split; returns `(model, seconds, epochs, steps)`.

    Args:
        dataset: a `keras_heavytail.datasets.Dataset`. Defaults to none; required.
        setting: a `Setting`. Defaults to none; required.
        protocol: a `Protocol`. Defaults to none; required.
        seed: of the weights, the noise and the data order. Defaults to `0`.
        progress: a tqdm-like bar advanced once per epoch. Defaults to `None`.
        split: the `Split` to train on. Defaults to `None` (`Split.of`).
        backup_dir: a folder for `keras.callbacks.BackupAndRestore`: a run
            killed mid-training resumes from its last finished epoch when
            called again with the same arguments, and ends bit-identical to
            an uninterrupted run (the noise is a function of the iteration).
            The folder is deleted when training ends. Defaults to `None`.
        callbacks: more Keras callbacks. Defaults to `None`.

    Raises:
        RuntimeError: the loss or a weight became NaN or inf (the step and
            the first non-finite variable are named).
    """
    split = split or Split.of(dataset, protocol)
    model = build_model(
        protocol.architecture,
        dataset.input_shape,
        dataset.num_classes,
        protocol.width,
        protocol.depth,
        seed,
        protocol.use_bias,
    )
    steps_per_epoch = math.ceil(len(split.y_fit) / protocol.batch_size)
    model.compile(
        optimizer=make_optimizer(
            setting, protocol, seed, protocol.epochs * steps_per_epoch, model
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    divergence = StopOnDivergence()
    callbacks = [divergence, *(callbacks or [])]
    if backup_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(str(backup_dir)))
    if protocol.target_train_accuracy is not None:
        callbacks.append(
            StopAtTrainAccuracy(
                split.x_fit,
                split.y_fit,
                protocol.target_train_accuracy,
                protocol.check_every,
            )
        )
    if progress is not None:
        callbacks.append(_EpochProgress(progress))
    start = time.perf_counter()
    history = model.fit(
        split.x_fit,
        split.y_fit,
        batch_size=protocol.batch_size,
        epochs=protocol.epochs,
        verbose=0,
        callbacks=callbacks,
        shuffle=True,
    )
    # Epochs done in all (a resumed run counts those before the backup too).
    ran = history.epoch[-1] + 1 if history.epoch else 0
    if progress is not None:  # early stop or resume: count the epochs not run here
        progress.update(protocol.epochs - len(history.epoch))
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    what = f"{setting.label} seed {seed}"
    check_finite(model, what, steps)
    if divergence.step is not None:
        raise RuntimeError(
            f"{what} diverged: the loss is not finite at step {divergence.step}. "
            "Lower sigma or the learning rate, or raise alpha."
        )
    return model, time.perf_counter() - start, ran, steps


def check_finite(model, what, steps):
    """Raises a RuntimeError naming the first non-finite variable of `model`.

    Heavy-tailed noise makes divergence a normal event: a diverged run must
    end with an error, never be saved or measured as a result.
    """
    for variable in model.variables:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
            path = getattr(variable, "path", None) or variable.name
            raise RuntimeError(
                f"{what} diverged: variable {path!r} is not finite after step "
                f"{steps}. Lower sigma or the learning rate, or raise alpha."
            )


def _hidden_units(model):
    return sum(layer.kernel.shape[-1] for layer in pruning.prunable_layers(model))


def _fine_tuned(model, masks, protocol, split, seed):
    """A masked copy of `model` trained `fine_tune_epochs` more with plain SGD."""
    tuned = pruning.apply_masks(pruning.copy_model(model), masks)
    keras.utils.set_random_seed(seed)
    tuned.compile(
        optimizer=keras.optimizers.SGD(
            protocol.effective_lr, momentum=protocol.momentum
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    tuned.fit(
        split.x_fit,
        split.y_fit,
        batch_size=protocol.batch_size,
        epochs=protocol.fine_tune_epochs,
        verbose=0,
        callbacks=[_HoldMasks(masks)],
    )
    return tuned


def iso_accuracy(model, protocol, split, reference_accuracy, seed=0, fine_tune=False):
    """The iso-accuracy point of one model.

    The largest neuron-pruning ratio (bisection on the validation split)
    whose pruned model (fine-tuned for `protocol.fine_tune_epochs` with the
    masks held, if `fine_tune`) keeps validation accuracy >=
    `reference_accuracy - protocol.iso_tolerance`; then the pruned model's
    hidden neurons, parameters once shrunk, and test accuracy.

    Returns:
        `{"ratio_at_iso", "neurons_at_iso_accuracy", "params_at_iso_accuracy",
        "test_accuracy_at_iso"}`.
    """
    target = max(0.0, reference_accuracy - protocol.iso_tolerance)
    score = protocol.scores[0]

    def pruned_at(ratio):
        masks = pruning.pruning_masks(model, ratio, "neuron", score=score)
        if fine_tune:
            return _fine_tuned(model, masks, protocol, split, seed)
        return pruning.apply_masks(pruning.copy_model(model), masks)

    def passes(ratio):
        return accuracy(pruned_at(ratio), split.x_val, split.y_val) >= target

    ratio = pruning.bisect_ratio(passes, protocol.iso_steps)
    pruned = pruned_at(ratio)
    small = shrink(pruned)
    return {
        "ratio_at_iso": ratio,
        "neurons_at_iso_accuracy": _hidden_units(small),
        "params_at_iso_accuracy": int(small.count_params()),
        "test_accuracy_at_iso": accuracy(pruned, split.x_test, split.y_test),
    }


def measure(model, protocol, split, reference_accuracy=None, seed=0):
    """Accuracy, compressibility, pruning and iso-accuracy numbers of one model.

    Pruning accuracies are named `accuracy@70%pruned` for the first score and
    `accuracy@70%pruned(path)` for the others; `reference_accuracy` (the SGD
    model's validation accuracy) defaults to this model's own.
    """
    val_accuracy = accuracy(model, split.x_val, split.y_val)
    report = compressibility.compressibility_report(model, protocol.max_rel_sq_error)
    prunable = [layer.name for layer in pruning.prunable_layers(model)]
    hidden = [row for row in report.rows if row["layer"] in prunable]
    kernels = [
        topology.as_array(layer.kernel) for layer in pruning.prunable_layers(model)
    ]
    whole = report.rows[-1]
    row = {
        "test_accuracy": accuracy(model, split.x_test, split.y_test),
        "val_accuracy": val_accuracy,
        "neurons": _hidden_units(model),
        "tail_index": float(np.nanmean([r["tail_index"] for r in hidden])),
        "neuron_tail_index": float(
            np.nanmean([r["neuron_tail_index"] for r in hidden])
        ),
        "paper_prune_ratio": float(np.mean([r["neuron_prune_ratio"] for r in hidden])),
        "paper_prune_ratio_l1": float(
            np.mean([r["neuron_prune_ratio_l1"] for r in hidden])
        ),
        "parameter_prune_ratio": whole["parameter_prune_ratio"],
        "mean_neuron_norm": float(
            np.mean(np.concatenate([compressibility.neuron_norms(k) for k in kernels]))
        ),
        "best_k_error@0.1": float(np.mean([r["best_k_error@0.1"] for r in hidden])),
    }
    paper = pruning.prune(
        model, criterion="paper", max_rel_sq_error=protocol.max_rel_sq_error
    )
    row["accuracy_at_criterion"] = accuracy(paper, split.x_test, split.y_test)
    for i, score in enumerate(protocol.scores):
        curve = pruning.pruning_curve(
            model, split.x_test, split.y_test, list(protocol.ratios), "neuron",
            score=score, from_logits=True,
        )  # fmt: skip
        suffix = "" if i == 0 else f"({score})"
        for point in curve:
            key = f"accuracy@{int(round(point['ratio'] * 100))}%pruned{suffix}"
            row[key] = point["accuracy"]
    reference = val_accuracy if reference_accuracy is None else reference_accuracy
    row.update(iso_accuracy(model, protocol, split, reference, seed))
    if protocol.fine_tune_epochs:
        tuned = iso_accuracy(model, protocol, split, reference, seed, fine_tune=True)
        row.update({f"{key}_finetuned": value for key, value in tuned.items()})
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

    def markdown(self, columns=None):
        """The table as markdown: `mean ± sample std` over seeds."""
        columns = columns or [c for c in self.table[0] if c not in ("setting", "seeds")]
        lines = [
            "| setting | " + " | ".join(columns) + " |",
            "| --- |" + " ---: |" * len(columns),
        ]
        for row in self.table:
            cells = []
            for column in columns:
                mean, spread = row.get(column, (float("nan"), 0.0))
                cells.append(
                    f"{mean:.3f} ± {spread:.3f}" if row["seeds"] > 1 else f"{mean:.3f}"
                )
            lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def headline(self):
        """One sentence per setting: its iso-accuracy neurons against SGD's."""
        base = self.table[0]
        lines = []
        for row in self.table[1:]:
            for suffix, how in (
                ("", "one-shot"),
                ("_finetuned", "after a masked fine-tune"),
            ):
                key = "iso_neuron_ratio_vs_sgd" + suffix
                if key not in row:
                    continue
                ratio, spread = row[key]
                lines.append(
                    f"{row['setting']} ({how}): {row['neurons_at_iso_accuracy' + suffix][0]:.0f} "
                    f"hidden neurons keep {base['setting']}'s accuracy within tolerance, "
                    f"against {base['neurons_at_iso_accuracy' + suffix][0]:.0f} for "
                    f"{base['setting']}: ratio {ratio:.2f} ({_verdict(ratio, spread, row['seeds'])})."
                )
        return lines


def _verdict(ratio, spread, seeds):
    """Words for an iso-accuracy ratio, honest about its spread over seeds."""
    if seeds < 2:
        return "one seed, no spread: not a conclusion"
    if abs(ratio - 1.0) <= spread:
        return f"± {spread:.2f} over {seeds} seeds: no difference from SGD"
    more = "fewer" if ratio < 1 else "more"
    return f"± {spread:.2f} over {seeds} seeds: {more} neurons than SGD"


def _mean_spread(values):
    values = np.asarray(values, dtype="float64")
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), spread


def aggregate(runs, labels, baseline="SGD"):
    """Per setting, `(mean, sample std)` over seeds of every number.

    Each setting also gets `iso_neuron_ratio_vs_sgd` (and `_finetuned`): per
    seed, its iso-accuracy neurons over the baseline's for the same seed
    (< 1 means the noise pays), then mean and spread over seeds.
    """
    table = []
    base = {run["seed"]: run for run in runs if run["setting"] == baseline}
    for label in labels:
        mine = [run for run in runs if run["setting"] == label]
        if not mine:
            continue
        numbers = [
            k for k, v in mine[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"
        ]  # fmt: skip
        row = {"setting": label, "seeds": len(mine)}
        for key in numbers:
            row[key] = _mean_spread([run[key] for run in mine])
        for suffix in ("", "_finetuned"):
            key = "neurons_at_iso_accuracy" + suffix
            pairs = [
                (r[key], base[r["seed"]][key])
                for r in mine
                if r["seed"] in base and key in r
            ]
            if pairs:
                row["iso_neuron_ratio_vs_sgd" + suffix] = _mean_spread(
                    [mine_n / max(base_n, 1) for mine_n, base_n in pairs]
                )
        table.append(row)
    return table


class _NoBar:
    """What a run uses of a tqdm bar, for when tqdm is absent or off."""

    disable = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass

    def set_description(self, text):
        pass

    def set_postfix(self, **values):
        pass


def progress_bar(total, unit, enabled=True):
    """A tqdm bar on a terminal (none elsewhere, or without tqdm installed)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit=unit, disable=None)


def _slug(label):
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()


def _report_line(bar, text):
    """One line per finished run: above the bar on a terminal, plain otherwise."""
    if bar is not None and not bar.disable:
        bar.write(text)
    else:
        print(text, flush=True)


def run_protocol(
    dataset,
    settings=None,
    protocol=None,
    seeds=(0,),
    progress=True,
    output=None,
    baseline="SGD",
):
    """Trains every setting for every seed under one protocol and measures it.

    The first setting should be the noise-free baseline (`Setting("SGD")`):
    its validation accuracy for a seed is the reference of the iso-accuracy
    point of every setting for that seed.

    Args:
        dataset: a `keras_heavytail.datasets.Dataset`.
        settings: list of `Setting`. Defaults to `default_settings()`.
        protocol: a `Protocol`. Defaults to `Protocol()`.
        seeds: one run per seed and setting. Defaults to `(0,)`.
        progress: a progress bar on a terminal, and one line per finished
            run either way. Defaults to `True`.
        output: a folder; each finished run's row is appended to
            `output/runs.jsonl` and its model saved in `output/models/`, so
            a crash loses at most the run in progress and a rerun with the
            same arguments resumes (a different job there is refused); the
            run in progress resumes from its last finished epoch
            (`keras.callbacks.BackupAndRestore`).
            Defaults to `None` (nothing written).
        baseline: the label of the noise-free setting. Defaults to `"SGD"`.

    Returns:
        A `ProtocolResult`: `runs` (one dict per run), `table` (per setting,
        `(mean, sample std)` of every number), `models` (`{(label, seed): model}`).

    Raises:
        RuntimeError: a run diverged (NaN weights).
    """
    from keras_heavytail import files

    settings = settings or default_settings()
    protocol = protocol or Protocol()
    labels = [s.label for s in settings]
    if baseline in labels and labels.index(baseline) != 0:
        settings = sorted(settings, key=lambda s: s.label != baseline)
    config = {
        "dataset": dataset.summary(),
        "protocol": dataclasses.asdict(protocol),
        "seeds": list(seeds),
        "settings": [dataclasses.asdict(s) for s in settings],
    }
    log = None
    if output is not None:
        log = files.RunLog(f"{output}/runs.jsonl", config).__enter__()
    runs, models = [], {}
    try:
        total = len(settings) * len(seeds) * protocol.epochs
        with progress_bar(total, "epoch", progress) as bar:
            for setting in settings:
                for seed in seeds:
                    row, model = _run_one(
                        dataset,
                        setting,
                        protocol,
                        seed,
                        bar,
                        output,
                        log,
                        runs,
                        baseline,
                    )
                    runs.append(row)
                    models[(setting.label, seed)] = model
                    if progress:
                        _report_line(
                            bar,
                            f"[{len(runs)}/{len(settings) * len(seeds)}] {setting.label} "
                            f"seed {seed}: test accuracy {row['test_accuracy']:.4f}, "
                            f"{row['neurons_at_iso_accuracy']} neurons at iso-accuracy "
                            f"({row['train_seconds']:.0f} s)",
                        )
    finally:
        if log is not None:
            log.__exit__(None, None, None)
    return ProtocolResult(config, runs, aggregate(runs, labels, baseline), models)


def _run_one(dataset, setting, protocol, seed, bar, output, log, runs, baseline):
    """One run: from the log and its saved model if it finished before, else trained."""
    from keras_heavytail import files

    model_path = (
        None
        if output is None
        else f"{output}/models/{_slug(setting.label)}_seed{seed}.keras"
    )
    done = log.find(setting=setting.label, seed=seed) if log is not None else None
    if done is not None and model_path is not None:
        try:
            model = keras.saving.load_model(model_path)
            bar.update(protocol.epochs)
            return done, model
        except (OSError, ValueError):
            pass  # the model file is missing or broken: train again
    bar.set_description(f"{setting.label} seed {seed}")
    split = Split.of(dataset, protocol)
    backup = (
        None
        if output is None
        else f"{output}/models/.{_slug(setting.label)}_seed{seed}.backup"
    )
    model, seconds, ran, steps = train_one(
        dataset, setting, protocol, seed, bar, split, backup
    )
    check_finite(model, f"{setting.label} seed {seed}", steps)
    reference = next(
        (
            r["val_accuracy"]
            for r in runs
            if r["setting"] == baseline and r["seed"] == seed
        ),
        None,
    )
    measured, _ = measure(model, protocol, split, reference, seed)
    row = {
        "setting": setting.label,
        "seed": seed,
        "epochs_run": ran,
        "steps": steps,
        **measured,
        "train_seconds": seconds,
    }
    if model_path is not None:
        files.save_model(model, model_path)
    if log is not None:
        row = log.append(row)
    return row, model
