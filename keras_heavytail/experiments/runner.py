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
import shutil
import time

import keras
import numpy as np

from keras_heavytail import compressibility
from keras_heavytail import defaults
from keras_heavytail.arrays import as_array
from keras_heavytail.experiments import iso_accuracy as iso
from keras_heavytail.experiments.protocol import ARCHITECTURES  # noqa: F401  (re-exported)
from keras_heavytail.experiments.protocol import PRESETS  # noqa: F401
from keras_heavytail.experiments.protocol import Protocol
from keras_heavytail.experiments.protocol import Setting  # noqa: F401
from keras_heavytail.experiments.protocol import Split
from keras_heavytail.experiments.protocol import build_model  # noqa: F401
from keras_heavytail.experiments.protocol import default_settings
from keras_heavytail.experiments.results import ProtocolResult
from keras_heavytail.experiments.results import aggregate
from keras_heavytail.experiments.training import StopAtTrainAccuracy  # noqa: F401
from keras_heavytail.experiments.training import StopOnDivergence  # noqa: F401
from keras_heavytail.experiments.training import check_finite  # noqa: F401
from keras_heavytail.experiments.training import make_optimizer  # noqa: F401
from keras_heavytail.experiments.training import prints_lines
from keras_heavytail.experiments.training import progress_bar
from keras_heavytail.experiments.training import train_one
from keras_heavytail.metrics import accuracy
from keras_heavytail.pruning import one_shot as pruning
from keras_heavytail.pruning.graph import model_graph
from keras_heavytail.pruning.shrinking import shrink


class _HoldMasks(keras.callbacks.Callback):
    """Re-applies pruning masks after every step, so pruned weights stay zero.

    The model is walked once per training, not once per step.
    """

    def __init__(self, masks, graph=None):
        super().__init__()
        self.masks = masks
        self.graph = graph

    def on_train_begin(self, logs=None):
        if self.graph is None:
            self.graph = model_graph(self.model)

    def on_train_batch_end(self, batch, logs=None):
        pruning.apply_masks(self.model, self.masks, self.graph)


def _hidden_units(model):
    return sum(layer.kernel.shape[-1] for layer in pruning.prunable_layers(model))


class _Candidates:
    """Masked copies of one model, trained `fine_tune_epochs` more if `fine_tune`.

    One copy serves every candidate of a bisection: each call loads the
    model's weights, applies the masks and (fine-tuning) restores the
    optimizer's fresh state, so Keras traces its functions once, not once per
    candidate. Each call gives what a fresh copy compiled from scratch would.
    """

    def __init__(self, model, protocol, split, seed, fine_tune):
        self.model, self.protocol, self.split, self.seed = model, protocol, split, seed
        self.tuned = pruning.copy_model(model)
        self.graph = model_graph(self.tuned)
        self.fine_tune = fine_tune
        if not fine_tune:
            return
        self.tuned.compile(
            optimizer=keras.optimizers.SGD(protocol.effective_lr, momentum=protocol.momentum),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        optimizer = self.tuned.optimizer
        optimizer.build(self.tuned.trainable_variables)
        self.fresh = [np.array(as_array(v)) for v in optimizer.variables]

    def __call__(self, masks):
        """The masked (and fine-tuned) model: the same object on every call."""
        tuned = self.tuned
        tuned.set_weights(self.model.get_weights())
        pruning.apply_masks(tuned, masks, self.graph)
        if not self.fine_tune:
            return tuned
        for variable, value in zip(tuned.optimizer.variables, self.fresh):
            variable.assign(value)
        keras.utils.set_random_seed(self.seed)
        tuned.fit(
            self.split.x_fit,
            self.split.y_fit,
            batch_size=self.protocol.batch_size,
            epochs=self.protocol.fine_tune_epochs,
            verbose=0,
            callbacks=[_HoldMasks(masks, self.graph)],
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
        "test_accuracy_at_iso", "iso_reached"}`; `iso_reached` is 0.0 when
        not even the unpruned model keeps the accuracy (the neuron count is
        then the whole width, a cap, not a measurement), else 1.0.
    """
    target = max(0.0, reference_accuracy - protocol.iso_tolerance)
    score = protocol.scores[0]

    candidate = _Candidates(model, protocol, split, seed, fine_tune)

    def pruned_at(ratio):
        return candidate(pruning.pruning_masks(model, ratio, "neuron", score=score))

    def passes(ratio):
        return accuracy(pruned_at(ratio), split.x_val, split.y_val) >= target

    ratio = iso.bisect_ratio(passes, protocol.iso_steps)
    reached = ratio > 0 or passes(0.0)
    pruned = pruned_at(ratio)
    small = shrink(pruned)
    return {
        "ratio_at_iso": ratio,
        "neurons_at_iso_accuracy": _hidden_units(small),
        "params_at_iso_accuracy": int(small.count_params()),
        "test_accuracy_at_iso": accuracy(pruned, split.x_test, split.y_test),
        "iso_reached": float(reached),
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
        as_array(layer.kernel) for layer in pruning.prunable_layers(model)
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
        curve = iso.pruning_curve(
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


def _slug(label):
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()


def _report_line(bar, text):
    """One line per finished run: above the bar on a terminal, plain otherwise."""
    if bar is not None and not bar.disable:
        bar.write(text)
    else:
        print(text, flush=True)


def _setting_key(setting):
    """A setting as its run log records it; the paper's absolute scale unnamed,
    so logs of 0.3 (before `sigma_scale`) resume."""
    key = dataclasses.asdict(setting)
    if key["sigma_scale"] == defaults.PAPER_SIGMA_SCALE:
        del key["sigma_scale"]
    return key


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
        dataset: a `keras_heavytail.experiments.Dataset`.
        settings: list of `Setting`. Defaults to `default_settings()`.
        protocol: a `Protocol`. Defaults to `Protocol()`.
        seeds: one run per seed and setting. Defaults to `(0,)`.
        progress: a progress bar on a terminal, and one line per finished
            run either way. Defaults to `True`.
        output: a folder; each finished run's row is appended to
            `output/runs.jsonl` and its model saved in `output/models/`, so
            a crash loses at most the run in progress and a rerun with the
            same arguments resumes (a different job there is refused); the
            run in progress resumes from its last finished epoch.
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
    seeds = tuple(seeds)
    _check_unique(labels, "setting labels")
    _check_unique(seeds, "seeds")
    _check_distinct_files(labels)
    if baseline in labels and labels.index(baseline) != 0:
        settings = sorted(settings, key=lambda s: s.label != baseline)
    config = {
        "dataset": dataset.summary(),
        "protocol": dataclasses.asdict(protocol),
        "seeds": list(seeds),
        "settings": [_setting_key(s) for s in settings],
    }
    log = None
    if output is not None:
        log = files.RunLog(f"{output}/runs.jsonl", config).__enter__()
    runs, models = [], {}
    try:
        total = len(settings) * len(seeds) * protocol.epochs
        with progress_bar(total, "epoch", progress) as bar:
            if prints_lines(bar):
                print(
                    f"{len(settings)} setting(s) x {len(seeds)} seed(s), up to "
                    f"{protocol.epochs} epochs each: a line per epoch and per finished run.",
                    flush=True,
                )
            for setting in settings:
                for seed in seeds:
                    started = time.perf_counter()
                    row, model, resumed = _run_one(
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
                            + (f"(resumed: from the run log, trained before in "
                               f"{row['train_seconds']:.0f} s)" if resumed else
                               f"(trained in {row['train_seconds']:.0f} s, "
                               f"{time.perf_counter() - started:.0f} s with its "
                               "measurements)"),  # fmt: skip
                        )
    finally:
        if log is not None:
            log.__exit__(None, None, None)
    return ProtocolResult(config, runs, aggregate(runs, labels, baseline), models)


def _check_unique(values, what):
    """Repeated seeds or labels would be counted as independent runs."""
    if not values:
        raise ValueError(f"Give at least one of the {what}. Received: none")
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise ValueError(
            f"The {what} must be distinct: a repeat would be counted as another "
            f"independent run. Received repeats: {', '.join(repeated)}"
        )


def _check_distinct_files(labels):
    """Labels that name the same model files (`SGD` and `sgd`, `a b` and `a_b`)."""
    by_file = {}
    for label in labels:
        by_file.setdefault(_slug(label), []).append(label)
    clashes = [names for names in by_file.values() if len(names) > 1]
    if clashes:
        raise ValueError(
            "Setting labels name their model files (case and punctuation "
            "dropped), so these would share one file: "
            f"{'; '.join(' and '.join(repr(n) for n in names) for names in clashes)}. "
            "Rename one of each."
        )


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
            return done, model, True
        except (OSError, ValueError):
            pass  # the model file is missing (a fresh clone) or broken: retrain
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
    if backup is not None:  # only now: a kill before the save loses nothing
        shutil.rmtree(backup, ignore_errors=True)
    if log is not None and done is None:
        row = log.append(row)
    elif done is not None:  # retrained only to get the model back: keep the log
        row = done
    return row, model, False
