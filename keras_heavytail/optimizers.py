"""Keras 3 optimizers that add symmetric alpha-stable noise after every step.

`HeavyTailSGD` is `keras.optimizers.SGD` followed by the noise;
`HeavyTailNoise` adds the same noise after any Keras 3 optimizer's step.
Both draw the noise from `keras_heavytail.noise.stable_noise` with a stateless
seed derived from `(seed, variable index, iteration)`: the noise is a function
of optimizer state, so a reloaded checkpoint continues the same trajectory and
replicas draw identical noise for a mirrored variable.
"""

import random
import re

import keras
from keras import ops

from keras_heavytail import noise as noise_lib

DEFAULT_NOISE = "neuron"


def _check_sigma(sigma, schedule_type=None):
    schedule_type = schedule_type or keras.optimizers.schedules.LearningRateSchedule
    if isinstance(sigma, schedule_type):
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
        raise ValueError(
            "`sigma` must be a float >= 0 or a "
            f"`keras.optimizers.schedules.LearningRateSchedule`. Received: sigma={sigma!r}"
        )
    return float(sigma)


def _check_seed(seed):
    if seed is None:
        return random.randint(0, 2**31 - 2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
    return seed


def paper_exclusions(model):
    """The variables that the paper keeps noise-free: output layer and first conv.

    Wan et al. (2024) perturb every weight matrix except the classifier's and
    the first convolution's. Pass the result to `exclude_from_noise`.

    Args:
        model: a built Keras 3 model.

    Returns:
        A list of variables (the kernels and biases of those layers).

    Example:

    >>> opt = HeavyTailSGD(learning_rate=0.01)
    >>> opt.exclude_from_noise(paper_exclusions(model))  # doctest: +SKIP
    """
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, "kernel", None) is not None
    ]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel.")
    chosen = [layers[-1]]
    convs = [layer for layer in layers if len(layer.kernel.shape) > 2]
    if convs and convs[0] is not layers[-1]:
        chosen.append(convs[0])
    return [v for layer in chosen for v in layer.trainable_variables]


class _StableNoiseMixin:
    """Arguments, validation, exclusion and the per-variable perturbation.

    Shared by the Keras 3 optimizers here and the tf_keras one in `legacy`,
    which sets `_schedules` to `tf_keras.optimizers.schedules`.
    """

    _schedules = keras.optimizers.schedules

    def _init_noise(self, alpha, sigma, noise, lr_rescaling, seed):
        self.alpha = noise_lib.check_alpha(alpha)
        self.sigma = _check_sigma(sigma, self._schedules.LearningRateSchedule)
        self.noise = noise_lib.check_structure(noise)
        if not isinstance(lr_rescaling, bool):
            raise ValueError(
                f"`lr_rescaling` must be a bool. Received: lr_rescaling={lr_rescaling!r}"
            )
        self.lr_rescaling = lr_rescaling
        self.seed = _check_seed(seed)
        self._noise_excluded_ids = set()
        self._noise_excluded_names = []

    def exclude_from_noise(self, var_list=None, var_names=None):
        """Keeps more variables noise-free (biases and 1-D weights always are).

        Call before the optimizer is built (before the first `fit` step).

        Args:
            var_list: variables to exclude. Defaults to `None`.
            var_names: regular expressions; a variable whose path (or name)
                matches one is excluded. Defaults to `None`.
        """
        if getattr(self, "built", False) or getattr(self, "_built", False):
            raise ValueError(
                "`exclude_from_noise()` can only be called before the "
                "optimizer is built (before its first step)."
            )
        for variable in var_list or []:
            self._noise_excluded_ids.add(self._var_key(variable))
        self._noise_excluded_names.extend(var_names or [])

    def _gets_noise(self, variable):
        if len(variable.shape) < 2:
            return False
        if self._var_key(variable) in self._noise_excluded_ids:
            return False
        path = getattr(variable, "path", None) or variable.name
        return not any(re.search(p, path) for p in self._noise_excluded_names)

    def _current_sigma(self):
        if isinstance(self.sigma, self._schedules.LearningRateSchedule):
            return self.sigma(self.iterations)
        return self.sigma

    def _noise_increment(self, variable, index, learning_rate, sigma, iteration):
        """`sigma * lr**(1/alpha) * xi` for one variable (broadcastable to it)."""
        base = noise_lib.as_stateless_seed(self.seed)
        seed = noise_lib.fold_in(noise_lib.fold_in(base, index), iteration)
        factor = ops.cast(sigma, variable.dtype)
        if self.lr_rescaling:
            lr = ops.cast(learning_rate, variable.dtype)
            factor = factor * ops.power(lr, 1.0 / self.alpha)
        return noise_lib.stable_noise(
            variable.shape,
            self.alpha,
            self.noise,
            scale=factor,
            seed=seed,
            dtype=variable.dtype,
            broadcast=False,
        )

    def _noise_config(self):
        sigma = self.sigma
        if not isinstance(sigma, float):
            sigma = self._schedules.serialize(sigma)
        return {
            "alpha": self.alpha,
            "sigma": sigma,
            "noise": self.noise,
            "lr_rescaling": self.lr_rescaling,
            "seed": self.seed,
        }

    @classmethod
    def _deserialize_sigma(cls, config):
        if isinstance(config.get("sigma"), dict):
            config["sigma"] = cls._schedules.deserialize(config["sigma"])
        return config

    # For optimizers that subclass a concrete one (HeavyTailSGD and its
    # tf_keras twin): the parent's config plus the noise arguments.
    def get_config(self):
        config = super().get_config()
        config.update(self._noise_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = cls._deserialize_sigma(dict(config))
        return super().from_config(config, custom_objects=custom_objects)


_UPDATE_RULE = """
    ```python
    theta = theta - lr_t * grad                  # the wrapped update
    theta = theta + sigma_t * lr_t**(1/alpha) * xi_t,   xi_t ~ SaS(alpha, 1)
    ```
"""

_NOISE_ARGS = """
        alpha: float in (0, 2], the noise's stability index (2 is Gaussian,
            1 is Cauchy). Defaults to `1.75`.
        sigma: float >= 0 or a `LearningRateSchedule` of the iteration, the
            noise scale. 0 gives exactly the noise-free optimizer.
            Defaults to `0.003`.
        noise: `"entry"` (i.i.d. per weight), `"neuron"` (one value per output
            unit, shared by its incoming weights, the paper's main setting) or
            `"elliptical"` (per output unit a rotation-invariant stable vector,
            each entry marginally SaS(alpha, 1)). Defaults to `"neuron"`:
            measured on the digits benchmark (`benchmarks/RESULTS.md`), it
            kept test accuracy within 0.6 points of SGD while raising the
            share of prunable neurons from 0.13 to 0.51 +- 0.04 (elliptical:
            0.48 +- 0.25, entry: 0.28), and it costs nothing per step (one
            draw per unit). Standardise inputs: the shared shift of a unit
            is multiplied by the sum of its inputs.
        lr_rescaling: multiply the noise by `lr_t**(1/alpha)`, the step's
            natural scale for an alpha-stable process. Defaults to `True`.
        seed: int seed of the noise; `None` draws one and keeps it, so
            `get_config()` always reproduces the run. Defaults to `None`.
"""


@keras.saving.register_keras_serializable(package="keras_heavytail")
class HeavyTailSGD(_StableNoiseMixin, keras.optimizers.SGD):
    __doc__ = f"""SGD (with momentum) plus symmetric alpha-stable noise after each step.

    Heavy-tailed noise added to every step of overparametrised SGD makes the
    trained network compressible: most neurons can be pruned with little
    error. Noise goes to weights with two or more axes only (never biases or
    normalisation parameters); `exclude_from_noise` removes more.
{_UPDATE_RULE}
    Args:
        learning_rate: float, schedule or callable. Defaults to `0.01`.
        momentum: float in [0, 1]. Defaults to `0.0`.
        nesterov: bool. Defaults to `False`.
{_NOISE_ARGS}
        **kwargs: the other `keras.optimizers.Optimizer` arguments
            (`weight_decay`, `clipnorm`, `name`, ...).

    Example:

    >>> opt = HeavyTailSGD(learning_rate=0.01, alpha=1.75, sigma=0.003, seed=0)
    >>> model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        alpha=1.75,
        sigma=0.003,
        noise=DEFAULT_NOISE,
        lr_rescaling=True,
        seed=None,
        name="HeavyTailSGD",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            nesterov=nesterov,
            name=name,
            **kwargs,
        )
        self._init_noise(alpha, sigma, noise, lr_rescaling, seed)

    def update_step(self, gradient, variable, learning_rate):
        if self.sigma == 0.0 or not self._gets_noise(variable):
            return super().update_step(gradient, variable, learning_rate)
        noise = self._noise_increment(
            variable,
            self._get_variable_index(variable),
            learning_rate,
            self._current_sigma(),
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


@keras.saving.register_keras_serializable(package="keras_heavytail")
class HeavyTailNoise(_StableNoiseMixin, keras.optimizers.Optimizer):
    __doc__ = f"""Adds symmetric alpha-stable noise after any Keras 3 optimizer's step.

    Wraps `optimizer` (Adam, AdamW, RMSprop, ...) the way
    `keras.optimizers.LossScaleOptimizer` does: `learning_rate` and
    `iterations` are the inner optimizer's, and `variables` are both.
{_UPDATE_RULE}
    Here `lr_t` is the inner optimizer's current learning rate.

    Args:
        optimizer: the `keras.optimizers.Optimizer` to wrap.
{_NOISE_ARGS}
        name: Defaults to `"HeavyTailNoise"`.

    Example:

    >>> opt = HeavyTailNoise(keras.optimizers.Adam(1e-3), alpha=1.8, sigma=1e-3)
    >>> model.compile(optimizer=opt, loss="mse")  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """

    def __init__(
        self,
        optimizer,
        alpha=1.75,
        sigma=0.003,
        noise=DEFAULT_NOISE,
        lr_rescaling=True,
        seed=None,
        name="HeavyTailNoise",
        **kwargs,
    ):
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`optimizer` must be a Keras 3 `keras.optimizers.Optimizer`. "
                f"Received: optimizer={optimizer!r}"
            )
        if kwargs:
            raise ValueError(
                "HeavyTailNoise takes optimizer arguments on the wrapped "
                f"optimizer. Received: {sorted(kwargs)}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.optimizer = optimizer
        self._init_noise(alpha, sigma, noise, lr_rescaling, seed)

    def build(self, var_list):
        self.optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.optimizer.variables

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.optimizer.iterations

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = trainable_variables or self._trainable_variables
        # Noise is scaled by the learning rate and drawn for the iteration of
        # this step, both read before the inner step increments them.
        learning_rate = self.optimizer._get_current_learning_rate()
        sigma = self._current_sigma()
        iteration = ops.convert_to_tensor(self.iterations)
        self.optimizer.apply(grads, trainable_variables)
        if self.sigma == 0.0:
            return
        targets = [
            (v, self._get_variable_index(v)) for v in variables if self._gets_noise(v)
        ]
        increments = [
            self._noise_increment(v, i, learning_rate, sigma, iteration)
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
        self.optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            **self._noise_config(),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = cls._deserialize_sigma(dict(config))
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)
