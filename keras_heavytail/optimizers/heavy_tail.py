"""Keras 3 optimizers that add symmetric alpha-stable noise after every step.

`HeavyTailSGD` is `keras.optimizers.SGD` followed by the noise;
`HeavyTailNoise` adds the same noise after any Keras 3 optimizer's step.
Both draw the noise from `keras_heavytail.optimizers.stable_noise` with a stateless
seed derived from `(seed, variable index, iteration)`: the noise is a function
of optimizer state, so a reloaded checkpoint continues the same trajectory and
replicas draw identical noise for a mirrored variable.
"""

import warnings

import keras
from keras import ops

from keras_heavytail import defaults
from keras_heavytail.optimizers.divergence import check_finite_weights
from keras_heavytail.optimizers.noise_args import NOISE_ARGS
from keras_heavytail.optimizers.noise_args import UPDATE_RULE
from keras_heavytail.optimizers.noise_args import paper_noise
from keras_heavytail.optimizers.noise_update import NoiseUpdate
from keras_heavytail.optimizers.noise_update import NoisySGD


@keras.saving.register_keras_serializable(package="keras_heavytail")
class HeavyTailSGD(NoisySGD, keras.optimizers.SGD):
    __doc__ = f"""SGD (with momentum) plus symmetric alpha-stable noise after each step.

    Wan et al. (2024) prove that heavy-tailed noise added to every step of
    overparametrised SGD makes the trained network compressible;
    `HeavyTailSGD.paper()` is their setting. It costs dense accuracy on real
    networks, so the defaults are a faint noise relative to each kernel's
    fan-in that keeps SGD's accuracy and barely moves the weights' tails
    (`benchmarks/RESULTS.md` §13). Noise goes to weights with two or more
    axes only (never biases or normalisation parameters);
    `exclude_from_noise` removes more.
{UPDATE_RULE}
    On a CPU, `jit_compile=True` draws the noise with XLA's random ops, which
    are much slower there than TensorFlow's kernels: per-entry noise then
    costs several times the plain step (`benchmarks/RESULTS.md`).

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.01`.
        momentum: float in [0, 1]. Defaults to `0.0`.
        nesterov: bool. Defaults to `False`.
{NOISE_ARGS}        **kwargs: the other `keras.optimizers.Optimizer` arguments
            (`weight_decay`, `clipnorm`, `name`, ...).

    Example:

    >>> opt = HeavyTailSGD(learning_rate=0.01, seed=0)
    >>> model.compile(optimizer=opt, loss="mse")  # doctest: +SKIP

    The paper's setting (absolute sigma 0.003, its noise-free layers):

    >>> opt = HeavyTailSGD.paper(learning_rate=0.01, seed=0)
    >>> opt.exclude_from_noise(paper_exclusions(model))  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.sigma == 0.0 or not self.gets_noise(variable):
            return super().update_step(gradient, variable, learning_rate)
        noise = self.noise_increment(
            variable,
            self._get_variable_index(variable),
            learning_rate,
            self.current_sigma(),
            self.iterations,
        )
        # SGD's rule with the noise folded into its single write to the
        # variable: one pass over the weights fewer than step-then-add.
        lr = ops.cast(learning_rate, variable.dtype)
        step = ops.multiply(ops.cast(gradient, variable.dtype), lr)
        if self.momentum == 0:
            self.assign_sub(variable, ops.subtract(step, noise))
            return
        m = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(m, ops.subtract(ops.multiply(m, momentum), step))
        if self.nesterov:
            move = ops.subtract(ops.multiply(m, momentum), step)
        else:
            move = m
        self.assign_add(variable, ops.add(move, noise))


def _current_learning_rate(optimizer):
    """The learning rate `optimizer` applies at its current iteration.

    Keras 3 (checked on 3.5 to 3.15) has no public accessor that evaluates a
    schedule or callable at the current step, so this one function calls the
    private `_get_current_learning_rate`.
    """
    return optimizer._get_current_learning_rate()


@keras.saving.register_keras_serializable(package="keras_heavytail")
class HeavyTailNoise(NoiseUpdate, keras.optimizers.Optimizer):
    __doc__ = f"""Adds symmetric alpha-stable noise after any Keras 3 optimizer's step.

    Wraps `inner_optimizer` (Adam, AdamW, RMSprop, ...) the way
    `keras.optimizers.LossScaleOptimizer` does: `learning_rate` and
    `iterations` are the inner optimizer's, and `variables` are both.
{UPDATE_RULE}
    Here `lr_t` is the inner optimizer's current learning rate.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` to wrap (release
            0.2's keyword `optimizer=` still works, with a warning).
{NOISE_ARGS}        name: Defaults to `"HeavyTailNoise"`.

    Example:

    >>> opt = HeavyTailNoise(keras.optimizers.Adam(1e-3), alpha=1.8, sigma=1e-3)
    >>> model.compile(optimizer=opt, loss="mse")  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    def __init__(
        self,
        inner_optimizer=None,
        alpha=defaults.ALPHA,
        sigma=defaults.SIGMA,
        noise=defaults.NOISE,
        lr_rescaling=defaults.LR_RESCALING,
        seed=None,
        noise_exclusions=None,
        max_noise=None,
        sigma_scale=defaults.SIGMA_SCALE,
        name="HeavyTailNoise",
        **kwargs,
    ):
        if "optimizer" in kwargs and inner_optimizer is None:
            warnings.warn(
                "HeavyTailNoise(optimizer=...) is HeavyTailNoise(inner_optimizer=...) "
                "since keras-heavytail 0.3, as in keras.optimizers.LossScaleOptimizer.",
                DeprecationWarning,
                stacklevel=2,
            )
            inner_optimizer = kwargs.pop("optimizer")
        optimizer = inner_optimizer
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`inner_optimizer` must be a Keras 3 `keras.optimizers.Optimizer`. "
                f"Received: inner_optimizer={optimizer!r}"
            )
        if isinstance(optimizer, NoiseUpdate):
            raise ValueError(
                "HeavyTailNoise cannot wrap an optimizer that adds noise itself: it "
                "would read a wrapper's learning rate (0: no noise) or add a second "
                "noise. Use one: HeavyTailSGD(...), or HeavyTailNoise(inner) around "
                f"a plain Keras optimizer. Received: inner_optimizer={optimizer!r}"
            )
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "HeavyTailNoise cannot wrap a LossScaleOptimizer: it would read the "
                "wrapper's learning rate (0) and add noise on the steps the loss "
                "scaling skips. Wrap the other way, "
                "LossScaleOptimizer(HeavyTailNoise(inner)), which is what "
                "`model.compile` does under mixed precision. Received: "
                f"inner_optimizer={optimizer!r}"
            )
        if getattr(optimizer, "gradient_accumulation_steps", None):
            raise ValueError(
                "HeavyTailNoise adds noise once per call, so with gradient "
                "accumulation in the wrapped optimizer it would add it on every "
                "micro-batch: use HeavyTailSGD(gradient_accumulation_steps=...) or no "
                "accumulation. Received: gradient_accumulation_steps="
                f"{optimizer.gradient_accumulation_steps}"
            )
        if kwargs:
            raise ValueError(
                "HeavyTailNoise takes optimizer arguments on the wrapped "
                f"optimizer. Received: {sorted(kwargs)}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.init_noise(
            alpha,
            sigma,
            noise,
            lr_rescaling,
            seed,
            noise_exclusions,
            max_noise,
            sigma_scale,
        )

    @classmethod
    def paper(cls, inner_optimizer, **kwargs):
        """The paper's noise (absolute sigma 0.003, alpha 1.75, neuron) after `inner_optimizer`."""
        return cls(inner_optimizer, **paper_noise(kwargs))

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = trainable_variables or self._trainable_variables
        # Noise is scaled by the learning rate and drawn for the iteration of
        # this step, both read before the inner step increments them.
        learning_rate = _current_learning_rate(self.inner_optimizer)
        sigma = self.current_sigma()
        # A copy: on TensorFlow `convert_to_tensor` hands back the variable
        # itself, which would be read after the inner step increments it.
        iteration = ops.copy(self.iterations)
        self.inner_optimizer.apply(grads, trainable_variables)
        if self.sigma == 0.0:
            return
        targets = [
            (v, self._get_variable_index(v)) for v in variables if self.gets_noise(v)
        ]
        increments = [
            self.noise_increment(v, i, learning_rate, sigma, iteration)
            for v, i in targets
        ]
        if keras.backend.backend() == "tensorflow":
            self._tf_add_noise([v for v, _ in targets], increments)
        else:
            for (variable, _), increment in zip(targets, increments):
                self._add_increment(variable, increment)

    def _add_increment(self, variable, increment):
        """Adds in place; a per-unit increment is added with broadcasting."""
        if tuple(increment.shape) == tuple(variable.shape):
            self.assign_add(variable, increment)
        else:
            self.assign(variable, ops.add(variable, increment))

    def _tf_add_noise(self, variables, increments):
        """Adds noise to (possibly mirrored) variables in a replica context."""
        import tensorflow as tf

        def merge_fn(distribution, pairs):
            for variable, increment in pairs:
                value = variable.value if hasattr(variable, "value") else variable
                distribution.extended.update(
                    value, self._add_increment, args=(increment,), group=False
                )

        tf.__internal__.distribute.interim.maybe_merge_call(
            merge_fn,
            tf.distribute.get_strategy(),
            list(zip(variables, increments)),
        )

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)
        check_finite_weights(self, var_list, self._model_statistics())

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            **self.noise_config(),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = cls.deserialize_sigma(dict(config))
        inner = config.pop("inner_optimizer", None) or config.pop("optimizer")  # 0.2 files
        inner = keras.saving.deserialize_keras_object(inner, custom_objects=custom_objects)
        return cls(inner, **config)

    @property
    def optimizer(self):
        """Release 0.2's name of `inner_optimizer` (kept one release)."""
        return self.inner_optimizer
