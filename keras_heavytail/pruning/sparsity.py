"""Pruning during training for Keras 3 models, shaped like `tfmot.sparsity.keras`.

tfmot's `prune_low_magnitude` refuses Keras 3 models, and Keras 3 has no
pruning API. This module gives Keras 3 users tfmot's workflow with one
changed import: the schedules `ConstantSparsity` and `PolynomialDecay` (the
same sparsity at the same step, and masks updated on the same steps as
tfmot's), a `GradualPruning` callback for `model.fit`, and `strip_pruning`.

There are no wrapper layers: the masks live in the callback and in the model's
zeros. They are recomputed (by `keras_heavytail.pruning.pruning_masks`) on the
schedule's steps only and applied (by `keras_heavytail.pruning.apply_masks`)
after every optimizer step, so whatever an optimizer adds to a pruned weight
(momentum, `HeavyTailSGD`'s or `HeavyTailNoise`'s heavy-tailed noise) is
undone before the next forward pass: a pruned weight stays exactly zero, and
the noise acts only on the weights that are still alive. A saved model holds
its masks as zeros; a `GradualPruning` given a reloaded model rebuilds them
from those zeros and keeps them.

```python
model.fit(x, y, epochs=10, callbacks=[sparsity.GradualPruning(
    sparsity.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000),
    structure="neuron")])
small = keras_heavytail.shrink(sparsity.strip_pruning(model))
```

References:
    - [Zhu and Gupta, 2017](https://arxiv.org/abs/1710.01878) (the polynomial
      schedule)
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import warnings

import keras
import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail.arrays import as_array
from keras_heavytail.pruning import one_shot as pruning
from keras_heavytail.pruning.graph import ModelGraph
from keras_heavytail.pruning.schedules import ConstantSparsity  # noqa: F401  (tfmot's namespace)
from keras_heavytail.pruning.schedules import PolynomialDecay  # noqa: F401
from keras_heavytail.pruning.schedules import PruningSchedule

STRUCTURES = defaults.SPARSITY_STRUCTURES
SCORES = defaults.SPARSITY_SCORES


def _world(model):
    """`"keras"` for a Keras 3 model, else what the object is, for errors."""
    if isinstance(model, keras.Model):
        return "keras"
    module = type(model).__module__
    if module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")):
        return "tf_keras"
    return f"{module}.{type(model).__name__}"


def _check_keras3_model(model, purpose):
    """Raises a ValueError naming the world `model` belongs to if not Keras 3."""
    world = _world(model)
    if world == "keras":
        return model
    if world == "tf_keras":
        raise ValueError(
            f"{purpose} works on Keras 3 models; this is a tf_keras (Keras 2) "
            f"model ({type(model).__module__}.{type(model).__name__}). For "
            "tf_keras models use tfmot through keras_heavytail.legacy "
            "(prune_low_magnitude, pruning_callbacks, strip_pruning), or "
            "rebuild the model with `import keras` (Keras 3)."
        )
    raise ValueError(f"{purpose} needs a Keras 3 `keras.Model`. Received: {world}")


def masks_from_zeros(model, structure="entry", exclude=None):
    """The kept-masks that a model's zeros say: `{layer name: mask}`.

    A weight (or, for `"neuron"`/`"filter"`, a unit whose incoming weights
    are all zero) that is exactly zero counts as pruned; this is how a
    reloaded model gets its masks back.

    Args:
        model: a Keras 3 model, or its `ModelGraph`.
        structure: `"entry"`, `"neuron"` or `"filter"`. Defaults to `"entry"`.
        exclude: names of kernel layers to leave alone. Defaults to `None`.

    Returns:
        A dict of boolean arrays, as `pruning.pruning_masks` returns.
    """
    checks.check_choice(structure, "structure", STRUCTURES)
    masks = {}
    for layer in pruning.prunable_layers(model, exclude):
        kernel = as_array(layer.kernel)
        if structure == "entry":
            masks[layer.name] = kernel != 0
        else:
            units = kernel.shape[-1]
            masks[layer.name] = np.any(kernel.reshape(-1, units) != 0, axis=0)
    return masks




def _steps_per_execution(model):
    return int(getattr(model, "steps_per_execution", 1) or 1)


@keras.saving.register_keras_serializable(package="keras_heavytail")
class GradualPruning(keras.callbacks.Callback):
    """Prunes a Keras 3 model while it trains, along a tfmot-shaped schedule.

    Before the batch at each of the schedule's steps (`step` counts the
    optimizer's iterations, as tfmot's `pruning_step` does) the masks are
    recomputed from the current weights at the schedule's sparsity by
    `keras_heavytail.pruning.pruning_masks`, and after every optimizer step
    they are applied again:

    ```python
    theta = optimizer_step(theta)        # SGD, Adam, ..., then the noise
    theta = theta * mask                 # every step: pruned weights back to 0
    mask = top_k(score(theta), 1 - s_t)  # only on the schedule's steps
    ```

    So with `HeavyTailSGD` or `HeavyTailNoise` a pruned weight stays exactly
    zero whatever the noise draws, and the noise acts only on the weights
    that are still alive. (On the tf_keras path, tfmot's masks are recomputed
    from weights that the noise has moved, pruned ones included.) The output
    layer is never pruned, as in the paper; `"neuron"` and `"filter"`
    structures zero whole units (a Dense column, a convolution's filter,
    with their bias and following BatchNormalization scale and shift), so
    `keras_heavytail.shrink` turns the result into a smaller dense model.

    The masks are the model's zeros: a saved model holds them, and a
    `GradualPruning` given a model with zeros (a reloaded one) rebuilds its
    masks from them at the start of `fit` and keeps them until the next
    schedule step. At the end of `fit` it warns if training stopped before
    the schedule's `end_step`.

    Works with `jit_compile` and `tf.distribute` strategies (the masks are
    applied between compiled steps) on the TensorFlow backend, and on JAX
    (it syncs the training state to the variables after each step).
    Needs `steps_per_execution=1`, since Keras calls callbacks once per
    execution. Masks are computed in NumPy on the host on schedule steps,
    and applying them reads and writes each pruned layer's weights through
    the host after every step (the cost is measured in
    `benchmarks/RESULTS.md`).

    Args:
        schedule: a `ConstantSparsity` or `PolynomialDecay` (this module's,
            not tfmot's). Defaults to none; required.
        structure: `"entry"` (single weights), `"neuron"` (Dense units) or
            `"filter"` (convolution filters; the same rule as `"neuron"`:
            the last axis of any kernel). Defaults to `"entry"`.
        scope: `"layer"` (each layer pruned to the sparsity) or `"global"`
            (scores of all prunable layers ranked together).
            Defaults to `"layer"`.
        exclude: names of kernel layers to leave alone. Defaults to `None`.
        score: for units, `"magnitude"` (l2 norm of the incoming weights,
            the paper's) or `"path"` (times the outgoing norm). Entries are
            always scored by magnitude. Defaults to `"magnitude"`.

    Example:

    >>> callback = GradualPruning(PolynomialDecay(0.0, 0.9, 0, 500, frequency=50),
    ...                           structure="neuron")
    >>> model.fit(x, y, epochs=5, callbacks=[callback])  # doctest: +SKIP
    >>> small = keras_heavytail.shrink(strip_pruning(model))  # doctest: +SKIP

    References:
        - [Zhu and Gupta, 2017](https://arxiv.org/abs/1710.01878)
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    def __init__(
        self,
        schedule,
        structure="entry",
        scope="layer",
        exclude=None,
        score="magnitude",
    ):
        super().__init__()
        if not isinstance(schedule, PruningSchedule):
            origin = type(schedule).__module__
            hint = (
                " tfmot's schedules belong to the tf_keras world; use "
                "keras_heavytail.sparsity.ConstantSparsity or PolynomialDecay "
                "(same arguments)."
                if origin.startswith("tensorflow_model_optimization")
                else ""
            )
            raise ValueError(
                "`schedule` must be a keras_heavytail.sparsity.ConstantSparsity or "
                f"PolynomialDecay. Received: schedule={schedule!r}.{hint}"
            )
        checks.check_choice(structure, "structure", STRUCTURES)
        checks.check_choice(scope, "scope", defaults.PRUNE_SCOPES)
        checks.check_choice(score, "score", SCORES)
        if structure == "entry" and score != "magnitude":
            raise ValueError(
                f"`score={score!r}` scores units; entries are scored by magnitude. "
                f"Received: structure={structure!r}, score={score!r}"
            )
        if isinstance(exclude, str):
            exclude = [exclude]
        self.schedule = schedule
        self.structure = structure
        self.scope = scope
        self.exclude = list(exclude) if exclude is not None else None
        self.score = score
        self.masks = None
        self.step = None
        self.graph = None

    def set_model(self, model):
        _check_keras3_model(model, "keras_heavytail.sparsity.GradualPruning")
        if model is not getattr(self, "_model", None):
            self.masks = None  # a new model: its zeros are its masks
            self.graph = None
        super().set_model(model)

    def _mask_structure(self):
        return "entry" if self.structure == "entry" else "neuron"

    def _apply(self):
        # On JAX, `self.model` syncs fit's training state into the variables,
        # and the next step reads them back: the masked weights go on.
        pruning.apply_masks(self.model, self.masks, self.graph)

    def on_train_begin(self, logs=None):
        if _steps_per_execution(self.model) != 1:
            raise ValueError(
                "GradualPruning applies its masks after every optimizer step, "
                "but Keras runs callbacks once per `steps_per_execution` steps. "
                "Compile with steps_per_execution=1. Received: "
                f"steps_per_execution={_steps_per_execution(self.model)}"
            )
        if self.graph is None:  # the one walk of the model for this training
            self.graph = ModelGraph(self.model)
        if self.masks is None:
            self.masks = masks_from_zeros(self.graph, self.structure, self.exclude)
        self.step = None
        self._apply()

    def on_train_batch_begin(self, batch, logs=None):
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        should_prune, sparsity = self.schedule(self.step)
        if should_prune:
            self.masks = pruning.pruning_masks(
                self.graph,
                sparsity,
                structure=self._mask_structure(),
                scope=self.scope,
                exclude=self.exclude,
                score=self.score,
            )
            self._apply()

    def on_train_batch_end(self, batch, logs=None):
        self._apply()

    def on_train_end(self, logs=None):
        end, begin = self.schedule.end_step, self.schedule.begin_step
        if self.step is not None and self.step < begin:
            warnings.warn(
                f"GradualPruning: training stopped at step {self.step}, before the "
                f"schedule's begin_step={begin}, so nothing was pruned. Train for "
                "more steps (epochs * steps per epoch) or lower `begin_step`.",
                UserWarning,
                stacklevel=1,
            )
            return
        if self.step is None or end < 0 or self.step >= end:
            return
        warnings.warn(
            f"GradualPruning: training stopped at step {self.step}, before the "
            f"schedule's end_step={end}, so the model is pruned to "
            f"{self._reached():.3f}, not "
            f"{self.schedule.final_sparsity_value():.3f}. Train for more steps "
            "(epochs * steps per epoch) or lower `end_step`.",
            UserWarning,
            stacklevel=1,
        )

    def _reached(self):
        """The sparsity of the last mask update up to `self.step`."""
        begin, end = self.schedule.begin_step, self.schedule.end_step
        last = min(self.step, end) if end >= 0 else self.step
        if last < begin:
            return 0.0
        frequency = self.schedule.frequency
        return self.schedule.sparsity(begin + (last - begin) // frequency * frequency)

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "structure": self.structure,
            "scope": self.scope,
            "exclude": self.exclude,
            "score": self.score,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def strip_pruning(model):
    """A copy of a model pruned by `GradualPruning`, for tfmot parity.

    `GradualPruning` adds no wrapper layers, so there is nothing to strip:
    the pruned weights are already zeros in the model. The copy is a plain
    Keras 3 model, ready for `keras_heavytail.shrink` or export.

    Args:
        model: a Sequential or functional Keras 3 model. Defaults to none;
            required.

    Returns:
        A new model with the same architecture and weights.

    Example:

    >>> small = keras_heavytail.shrink(strip_pruning(model))  # doctest: +SKIP
    """
    _check_keras3_model(model, "keras_heavytail.sparsity.strip_pruning")
    return pruning.copy_model(model)


__all__ = [
    "ConstantSparsity",
    "GradualPruning",
    "PolynomialDecay",
    "PruningSchedule",
    "masks_from_zeros",
    "strip_pruning",
]
