"""Training one model under a `Protocol`: the optimizer, the stopping rules.

`train_one` builds the network, compiles SGD or `HeavyTailSGD` (the paper's
layers noise-free, sigma annealed if asked), and fits on the fit split with
the paper's stopping rule (`StopAtTrainAccuracy`, on the whole training set),
divergence detection (`StopOnDivergence`, `check_finite`) and an optional
exact resume from the last finished epoch (written so that a kill at any
moment leaves a consistent backup).

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import json
import math
import shutil
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_heavytail.experiments.protocol import Split
from keras_heavytail.experiments.protocol import build_model
from keras_heavytail.metrics import accuracy
from keras_heavytail.optimizers.divergence import BLOWN_UP
from keras_heavytail.optimizers.divergence import DIVERGENCE_ADVICE
from keras_heavytail.optimizers.divergence import DivergenceWarning
from keras_heavytail.optimizers.exclusions import paper_exclusions
from keras_heavytail.optimizers.heavy_tail import HeavyTailSGD


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
    """Advances the bar once per epoch; off a terminal (no bar), prints a line."""

    def __init__(self, bar, what, epochs):
        super().__init__()
        self.bar, self.what, self.epochs = bar, what, epochs
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss", float("nan"))
        self.bar.update(1)
        if prints_lines(self.bar):
            print(
                f"  {self.what}: epoch {epoch + 1}/{self.epochs}, loss {loss:.3f} "
                f"({time.perf_counter() - self.start:.0f} s)",
                flush=True,
            )
        else:
            self.bar.set_postfix(loss=f"{loss:.3f}")


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
        lr,
        alpha=setting.alpha,
        sigma=sigma,
        noise=setting.noise,
        sigma_scale=setting.sigma_scale,
        seed=seed,
        **common,
    )
    if model is not None:
        optimizer.exclude_from_noise(paper_exclusions(model))
    return optimizer


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
        dataset: a `keras_heavytail.experiments.Dataset`. Defaults to none; required.
        setting: a `Setting`. Defaults to none; required.
        protocol: a `Protocol`. Defaults to none; required.
        seed: of the weights, the noise and the data order. Defaults to `0`.
        progress: a tqdm-like bar advanced once per epoch. Defaults to `None`.
        split: the `Split` to train on. Defaults to `None` (`Split.of`).
        backup_dir: a folder for the last finished epoch: a run killed
            mid-training (at any moment, also while the backup is written)
            resumes from it when called again with the same arguments, and
            ends bit-identical to an uninterrupted run (the noise is a
            function of the iteration; on the TensorFlow backend, where the
            batches' order resumes too). It is kept after training: delete
            it (`shutil.rmtree`) once the model is saved, so a kill before
            that loses nothing. Defaults to `None`.
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
    initial_epoch = 0
    if backup_dir is not None:
        backup = _EpochBackup(backup_dir)
        initial_epoch = backup.restore(model, protocol.epochs)
        callbacks.insert(0, backup)
    if protocol.target_train_accuracy is not None:
        callbacks.append(
            StopAtTrainAccuracy(
                split.x_fit,
                split.y_fit,
                protocol.target_train_accuracy,
                protocol.check_every,
            )
        )
    what = f"{setting.label} seed {seed}"
    if progress is not None:
        callbacks.append(_EpochProgress(progress, what, protocol.epochs))
    start = time.perf_counter()
    with warnings.catch_warnings():  # check_finite below raises instead
        warnings.simplefilter("ignore", DivergenceWarning)
        history = model.fit(
            split.x_fit,
            split.y_fit,
            batch_size=protocol.batch_size,
            epochs=protocol.epochs,
            verbose=0,
            callbacks=callbacks,
            shuffle=True,
            initial_epoch=initial_epoch,
        )
    # Epochs done in all (a resumed run counts those before the backup too).
    ran = history.epoch[-1] + 1 if history.epoch else initial_epoch
    if progress is not None:  # early stop or resume: count the epochs not run here
        progress.update(protocol.epochs - len(history.epoch))
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    try:
        check_finite(model, what, steps)
        if divergence.step is not None:
            raise RuntimeError(
                f"{what} diverged: the loss is not finite at step {divergence.step}. "
                + DIVERGENCE_ADVICE
            )
    except RuntimeError:
        if backup_dir is not None:  # a rerun must not resume the diverged run
            backup.delete()
        raise
    return model, time.perf_counter() - start, ran, steps


class _EpochBackup(keras.callbacks.Callback):
    """Keeps the last finished epoch in `directory`, so a killed run resumes.

    As `keras.callbacks.BackupAndRestore`, but a kill at any moment leaves a
    consistent backup: each epoch's weights (the optimizer's state with
    them) go to a new file, and only then is `state.json` replaced,
    atomically, to name that file and the epoch. The folder stays until
    `delete`: the caller removes it once the trained model is saved.
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = Path(directory)

    def restore(self, model, epochs):
        """Loads the backed-up epoch into `model`; returns how many epochs it had done.

        A backup that cannot be read (from an older version, or damaged by
        hand) is reported, removed, and the model is left as it was: 0.
        """
        from keras_heavytail import arrays

        state_path = self.directory / "state.json"
        if not state_path.exists():
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = list(model.variables) + list(getattr(model.optimizer, "variables", []))
        before = [np.array(arrays.as_array(v)) for v in variables]
        try:
            state = json.loads(state_path.read_text())
            epoch = state["epoch"]
            if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 < epoch <= epochs:
                raise ValueError(f"epoch {epoch!r} is not one of this run's 1..{epochs}")
            model.load_weights(self.directory / state["weights"])
            return epoch
        except (OSError, ValueError, KeyError, TypeError) as error:
            for variable, value in zip(variables, before):
                variable.assign(value)
            warnings.warn(
                f"The backup in {str(self.directory)!r} cannot be read ({error}); "
                "it was removed and training starts from the first epoch.",
                UserWarning,
                stacklevel=2,
            )
            shutil.rmtree(self.directory, ignore_errors=True)
            return 0

    def on_epoch_end(self, epoch, logs=None):
        from keras_heavytail import files

        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        self.model.save_weights(self.directory / name, overwrite=True)
        state = {"epoch": epoch + 1, "weights": name}
        files.write_text(self.directory / "state.json", json.dumps(state))
        for old in self.directory.glob("*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def delete(self):
        """Removes the backup: call once the trained model is saved elsewhere."""
        shutil.rmtree(self.directory, ignore_errors=True)


def check_finite(model, what, steps):
    """Raises a RuntimeError naming the first non-finite variable of `model`.

    Heavy-tailed noise makes divergence a normal event: a diverged run must
    end with an error, never be saved or measured as a result.
    """
    for variable in model.variables:
        values = keras.ops.convert_to_numpy(variable)
        finite = np.all(np.isfinite(values))
        if not finite or (values.size and np.max(np.abs(values)) > BLOWN_UP):
            path = getattr(variable, "path", None) or variable.name
            what_now = "is not finite" if not finite else f"holds values beyond {BLOWN_UP:g}"
            raise RuntimeError(
                f"{what} diverged: variable {path!r} {what_now} after step "
                f"{steps}. {DIVERGENCE_ADVICE}"
            )


class _NoBar:
    """What a run uses of a tqdm bar, for when tqdm is absent or off.

    `lines`: progress is wanted but there is no live bar (tqdm missing), so
    runs print a line per epoch instead.
    """

    disable = True

    def __init__(self, lines=False):
        self.lines = lines

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
    """A tqdm bar on a terminal; elsewhere (or without tqdm) a line per epoch.

    `prints_lines(bar)` says which: a log file or a pipe shows progress from
    the first epoch, not only when a whole run ends.
    """
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar(lines=True)
    return tqdm(total=total, unit=unit, disable=None)


def prints_lines(bar):
    """Whether `bar` (from `progress_bar`) wants a printed line per epoch."""
    return getattr(bar, "lines", None) if isinstance(bar, _NoBar) else bool(bar.disable)


