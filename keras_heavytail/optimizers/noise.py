"""Symmetric alpha-stable noise, sampled by Chambers-Mallows-Stuck.

Everything here is a pure function of (shape, alpha, scale, seed, dtype): the
optimizers only call it, so Gaussian (alpha=2), Cauchy (alpha=1) and general
stable noise swap without touching them.

Conventions follow `scipy.stats.levy_stable` with `beta=0` (its default
"S1" parametrisation): the characteristic function of `SaS(alpha, scale)` is
`exp(-|scale * t| ** alpha)`, so alpha=2 is N(0, 2 * scale**2) and alpha=1 is a
Cauchy law with the given scale.

Seeds follow Keras and TFP: an int, `None`, a `keras.random.SeedGenerator`, or
a stateless seed (an integer tensor of shape `(2,)`, as `tfp.random` uses).
The same stateless seed always gives the same numbers, which is how the
optimizers keep their noise reproducible across checkpoints and replicas.
"""

import functools
import math
import numbers

import numpy as np
from keras import ops

from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail.optimizers import stateless
from keras_heavytail.optimizers.stateless import as_stateless_seed  # noqa: F401  public here since 0.2
from keras_heavytail.optimizers.stateless import fold_in  # noqa: F401

STRUCTURES = defaults.NOISE_STRUCTURES

# Uniforms are drawn on [UNIFORM_FLOOR, 1) (see `torch_stream`).
UNIFORM_FLOOR = stateless.UNIFORM_FLOOR


def check_alpha(alpha):
    """Validates a stability index; returns it as a float."""
    if not checks.is_real(alpha):
        raise ValueError(
            f"`alpha` must be a number in (0, 2]. Received: alpha={alpha!r}"
        )
    if not 0.0 < alpha <= 2.0:
        raise ValueError(f"`alpha` must be in (0, 2]. Received: alpha={alpha}")
    return float(alpha)


# The smallest alpha whose draws are always finite, per sampling dtype and
# noise structure (half precision is drawn in float32). The CMS transform is
# largest at the extreme uniforms (U next to pi/2, W = -log of the largest
# uniform below 1); `tests/test_hostile.py` evaluates it there and checks that
# each bound is finite and 0.02 below it is not. Elliptical noise needs more:
# its mixing variable is (alpha/2)-stable.
MIN_ALPHA = {
    ("float32", "entry"): 0.31,
    ("float32", "neuron"): 0.31,
    ("float32", "elliptical"): 0.62,
    ("float64", "entry"): 0.1,
    ("float64", "neuron"): 0.1,
    ("float64", "elliptical"): 0.19,
}


def min_alpha(structure="entry", dtype=None):
    """The smallest alpha whose `structure` draws in `dtype` are always finite.

    Below it a draw can be inf (alpha=0.1 in float32 gives inf about once in
    6,000 draws), which turns the weights it touches into inf or NaN.

    Args:
        structure: one of `"entry"`, `"neuron"`, `"elliptical"`.
            Defaults to `"entry"`.
        dtype: float dtype of the draws. Defaults to `None`
            (`keras.config.floatx()`).

    Returns:
        A float in (0, 2).
    """
    compute_dtype, _ = stateless.sampling_dtype(dtype)
    return MIN_ALPHA[(compute_dtype, check_structure(structure))]


def check_structure(structure):
    """Validates a noise structure name; returns it."""
    if structure not in STRUCTURES:
        raise ValueError(
            f"`noise` must be one of {STRUCTURES}. Received: noise={structure!r}"
        )
    return structure


# ----------------------------------------------------------------------------
# Chambers-Mallows-Stuck transforms, written once for any array namespace
# with numpy names (`keras.ops` here, `tf.math` in the TFP distribution).
# ----------------------------------------------------------------------------


def cms_symmetric(xp, u, w, alpha):
    """CMS transform: `U ~ Uniform(-pi/2, pi/2)`, `W ~ Exp(1)` -> SaS(alpha, 1).

    `X = sin(aU) / cos(U)**(1/a) * (cos((1-a)U) / W)**((1-a)/a)`, evaluated as
    `sin(aU) * exp(sum of logs)`: one `exp` instead of three powers, and as
    few passes over the data as the formula allows. Exact for a tensor
    `alpha`, alpha=1 (tan U) and alpha=2 (2 sin(U) sqrt(W) ~ N(0, 2)) included.
    """
    one_minus = 1.0 - alpha
    log_rest = (one_minus / alpha) * xp.log(xp.cos(one_minus * u) / w) - xp.log(
        xp.cos(u)
    ) / alpha
    return xp.sin(alpha * u) * xp.exp(log_rest)


def cms_positive(xp, u, w, a):
    """Kanter's transform: `U ~ Uniform(0, pi)`, `W ~ Exp(1)` -> positive a-stable.

    For a in (0, 1), `A = sin(aU) / sin(U)**(1/a) * (sin((1-a)U) / W)**((1-a)/a)`
    has Laplace transform `E exp(-sA) = exp(-s**a)` (Kanter, 1975).
    """
    one_minus = 1.0 - a
    log_rest = (one_minus / a) * xp.log(xp.sin(one_minus * u) / w) - xp.log(
        xp.sin(u)
    ) / a
    return xp.sin(a * u) * xp.exp(log_rest)


def _angle_and_exp(shape, seed, dtype, low, high):
    """`U ~ Uniform(low, high)` and `W ~ Exp(1)`, from one seed."""
    u = stateless.uniform(
        shape, stateless.fold_in(seed, 0), dtype, low + (high - low) * UNIFORM_FLOOR, high
    )
    return u, -ops.log(stateless.uniform01(shape, stateless.fold_in(seed, 1), dtype))


def symmetric_stable(shape, alpha, scale=1.0, seed=None, dtype=None):
    """Draws symmetric alpha-stable samples (Chambers-Mallows-Stuck).

    ```python
    U ~ Uniform(-pi/2, pi/2),  W ~ Exp(1)
    X = scale * sin(alpha U) / cos(U)**(1/alpha)
              * (cos((1 - alpha) U) / W)**((1 - alpha) / alpha)
    ```

    alpha=1 is drawn as `scale * tan(U)` (Cauchy) and alpha=2 as
    `scale * sqrt(2) * N(0, 1)`, the `scipy.stats.levy_stable` convention.
    Written with `keras.ops` on the backend's stateless random ops.

    Args:
        shape: tuple of ints, the output shape.
        alpha: float in (0, 2], the stability index. Samples are finite for
            alpha >= `min_alpha(dtype=dtype)` (0.31 in float32, 0.1 in
            float64); below it some can be inf. Defaults to none; required.
        scale: float or tensor broadcastable to `shape`. Defaults to `1.0`.
        seed: int, `None`, `keras.random.SeedGenerator` or a stateless seed
            tensor of shape `(2,)`. Defaults to `None` (Keras' global seed).
        dtype: float dtype of the output. Defaults to `None`
            (`keras.config.floatx()`).

    Returns:
        A tensor of `shape` whose entries are i.i.d. `SaS(alpha, scale)`.

    Example:

    >>> x = symmetric_stable((1000,), alpha=1.5, seed=0)
    >>> x.shape
    TensorShape([1000])

    References:
        - [Chambers, Mallows & Stuck, 1976](https://doi.org/10.1080/01621459.1976.10480344)
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    alpha = check_alpha(alpha)
    compute_dtype, out_dtype = stateless.sampling_dtype(dtype)
    seed = stateless.as_stateless_seed(seed)
    shape = stateless.check_shape(shape)
    _check_scale(scale)
    unit = isinstance(scale, (int, float)) and scale == 1.0
    if _called_eagerly(seed):
        draw = _compiled_sampler(stateless.backend_name(), shape, alpha, compute_dtype, out_dtype)
        return draw(seed) if unit else draw(seed, ops.cast(scale, compute_dtype))
    return _draw_symmetric(shape, alpha, seed, compute_dtype, out_dtype, scale)


def _check_scale(scale):
    """Refuses a bool, NaN, inf or negative `scale` given as numbers (a traced
    tensor is the optimizer's, checked where its sigma is)."""
    if isinstance(scale, (numbers.Number, np.bool_, np.ndarray, list)):
        values = np.asarray(scale)
        finite = values.dtype.kind in "fiu" and np.all(np.isfinite(values))
        if not finite or np.any(values < 0):
            raise ValueError(
                f"`scale` must be finite numbers >= 0. Received: scale={scale!r}"
            )


def _draw_symmetric(shape, alpha, seed, compute_dtype, out_dtype, scale=None):
    """`symmetric_stable`'s body; `scale=None` (or 1.0) draws SaS(alpha, 1)."""
    if alpha == 2.0:
        x = stateless.normal(shape, seed, compute_dtype) * math.sqrt(2.0)
    else:
        half_pi = math.pi / 2
        u, w = _angle_and_exp(shape, seed, compute_dtype, -half_pi, half_pi)
        if alpha == 1.0:
            x = ops.tan(u)
        else:
            x = cms_symmetric(ops, u, w, alpha)
    if scale is not None and not (isinstance(scale, (int, float)) and scale == 1.0):
        x = x * ops.cast(scale, compute_dtype)
    return stateless.to_output(x, out_dtype)


def _called_eagerly(seed):
    """Whether a call runs op by op: outside a `tf.function` or a JAX trace.

    PyTorch's eager ops are not compiled here (`torch.compile` costs seconds
    per shape), so on torch this is always `False`.
    """
    backend = stateless.backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(seed, jax.core.Tracer)
    return False


@functools.lru_cache(maxsize=64)
def _compiled_sampler(backend, shape, alpha, compute_dtype, out_dtype):
    """`_draw_symmetric` compiled once per (shape, alpha, dtypes): `draw(seed[, scale])`.

    A `tf.function` on TensorFlow (the same Philox kernels as op by op; the
    graph may round the transform differently in the last float bits) and
    `jax.jit` on JAX. The 64 most recently used are kept.
    """

    def draw(seed, scale=None):
        return _draw_symmetric(shape, alpha, seed, compute_dtype, out_dtype, scale)

    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(draw)
    import jax

    return jax.jit(draw)


def positive_stable(shape, a, seed=None, dtype=None):
    """Draws positive a-stable samples with `E exp(-sA) = exp(-s**a)`, a in (0, 1].

    This is `levy_stable(a, beta=1, scale=cos(pi a / 2)**(1/a))` in scipy's
    convention; `a=1` gives the constant 1. It is the mixing variable of the
    elliptical (sub-Gaussian) stable vector `sqrt(2A) * G`.

    Args:
        shape: tuple of ints. Defaults to none; required.
        a: float in (0, 1]. Defaults to none; required.
        seed: as in `symmetric_stable`. Defaults to `None`.
        dtype: float dtype. Defaults to `None` (`keras.config.floatx()`).

    Returns:
        A tensor of `shape` with positive entries.
    """
    if not checks.is_real(a) or not 0 < a <= 1:
        raise ValueError(f"`a` must be in (0, 1]. Received: a={a!r}")
    compute_dtype, out_dtype = stateless.sampling_dtype(dtype)
    shape = stateless.check_shape(shape)
    if a == 1.0:
        return ops.ones(shape, dtype=out_dtype)
    u, w = _angle_and_exp(shape, stateless.as_stateless_seed(seed), compute_dtype, 0.0, math.pi)
    return stateless.to_output(cms_positive(ops, u, w, float(a)), out_dtype)


def unit_shape(shape, unit_axes=(-1,)):
    """The shape of one value per output unit: 1 on every axis but `unit_axes`.

    Dense and Conv kernels keep their last axis, `(1, ..., 1, units)`; a
    transposed convolution's kernel `(h, w, out, in)` keeps axis -2, a
    depthwise one `(h, w, channels, multiplier)` axes -2 and -1.
    """
    shape = tuple(shape)
    kept = {axis % len(shape) for axis in unit_axes}
    return tuple(d if i in kept else 1 for i, d in enumerate(shape))


def check_unit_axes(unit_axes, shape):
    """Validates the axes that index a kernel's output units; returns a tuple."""
    try:
        axes = tuple(int(a) for a in unit_axes if checks.is_integer(a))
        valid = len(axes) == len(tuple(unit_axes)) and axes
    except TypeError:
        axes, valid = (), False
    if not valid or not all(-len(shape) <= a < len(shape) for a in axes):
        raise ValueError(
            f"`unit_axes` must be a non-empty tuple of axes of the shape {tuple(shape)}, "
            f"e.g. (-1,). Received: unit_axes={unit_axes!r}"
        )
    return axes


def stable_noise(
    shape,
    alpha,
    structure="entry",
    scale=1.0,
    seed=None,
    dtype=None,
    broadcast=True,
    unit_axes=(-1,),
):
    """Draws a kernel-shaped alpha-stable perturbation with the paper's structure.

    Output units are the last axis (Dense `(in, out)`, Conv `(..., in, out)`)
    unless `unit_axes` says otherwise.

    - `"entry"`: every entry i.i.d. `SaS(alpha, scale)`.
    - `"neuron"`: one `SaS(alpha, scale)` scalar per output unit, shared by
      all its incoming weights (noise type 1 of the paper's code).
    - `"elliptical"`: per output unit `scale * sqrt(2A) * G`, `A` positive
      (alpha/2)-stable, `G` standard Gaussian over the fan-in: every entry is
      marginally `SaS(alpha, scale)` and the unit's vector is rotation
      invariant. It costs one Gaussian draw per entry.

    Args:
        shape: tuple of ints, the kernel shape. Defaults to none; required.
        alpha: float in (0, 2]. Defaults to none; required.
        structure: one of `"entry"`, `"neuron"`, `"elliptical"`.
            Defaults to `"entry"`.
        scale: float or scalar tensor, applied at the smallest shape (per
            unit for `"neuron"` and `"elliptical"`). Defaults to `1.0`.
        seed: as in `symmetric_stable`. Defaults to `None`.
        dtype: float dtype. Defaults to `None` (`keras.config.floatx()`).
        broadcast: if `False`, `"neuron"` noise is returned with shape
            `(1, ..., 1, units)`, for adding with broadcasting instead of
            materialising the full kernel. Defaults to `True`.
        unit_axes: the axes that index output units: `(-1,)` for Dense and
            Conv kernels, `(-2,)` for a transposed convolution's
            `(h, w, out, in)`, `(-2, -1)` for a depthwise kernel
            `(h, w, channels, multiplier)`. Defaults to `(-1,)`.

    Returns:
        A tensor of `shape` (or broadcastable to it). For `"neuron"` it is
        constant along every axis but `unit_axes`.

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    check_structure(structure)
    shape = stateless.check_shape(shape)
    if structure == "entry" or len(shape) < 2:
        return symmetric_stable(shape, alpha, scale=scale, seed=seed, dtype=dtype)
    seed = stateless.as_stateless_seed(seed)
    units = unit_shape(shape, check_unit_axes(unit_axes, shape))
    if structure == "neuron":
        per_unit = symmetric_stable(
            units, alpha, scale=scale, seed=seed, dtype=dtype
        )
        return ops.broadcast_to(per_unit, shape) if broadcast else per_unit
    compute_dtype, out_dtype = stateless.sampling_dtype(dtype)
    mixing = positive_stable(
        units, alpha / 2.0, seed=stateless.fold_in(seed, 2), dtype=compute_dtype
    )
    per_unit = ops.sqrt(2.0 * mixing)
    if not (isinstance(scale, (int, float)) and scale == 1.0):
        per_unit = per_unit * ops.cast(scale, compute_dtype)
    gauss = stateless.normal(shape, stateless.fold_in(seed, 3), compute_dtype)
    return stateless.to_output(per_unit * gauss, out_dtype)
