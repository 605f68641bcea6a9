"""The tf_keras (Keras 2) path: a heavy-tailed optimizer and tfmot pruning.

tensorflow-model-optimization (tfmot) prunes only tf_keras models, and a
tf_keras model accepts only a tf_keras optimizer, so this module holds the
same noise for tf_keras (`LegacyHeavyTailSGD`, sharing the samplers and the
noise logic of `keras_heavytail.optimizers.heavy_tail`) and thin helpers around tfmot's
gradual magnitude pruning and its pruning-preserving quantisation-aware
training (`quantize_pruned`), the way to a pruned int8 `.tflite` file.
Keras 3 models prune during training with `keras_heavytail.pruning.sparsity`.

Importing tfmot sets `TF_USE_LEGACY_KERAS=1` for the whole process, which
turns `tf.keras` into tf_keras. This module is never imported by
`keras_heavytail` itself, and it imports tfmot only inside the functions that
need it. TensorFlow only.
"""

import warnings

try:
    import tf_keras
except ImportError as error:  # pragma: no cover - tf-keras is a dependency
    raise ImportError(
        "keras_heavytail.legacy needs tf-keras: pip install tf-keras"
    ) from error

from keras_heavytail.optimizers.noise_args import NOISE_ARGS
from keras_heavytail.optimizers.noise_update import NoisySGD
from keras_heavytail.pruning.graph import ModelGraph


@tf_keras.saving.register_keras_serializable(package="keras_heavytail")
class LegacyHeavyTailSGD(NoisySGD, tf_keras.optimizers.SGD):
    __doc__ = f"""`HeavyTailSGD` for tf_keras models (and so for tfmot pruning).

    ```python
    theta = theta - lr_t * grad   (tf_keras SGD, momentum / nesterov)
    theta = theta + sigma_t * c * lr_t**(1/alpha) * xi_t,   xi_t ~ SaS(alpha, 1)
    ```

    `c = 1/sqrt(fan_in)` by default, `1` with `sigma_scale="absolute"` or
    `LegacyHeavyTailSGD.paper()` (the paper's setting).

    Same arguments, defaults, noise structures and seeding as
    `keras_heavytail.HeavyTailSGD`; `sigma` may be a
    `tf_keras.optimizers.schedules.LearningRateSchedule`.

    Args:
        learning_rate: float or tf_keras schedule. Defaults to `0.01`.
        momentum: float in [0, 1]. Defaults to `0.0`.
        nesterov: bool. Defaults to `False`.
{NOISE_ARGS}        **kwargs: other `tf_keras.optimizers.Optimizer` arguments.

    Example:

    >>> model.compile(optimizer=LegacyHeavyTailSGD(0.05, seed=0),
    ...               loss="mse")  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    schedules = tf_keras.optimizers.schedules

    def update_step(self, gradient, variable):
        super().update_step(gradient, variable)
        if self.sigma == 0.0 or not self.gets_noise(variable):
            return
        increment = self.noise_increment(
            variable,
            self._index_dict[self._var_key(variable)],
            self.learning_rate,
            self.current_sigma(),
            self.iterations,
        )
        if tuple(increment.shape) == tuple(variable.shape):
            variable.assign_add(increment)
        else:
            variable.assign(variable + increment)


def _check_tf_keras(model, purpose):
    """Raises a ValueError naming the world `model` belongs to if not tf_keras."""
    if isinstance(model, tf_keras.Model):
        return model
    kind = f"{type(model).__module__}.{type(model).__name__}"
    world = "a Keras 3" if kind.startswith("keras.") else "not a tf_keras"
    raise ValueError(
        f"{purpose}: tfmot works on tf_keras (Keras 2) models only; this is "
        f"{world} model ({kind}). For a Keras 3 model use "
        "keras_heavytail.sparsity.GradualPruning (pruning during training) or "
        "keras_heavytail.prune (one-shot), or build the model with tf_keras."
    )


def _tfmot():
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as error:
        raise ImportError(
            "tfmot pruning needs tensorflow-model-optimization: "
            "pip install tensorflow-model-optimization"
        ) from error
    return tfmot


def prune_low_magnitude(
    model,
    final_sparsity=0.9,
    begin_step=0,
    end_step=1000,
    frequency=100,
    initial_sparsity=0.0,
):
    """Wraps a tf_keras model for tfmot's gradual magnitude pruning.

    Sparsity rises from `initial_sparsity` at `begin_step` to
    `final_sparsity` at `end_step` along tfmot's polynomial schedule; train
    with the callbacks of `pruning_callbacks()`, then `strip_pruning`.

    Args:
        model: a tf_keras Sequential or functional model. Defaults to none;
            required.
        final_sparsity: in [0, 1). Defaults to `0.9`.
        begin_step: Defaults to `0`.
        end_step: Defaults to `1000`.
        frequency: steps between mask updates. Defaults to `100`.
        initial_sparsity: Defaults to `0.0`.

    Returns:
        The wrapped tf_keras model.
    """
    if not 0.0 <= final_sparsity < 1.0:
        raise ValueError(
            f"`final_sparsity` must be in [0, 1). Received: final_sparsity={final_sparsity}"
        )
    _check_tf_keras(model, "keras_heavytail.legacy.prune_low_magnitude")
    tfmot = _tfmot()
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=initial_sparsity,
        final_sparsity=final_sparsity,
        begin_step=begin_step,
        end_step=end_step,
        frequency=frequency,
    )
    return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)


class _EndStepCheck(tf_keras.callbacks.Callback):
    """Warns at the end of `fit` if a pruned layer's schedule did not finish."""

    def on_train_end(self, logs=None):
        for layer in ModelGraph(self.model).layers:
            schedule = getattr(layer, "pruning_schedule", None)
            step = getattr(layer, "pruning_step", None)
            end = getattr(schedule, "end_step", -1)
            if step is None or end < 0:
                continue
            step = int(tf_keras.backend.get_value(step))
            if step < end:
                warnings.warn(
                    f"tfmot pruning stopped at step {step}, before the schedule's "
                    f"end_step={end}, so layer {layer.name!r} is not at its final "
                    "sparsity. Train for more steps (epochs * steps per epoch) or "
                    "lower `end_step`.",
                    UserWarning,
                    stacklevel=1,
                )
                return


def pruning_callbacks(log_dir=None):
    """tfmot's `UpdatePruningStep`, plus `PruningSummaries` when `log_dir` is given.

    A third callback warns at the end of `fit` when training stopped before
    the schedule's `end_step` (tfmot says nothing, and the model is then
    less sparse than asked). `PruningSummaries` needs tensorboard, which
    TensorFlow 2.21 no longer installs: asking for it without tensorboard
    raises an ImportError that says so.

    Args:
        log_dir: a folder for `PruningSummaries`. Defaults to `None`.

    Returns:
        A list of tf_keras callbacks for `fit`.
    """
    tfmot = _tfmot()
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), _EndStepCheck()]
    if log_dir is not None:
        try:
            import tensorboard  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "Pruning summaries (log_dir) need tensorboard, which TensorFlow 2.21 "
                "no longer installs: pip install tensorboard"
            ) from error
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir))
    return callbacks


def strip_pruning(model):
    """Removes tfmot's wrappers, leaving a plain tf_keras model with zeros in it."""
    _check_tf_keras(model, "keras_heavytail.legacy.strip_pruning")
    return _tfmot().sparsity.keras.strip_pruning(model)


def quantize_pruned(model):
    """Pruning-preserving quantisation-aware training of a pruned tf_keras model.

    Wraps a pruned and stripped tf_keras model with tfmot's
    `quantize_annotate_model` and `quantize_apply` under
    `Default8BitPrunePreserveQuantizeScheme`: each kernel's zeros become a
    fixed mask, so fine-tuning (with `LegacyHeavyTailSGD`, whose noise moves
    the stored weights, pruned ones included) never revives a pruned weight in
    the quantised kernel, and the int8 `.tflite` file converted from the
    result (`keras_heavytail.export_tflite(..., quantize="int8")`) keeps the
    sparsity.

    Args:
        model: a tf_keras model after `strip_pruning`. Defaults to none;
            required.

    Returns:
        A quantisation-aware tf_keras model, to compile and fine-tune.

    Example:

    >>> qat = quantize_pruned(strip_pruning(pruned))  # doctest: +SKIP
    >>> qat.compile(optimizer=LegacyHeavyTailSGD(0.01, seed=0),
    ...             loss="sparse_categorical_crossentropy")  # doctest: +SKIP
    """
    _check_tf_keras(model, "keras_heavytail.legacy.quantize_pruned")
    tfmot = _tfmot()
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    return tfmot.quantization.keras.quantize_apply(annotated, scheme)


def kernel_sparsity(model):
    """Fraction of zero entries over all kernels of a (stripped) model."""
    return ModelGraph(model).weight_sparsity()


__all__ = [
    "LegacyHeavyTailSGD",
    "kernel_sparsity",
    "prune_low_magnitude",
    "pruning_callbacks",
    "quantize_pruned",
    "strip_pruning",
]
