"""The optimizer-side noise: arguments, validation, exclusions, the increment.

One mixin, `NoiseUpdate`, holds what the Keras 3 optimizers
(`keras_heavytail.optimizers.heavy_tail`) and the tf_keras one (`keras_heavytail.legacy`)
share: the noise arguments (checked by `noise_args`), which variables get
noise (`exclusions`, and saving that choice in the config), the end-of-fit
divergence check (`divergence`), and the per-variable increment

```python
increment = sigma_t * c * lr_t**(1/alpha) * xi_t,   xi_t ~ SaS(alpha, 1)
```

with `c = 1` (`sigma_scale="absolute"`, the paper's) or `c = 1/sqrt(fan_in)`
(`"fan_in"`), drawn from `keras_heavytail.optimizers.noise` with a stateless seed folded from
`(seed, variable index, iteration)`.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import math
import re
import weakref

import keras
import numpy as np
from keras import ops

from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail.optimizers import divergence
from keras_heavytail.optimizers import exclusions
from keras_heavytail.optimizers import noise as noise_lib
from keras_heavytail.optimizers import noise_args
from keras_heavytail.optimizers import units


class NoiseUpdate:
    """Arguments, validation, exclusion and the per-variable increment.

    Mixed into an optimizer class before its Keras base. A tf_keras optimizer
    sets `schedules` to `tf_keras.optimizers.schedules`.
    """

    schedules = keras.optimizers.schedules

    def init_noise(
        self,
        alpha,
        sigma,
        noise,
        lr_rescaling,
        seed,
        noise_exclusions,
        max_noise=None,
        sigma_scale=defaults.SIGMA_SCALE,
    ):
        self.alpha = noise_lib.check_alpha(alpha)
        self.sigma = noise_args.check_sigma(sigma, self.schedules.LearningRateSchedule)
        self.sigma_scale = checks.check_choice(
            sigma_scale, "sigma_scale", defaults.SIGMA_SCALES
        )
        self.noise = noise_lib.check_structure(noise)
        if not isinstance(lr_rescaling, bool):
            raise ValueError(
                f"`lr_rescaling` must be a bool. Received: lr_rescaling={lr_rescaling!r}"
            )
        self.lr_rescaling = lr_rescaling
        self.seed = noise_args.check_seed(seed)
        self.max_noise = noise_args.check_max_noise(max_noise)
        self.noise_exclusions = []
        self._add_exclusions(noise_exclusions or [])
        self._model = None  # a weak reference to the model being trained, once known
        self._unit_axes = {}  # {variable index: unit axes}, once built
        self.check_rates()

    def check_rates(self):
        """Raises if the learning rate or sigma is NaN, inf or negative now.

        Schedules are evaluated at the current iteration. Called at
        construction and when the optimizer is built; inside a traced
        function (nothing to read) it checks nothing.
        """
        learning_rate = self.learning_rate
        if isinstance(learning_rate, self.schedules.LearningRateSchedule):
            learning_rate = learning_rate(self.iterations)
        for name, value in (
            ("learning_rate", learning_rate),
            ("sigma", self.current_sigma()),
        ):
            value = noise_args.eager_float(value)
            if value is not None:
                noise_args.check_rate(name, value)

    def check_alpha_fits(self, var_list):
        """Raises if alpha is below the range where a noisy variable's draws are finite."""
        if self.sigma == 0.0:
            return
        for variable in var_list:
            if not self.gets_noise(variable):
                continue
            dtype = keras.backend.standardize_dtype(variable.dtype)
            lowest = noise_lib.min_alpha(self.noise, dtype)
            if self.alpha < lowest:
                raise ValueError(
                    f"`alpha` must be >= {lowest} for {self.noise!r} noise on "
                    f"{dtype} variables ({exclusions.variable_path(variable)!r}): below it "
                    f"the sampler can draw inf. Received: alpha={self.alpha}"
                )

    def build(self, var_list):
        self.check_alpha_fits(var_list)
        self.check_rates()
        super().build(var_list)
        self._meet_model(var_list)

    def set_noise_units(self, model):
        """Reads from `model` which axes of each kernel index its output units.

        Neuron and elliptical noise share one draw per output unit. The
        optimizer sees variables, not layers, and takes a kernel's units to
        be its last axis (Dense units, Conv filters); a `Conv*DTranspose`
        kernel `(h, w, out, in)` has them on axis -2 and a depthwise kernel
        `(h, w, channels, multiplier)` on the last two. `model.fit` (and
        `compile` from a saved file) builds the optimizer with the model
        that calls it, which this reads on its own; call this method in a
        custom training loop, before the first `apply` (an optimizer built
        without it on kernels of 3 or more axes warns). Under a
        `keras.optimizers.LossScaleOptimizer`, call it on its
        `inner_optimizer`.

        Args:
            model: a built Keras 3 or tf_keras model, or its `ModelGraph`.
        """
        if getattr(self, "built", False) or getattr(self, "_built", False):
            raise ValueError(
                "`set_noise_units()` can only be called before the optimizer is "
                "built (before its first step)."
            )
        units.units_of(model)  # refuses what is not a built model, now
        self._model = weakref.ref(units.model_of(model))

    def _meet_model(self, var_list):
        """Learns the model that builds this optimizer, when a model does:
        its kernels' unit axes, and its non-trainable weights (checked when
        `fit` ends)."""
        model = self._model() if self._model is not None else units.calling_model(self)
        if model is not None:
            self._model = weakref.ref(model)
        found = {}
        if self.noise != "entry" and model is not None:
            found = units.units_of(model)
        elif self.noise != "entry" and self.sigma != 0.0 and any(
            len(v.shape) >= 3 and self.gets_noise(v) for v in var_list
        ):
            units.warn_blind(self)
        self._unit_axes = units.by_index(found, var_list)

    def finalize_variable_values(self, var_list):
        """Keras calls this at the end of `fit`: warns if a weight is not finite.

        Heavy-tailed noise makes divergence a normal event, and a model
        whose weights went NaN or inf would otherwise come out of `fit`
        without a word. One pass over the weights per `fit` call (and over
        the model's non-trainable float weights, BatchNormalization's moving
        statistics, when a model built this optimizer); skipped while
        another exception (a Ctrl-C) is on its way out.
        """
        super().finalize_variable_values(var_list)
        divergence.check_finite_weights(self, var_list, self._model_statistics())

    def _model_statistics(self):
        """The non-trainable float weights of the model that built this
        optimizer (empty when none did, or it is gone)."""
        model = self._model() if self._model is not None else None
        return divergence.float_weights(model.non_trainable_weights) if model is not None else []

    def _add_exclusions(self, patterns):
        if isinstance(patterns, str):
            patterns = [patterns]
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as error:
                raise ValueError(
                    "`noise_exclusions` must be regular expressions. "
                    f"Received: {pattern!r} ({error})"
                ) from None
            if pattern not in self.noise_exclusions:
                self.noise_exclusions.append(pattern)

    def exclude_from_noise(self, var_list=None, var_names=None):
        """Keeps more variables noise-free (biases and 1-D weights always are).

        Call before the optimizer is built (before the first `fit` step). The
        exclusions are saved in `get_config()` (as variable paths and
        patterns), so a reloaded optimizer keeps them.

        A variable path of three parts (`model/layer/kernel`) is matched
        without its first part, the Sequential model's name that a reloaded
        model drops. In a functional model holding two sub-models `a` and
        `b`, excluding `a/fc/kernel` therefore also excludes `b/fc/kernel`:
        give layers distinct names when only one of them should be excluded.

        Args:
            var_list: variables to exclude; a layer or model stands for all
                its weights. Defaults to `None`.
            var_names: a regular expression or a list of them; a variable
                whose path (or name) matches one (`re.search`) is excluded.
                Defaults to `None`.
        """
        if getattr(self, "built", False) or getattr(self, "_built", False):
            raise ValueError(
                "`exclude_from_noise()` can only be called before the "
                "optimizer is built (before its first step)."
            )
        if isinstance(var_names, str):
            var_names = [var_names]
        exact = [exclusions.exact_pattern(exclusions.variable_path(v)) for v in exclusions.variables_of(var_list)]
        self._add_exclusions(exact + list(var_names or []))

    def gets_noise(self, variable):
        """Whether `variable` is perturbed: 2 or more axes and not excluded."""
        if len(variable.shape) < 2:
            return False
        path = exclusions.variable_path(variable)
        return not any(re.search(p, path) for p in self.noise_exclusions)

    def current_sigma(self):
        """Sigma at the current iteration (a schedule is evaluated)."""
        if isinstance(self.sigma, self.schedules.LearningRateSchedule):
            return self.sigma(self.iterations)
        return self.sigma

    def noise_increment(self, variable, index, learning_rate, sigma, iteration):
        """`sigma * c * lr**(1/alpha) * xi` for one variable (broadcastable to it).

        `c` is 1, or `1/sqrt(fan_in)` with `sigma_scale="fan_in"`: a function
        of the variable's shape, so the increment stays a pure function of
        `(seed, variable index, iteration)` and a resumed run continues it.
        """
        base = noise_lib.as_stateless_seed(self.seed)
        seed = noise_lib.fold_in(noise_lib.fold_in(base, index), iteration)
        factor = ops.cast(sigma, variable.dtype)
        if self.sigma_scale == "fan_in":
            factor = factor * (1.0 / math.sqrt(noise_args.fan_in(variable.shape)))
        if self.lr_rescaling:
            lr = ops.cast(learning_rate, variable.dtype)
            factor = factor * ops.power(lr, 1.0 / self.alpha)
        xi = noise_lib.stable_noise(
            variable.shape,
            self.alpha,
            self.noise,
            scale=factor if self.max_noise is None else 1.0,
            seed=seed,
            dtype=variable.dtype,
            broadcast=False,
            unit_axes=self._unit_axes.get(index, (-1,)),
        )
        if self.max_noise is None:
            return xi
        return ops.clip(xi, -self.max_noise, self.max_noise) * factor

    def noise_config(self):
        """The noise arguments as a JSON-able dict (a schedule serialised)."""
        sigma = self.sigma
        if not isinstance(sigma, float):
            sigma = self.schedules.serialize(sigma)
        return {
            "alpha": self.alpha,
            "sigma": sigma,
            "noise": self.noise,
            "lr_rescaling": self.lr_rescaling,
            "seed": self.seed,
            "noise_exclusions": list(self.noise_exclusions),
            "max_noise": self.max_noise,
            "sigma_scale": self.sigma_scale,
        }

    @classmethod
    def deserialize_sigma(cls, config):
        """`config` with a serialised sigma schedule turned back into one.

        A config without `sigma_scale` (keras-heavytail 0.3 and earlier) was
        trained with the absolute scale, whatever today's default is.
        """
        config.setdefault("sigma_scale", "absolute")
        if isinstance(config.get("sigma"), dict):
            config["sigma"] = cls.schedules.deserialize(config["sigma"])
        return config

    # For optimizers that subclass a concrete one (HeavyTailSGD and its
    # tf_keras twin): the parent's config plus the noise arguments.
    def get_config(self):
        config = super().get_config()
        config.update(self.noise_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = cls.deserialize_sigma(dict(config))
        return super().from_config(config, custom_objects=custom_objects)


def _check_sgd_arguments(nesterov, kwargs):
    """Refuses what Keras' SGD takes unchecked: a non-bool `nesterov`, a
    NaN, inf, negative or non-number weight decay or clipping bound (each
    trained on silently, or failed in a graph with no name)."""
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ValueError(f"`nesterov` must be True or False. Received: nesterov={nesterov!r}")
    for name in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
        value = kwargs.get(name)
        if value is not None and (
            not checks.is_real(value) or not math.isfinite(value) or value < 0
        ):
            raise ValueError(
                f"`{name}` must be a finite number >= 0 or None. Received: {name}={value!r}"
            )
        if value is not None:
            kwargs[name] = float(value)  # a numpy float64 or a Fraction breaks the graph


class NoisySGD(NoiseUpdate):
    """SGD's constructor plus the noise arguments, for Keras 3 and tf_keras SGD.

    `HeavyTailSGD` (on `keras.optimizers.SGD`) and `LegacyHeavyTailSGD` (on
    `tf_keras.optimizers.SGD`) share it; each documents the arguments.
    """

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
        sigma_scale=defaults.SIGMA_SCALE,
        name=None,
        **kwargs,
    ):
        if checks.is_real(learning_rate):
            learning_rate = float(learning_rate)  # Keras refuses numpy scalars
        _check_sgd_arguments(nesterov, kwargs)
        super().__init__(
            learning_rate=learning_rate,
            momentum=checks.check_fraction(momentum, "momentum"),
            nesterov=nesterov,
            name=name or type(self).__name__,
            **kwargs,
        )
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
    def paper(cls, learning_rate=0.01, **kwargs):
        """The paper's noise: absolute sigma 0.003, alpha 1.75, neuron noise.

        Wan et al. (2024) and their reference code; `kwargs` are the other
        arguments (`momentum`, `seed`, ...). The classifier and first
        convolution, which the paper keeps noise-free, still need
        `exclude_from_noise(paper_exclusions(model))`.
        """
        return cls(learning_rate, **noise_args.paper_noise(kwargs))


# Release 0.2 names that moved to the modules above: kept one release.
_MOVED = {
    **dict.fromkeys(
        ("check_sigma", "check_max_noise", "check_rate", "check_seed", "fan_in",
         "FLOAT32_MAX", "UPDATE_RULE", "NOISE_ARGS", "paper_noise"),
        "noise_args",
    ),
    **dict.fromkeys(("variable_path", "paper_exclusions"), "exclusions"),
    **dict.fromkeys(("DivergenceWarning", "check_finite_weights", "DIVERGENCE_ADVICE"),
                    "divergence"),
}  # fmt: skip


def __getattr__(name):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    new = f"keras_heavytail.optimizers.{_MOVED[name]}"
    warnings.warn(
        f"`{__name__}.{name}` moved to `{new}.{name}`; the old path goes in the "
        "next release.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(new), name)
