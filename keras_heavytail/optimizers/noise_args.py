"""The noise's arguments: validation, the paper's values, their documentation.

`HeavyTailSGD`, `HeavyTailNoise` and the tf_keras `LegacyHeavyTailSGD` take
the same seven noise arguments; this module checks them (each error repeats
the bad value), holds the paper's setting (`paper_noise`) and the text that
documents them in every optimizer's docstring (`UPDATE_RULE`, `NOISE_ARGS`).

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import math
import random

import keras
from keras import ops

from keras_heavytail import checks
from keras_heavytail import defaults

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


def eager_float(value):
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
            is multiplied by the sum of its inputs. A unit is a Dense
            neuron or Conv filter (the kernel's last axis), a
            `Conv2DTranspose` output filter (axis -2 of `(h, w, out, in)`)
            or a depthwise channel (`(h, w, channels, multiplier)`); the
            model that `fit` builds the optimizer for says which, and a
            custom loop calls `set_noise_units(model)` (else: last axis).
            Measurements of each
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
