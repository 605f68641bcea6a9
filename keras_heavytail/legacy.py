"""The tf_keras (Keras 2) path: a heavy-tailed optimizer and tfmot pruning.

tensorflow-model-optimization (tfmot) prunes only tf_keras models, and a
tf_keras model accepts only a tf_keras optimizer, so this module holds the
same noise for tf_keras (`LegacyHeavyTailSGD`, sharing the samplers and the
noise logic of `keras_heavytail.optimizers`) and thin helpers around tfmot's
gradual magnitude pruning.

Importing tfmot sets `TF_USE_LEGACY_KERAS=1` for the whole process, which
turns `tf.keras` into tf_keras. This module is never imported by
`keras_heavytail` itself, and it imports tfmot only inside the functions that
need it. TensorFlow only.
"""


try:
    import tf_keras
except ImportError as error:  # pragma: no cover - tf-keras is a dependency
    raise ImportError(
        "keras_heavytail.legacy needs tf-keras: pip install tf-keras"
    ) from error

from keras_heavytail import defaults
from keras_heavytail import topology
from keras_heavytail.noise_update import NOISE_ARGS
from keras_heavytail.noise_update import NoiseUpdate


@tf_keras.saving.register_keras_serializable(package="keras_heavytail")
class LegacyHeavyTailSGD(NoiseUpdate, tf_keras.optimizers.SGD):
    __doc__ = f"""`HeavyTailSGD` for tf_keras models (and so for tfmot pruning).

    ```python
    theta = theta - lr_t * grad   (tf_keras SGD, momentum / nesterov)
    theta = theta + sigma_t * lr_t**(1/alpha) * xi_t,   xi_t ~ SaS(alpha, 1)
    ```

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

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        alpha=defaults.ALPHA,
        sigma=defaults.SIGMA,
        noise=defaults.NOISE,
        lr_rescaling=defaults.LR_RESCALING,
        seed=None,
        noise_exclusions=None,
        max_noise=None,
        name="LegacyHeavyTailSGD",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            nesterov=nesterov,
            name=name,
            **kwargs,
        )
        self.init_noise(
            alpha, sigma, noise, lr_rescaling, seed, noise_exclusions, max_noise
        )

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
    if not isinstance(model, tf_keras.Model):
        raise ValueError(
            "tfmot prunes tf_keras (Keras 2) models only; for a Keras 3 model use "
            f"keras_heavytail.prune. Received: model of type {type(model).__module__}."
            f"{type(model).__name__}"
        )
    tfmot = _tfmot()
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=initial_sparsity,
        final_sparsity=final_sparsity,
        begin_step=begin_step,
        end_step=end_step,
        frequency=frequency,
    )
    return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)


def pruning_callbacks(log_dir=None):
    """tfmot's `UpdatePruningStep`, plus `PruningSummaries` when `log_dir` is given.

    `PruningSummaries` needs tensorboard, which TensorFlow 2.21 no longer
    installs: asking for it without tensorboard raises an ImportError that
    says so.
    """
    tfmot = _tfmot()
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
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
    return _tfmot().sparsity.keras.strip_pruning(model)


def kernel_sparsity(model):
    """Fraction of zero entries over all kernels of a (stripped) model."""
    return topology.weight_sparsity(model)


__all__ = [
    "LegacyHeavyTailSGD",
    "kernel_sparsity",
    "prune_low_magnitude",
    "pruning_callbacks",
    "strip_pruning",
]
