"""The optimizer-side noise: arguments, validation, exclusions, the increment.

One mixin, `NoiseUpdate`, holds what the Keras 3 optimizers
(`keras_heavytail.optimizers.heavy_tail`) and the tf_keras one (`keras_heavytail.legacy`)
share: the noise arguments and their validation, which variables get noise
(and saving that choice in the config), and the per-variable increment

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
import random
import re
import sys
import warnings

import keras
import numpy as np
from keras import ops

from keras_heavytail import arrays
from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail.optimizers import noise as noise_lib
from keras_heavytail.pruning.graph import ModelGraph

# The largest float32: a sigma above it is inf in a float32 variable.
FLOAT32_MAX = 3.4028234663852886e38


def check_sigma(sigma, schedule_type=None):
    """Validates a noise scale: a finite float >= 0 or a schedule; returns it."""
    schedule_type = schedule_type or keras.optimizers.schedules.LearningRateSchedule
    if isinstance(sigma, schedule_type):
        return sigma
    if not checks.is_real(sigma) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(
            "`sigma` must be a finite float >= 0 or a "
            f"`LearningRateSchedule`. Received: sigma={sigma!r}"
        )
    if sigma > FLOAT32_MAX:
        raise ValueError(
            "`sigma` is beyond float32's range (3.4e38): the noise would be inf. "
            f"Received: sigma={sigma!r}"
        )
    return float(sigma)



def fan_in(shape):
    """The inputs of one output unit of a kernel: the product of all but its last axis.

    Keras' own convention (`keras.initializers.VarianceScaling`): a Dense
    kernel `(n_in, n_out)` has `n_in`, a Conv2D kernel `(h, w, c_in, c_out)`
    has `h * w * c_in`, a DepthwiseConv2D kernel `(h, w, c, 1)` `h * w * c`.
    """
    shape = [int(d) for d in shape]
    return max(1, math.prod(shape[:-1]))


def check_max_noise(max_noise):
    """Validates the clip of the standardised draw: `None` or a finite float > 0."""
    if max_noise is None:
        return None
    if not checks.is_real(max_noise) or not math.isfinite(max_noise) or max_noise <= 0:
        raise ValueError(
            "`max_noise` must be None or a finite float > 0. "
            f"Received: max_noise={max_noise!r}"
        )
    return float(max_noise)


def check_rate(name, value):
    """Validates a number that must be finite and >= 0 (a rate, a scale)."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite float >= 0. Received: {name}={value:.7g}"
        )


def _eager_float(value):
    """`value` as a Python float, or `None` inside a traced function."""
    try:
        return float(ops.convert_to_tensor(value))
    except (TypeError, ValueError, NotImplementedError, AttributeError):
        return None


def check_seed(seed):
    """Validates a noise seed (an int in [0, 2**31 - 1)); `None` draws one."""
    if seed is None:
        return random.randrange(checks.SEED_LIMIT)
    if not checks.is_integer(seed):
        raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
    seed = int(seed)
    if not 0 <= seed < checks.SEED_LIMIT:
        raise ValueError(
            f"`seed` must be in [0, {checks.SEED_LIMIT}). Received: seed={seed!r}"
        )
    return seed


def variable_path(variable):
    """A variable's path as exclusions match it: `model/layer/kernel`.

    Keras 3 variables have a `path`; inside a TensorFlow update step Keras
    passes the backing `tf.Variable`, and tf_keras has only names, both as
    `model/layer/kernel:0`: the `:0` is dropped so all three agree.
    """
    path = getattr(variable, "path", None) or variable.name
    return re.sub(r":\d+$", "", path)


def _exact_pattern(path):
    """A pattern matching this variable before and after a save and reload.

    A Sequential model's variable paths start with the model's name
    (`sequential/out/kernel`), which a reloaded model drops (`out/kernel`);
    a functional model's (`keras.applications`: `Conv1/kernel`) never had
    it. So a leading component is dropped only from paths of three or more
    (`model/layer/variable`), and the rest must match a whole path suffix.
    """
    parts = path.split("/")
    rest = "/".join(parts[1:]) if len(parts) > 2 else path
    return "(^|/)" + re.escape(rest) + "$"


def paper_exclusions(model):
    """The variables that the paper keeps noise-free: output layer and first conv.

    Wan et al. (2024) perturb every weight matrix except the classifier's and
    the first convolution's. Pass the result to `exclude_from_noise`; the
    optimizer saves the exclusion (as variable paths) in its config.

    Args:
        model: a built Keras 3 or tf_keras model.

    Returns:
        A list of variables (the kernels and biases of those layers).

    Example:

    >>> opt = HeavyTailSGD(learning_rate=0.01)
    >>> opt.exclude_from_noise(paper_exclusions(model))  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    layers = ModelGraph(model).noise_free_layers()
    return [v for layer in layers for v in layer.trainable_variables]


# What to do about a diverged run (the optimizers and the harness say it alike).
DIVERGENCE_ADVICE = "Lower sigma or the learning rate, or raise alpha."


class DivergenceWarning(RuntimeWarning):
    """`fit` ended with non-finite trainable weights.

    Left a warning on purpose: an exception at the end of `fit` would skip
    the callbacks' `on_train_end`, and `BackupAndRestore` would then resume
    the next `fit` from the diverged weights.
    """


def check_finite_weights(optimizer, var_list):
    """Warns (`DivergenceWarning`) naming the first non-finite variable of `var_list`.

    A warning, not an error: an error here would skip the callbacks' end of
    training (`BackupAndRestore` would keep a backup of the diverged run).
    """
    if sys.exc_info()[0] is not None:
        return  # fit is unwinding from another error: let that one through
    for variable in var_list:
        if not np.all(np.isfinite(arrays.as_array(variable))):
            warnings.warn(
                f"Training with {type(optimizer).__name__} diverged: variable "
                f"{variable_path(variable)!r} is not finite after step "
                f"{int(optimizer.iterations)}. {DIVERGENCE_ADVICE}",
                DivergenceWarning,
                stacklevel=2,
            )
            return


def _variables_of(var_list):
    """The variables in `var_list`; a layer or model stands for its weights."""
    if var_list is None:
        return []
    if not isinstance(var_list, (list, tuple, set)):
        var_list = [var_list]
    variables = []
    for item in var_list:
        if hasattr(item, "weights") and not hasattr(item, "assign"):
            variables.extend(item.weights)  # a layer or a model
        elif hasattr(item, "shape") and (hasattr(item, "path") or hasattr(item, "name")):
            variables.append(item)
        else:
            raise ValueError(
                "`var_list` holds variables, layers or models; use `var_names` "
                f"for names and patterns. Received: {item!r}"
            )
    return variables


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
        self.sigma = check_sigma(sigma, self.schedules.LearningRateSchedule)
        self.sigma_scale = checks.check_choice(
            sigma_scale, "sigma_scale", defaults.SIGMA_SCALES
        )
        self.noise = noise_lib.check_structure(noise)
        if not isinstance(lr_rescaling, bool):
            raise ValueError(
                f"`lr_rescaling` must be a bool. Received: lr_rescaling={lr_rescaling!r}"
            )
        self.lr_rescaling = lr_rescaling
        self.seed = check_seed(seed)
        self.max_noise = check_max_noise(max_noise)
        self.noise_exclusions = []
        self._add_exclusions(noise_exclusions or [])
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
            value = _eager_float(value)
            if value is not None:
                check_rate(name, value)

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
                    f"{dtype} variables ({variable_path(variable)!r}): below it "
                    f"the sampler can draw inf. Received: alpha={self.alpha}"
                )

    def build(self, var_list):
        self.check_alpha_fits(var_list)
        self.check_rates()
        super().build(var_list)

    def finalize_variable_values(self, var_list):
        """Keras calls this at the end of `fit`: warns if a weight is not finite.

        Heavy-tailed noise makes divergence a normal event, and a model
        whose weights went NaN or inf would otherwise come out of `fit`
        without a word. One pass over the weights per `fit` call; skipped
        while another exception (a Ctrl-C) is on its way out.
        """
        super().finalize_variable_values(var_list)
        check_finite_weights(self, var_list)

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
        exact = [_exact_pattern(variable_path(v)) for v in _variables_of(var_list)]
        self._add_exclusions(exact + list(var_names or []))

    def gets_noise(self, variable):
        """Whether `variable` is perturbed: 2 or more axes and not excluded."""
        if len(variable.shape) < 2:
            return False
        path = variable_path(variable)
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
            factor = factor * (1.0 / math.sqrt(fan_in(variable.shape)))
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
        return cls(learning_rate, **paper_noise(kwargs))


def paper_noise(kwargs=None):
    """The paper's noise arguments plus `kwargs`, which may not change them."""
    paper = {
        "alpha": defaults.PAPER_ALPHA,
        "sigma": defaults.PAPER_SIGMA,
        "noise": defaults.PAPER_NOISE,
        "sigma_scale": defaults.PAPER_SIGMA_SCALE,
    }
    clash = sorted(set(paper) & set(kwargs or {}))
    if clash:
        raise ValueError(
            f"`.paper()` fixes {', '.join(sorted(paper))} to the paper's values; "
            "construct the optimizer itself to choose them. Received: "
            + ", ".join(f"{k}={kwargs[k]!r}" for k in clash)
        )
    return {**paper, **(kwargs or {})}


UPDATE_RULE = """
    ```python
    theta = theta - lr_t * grad                  # the wrapped update
    theta = theta + sigma_t * c * lr_t**(1/alpha) * xi_t,   xi_t ~ SaS(alpha, 1)
    ```

    The paper (`sigma_scale="absolute"`, `.paper()`) has `c = 1`. The default
    `sigma_scale="fan_in"` departs from it: `c = 1/sqrt(fan_in)`, the
    standard deviation of a LeCun-initialised kernel, so one sigma is the
    same relative noise on a 784-input Dense kernel and on a 3x3 convolution.
"""

NOISE_ARGS = f"""        alpha: float in (0, 2], the noise's stability index (2 is Gaussian,
            1 is Cauchy). Defaults to `{defaults.ALPHA}`.
        sigma: finite float >= 0 or a `LearningRateSchedule` of the
            iteration, the noise scale. 0 gives exactly the noise-free
            optimizer. Defaults to `{defaults.SIGMA}` (relative, see
            `sigma_scale`); the paper's is `{defaults.PAPER_SIGMA}`, absolute.
        noise: `"entry"` (i.i.d. per weight), `"neuron"` (one value per output
            unit, shared by its incoming weights, the paper's main setting) or
            `"elliptical"` (per output unit a rotation-invariant stable vector,
            each entry marginally SaS(alpha, 1)). `"neuron"` costs one draw
            per unit; standardise inputs with it, since a unit's shared shift
            is multiplied by the sum of its inputs. Measurements of each
            structure: `benchmarks/RESULTS.md`. Defaults to `"{defaults.NOISE}"`.
        lr_rescaling: multiply the noise by `lr_t**(1/alpha)`, the step's
            natural scale for an alpha-stable process. Defaults to `{defaults.LR_RESCALING}`.
        seed: int in [0, 2**31 - 1), the noise seed; `None` draws one and
            keeps it, so `get_config()` always reproduces the run.
            Defaults to `None`.
        noise_exclusions: regular expressions matched (`re.search`) against
            variable paths; matching variables get no noise. Filled by
            `exclude_from_noise` and saved in the config. Defaults to `None`.
        max_noise: `None` or a float > 0: clip the standardised draw `xi` to
            `[-max_noise, max_noise]` before scaling it. A departure from
            the paper, whose noise is never clipped: it bounds every
            increment by `sigma * lr**(1/alpha) * max_noise` and changes the
            fraction of draws with `|xi| > max_noise`, about
            `2 * Gamma(alpha) * sin(pi * alpha / 2) / pi * max_noise**-alpha`
            (the stable law's tail; for alpha=1.75 and max_noise=100, 7e-5).
            Defaults to `None` (no clip, as in the paper).
        sigma_scale: `"fan_in"` (sigma relative to each kernel's scale:
            divided by `sqrt(fan_in)`, the product of the kernel's axes but
            the last) or `"absolute"` (the paper's: one sigma for every
            kernel). At the paper's absolute 0.003 the noise cost 7.5 points
            on Fashion-MNIST and wrecked BatchNorm CNNs; the default keeps
            dense accuracy (`benchmarks/RESULTS.md` §13). Files saved before
            this argument existed load with `"absolute"`.
            Defaults to `"{defaults.SIGMA_SCALE}"`.
"""
