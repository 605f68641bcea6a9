"""Stateless random draws on each backend: seeds, uniforms, normals.

Keras 3's `keras.random` takes int seeds and
SeedGenerators only, so seed tensors go to the backend's stateless ops.
Philox is pinned so the stream does not depend on TF's per-device choice;
PyTorch, which has no stateless ops, gets a counter-based stream (`torch_stream`).
XLA generates a different Philox stream from the same seed than the TF
kernels do, so a run with jit_compile=True is reproducible with itself, not
with the same run at jit_compile=False.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_heavytail import checks
from keras_heavytail.optimizers import torch_stream

# Uniforms are drawn on [UNIFORM_FLOOR, 1) (see `torch_stream`).
UNIFORM_FLOOR = torch_stream.UNIFORM_FLOOR


def backend_name():
    """The Keras backend, if it has the stateless ops the noise needs."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax", "torch"):
        raise NotImplementedError(
            "keras_heavytail samples noise with stateless seeds, available on "
            "the 'tensorflow', 'jax' and 'torch' backends. "
            f"Received: backend={backend!r}"
        )
    return backend


def as_stateless_seed(seed):
    """Turns an int, `None`, a `SeedGenerator` or a seed tensor into a seed tensor.

    Args:
        seed: an int in [0, 2**31 - 1), `None`, a `keras.random.SeedGenerator`,
            or a pair of ints (a list, an array or an integer tensor of shape
            `(2,)`).

    Returns:
        An integer tensor of shape `(2,)` usable by `fold_in`.
    """
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return keras.random.randint((2,), 0, 2**31 - 1, seed=seed, dtype="int32")
    if isinstance(seed, (bool, np.bool_)) or isinstance(seed, (float, np.floating)):
        raise ValueError(f"`seed` must be an int or a tensor. Received: seed={seed!r}")
    if isinstance(seed, numbers.Integral):
        seed = int(seed)
        if not 0 <= seed < checks.SEED_LIMIT:
            raise ValueError(
                f"An int `seed` must be in [0, {checks.SEED_LIMIT}). Received: seed={seed}"
            )
        return ops.convert_to_tensor([seed, 0], dtype="int32")
    if isinstance(seed, (str, bytes, list, tuple, np.ndarray)):
        pair = np.asarray(seed)
        if pair.shape != (2,) or pair.dtype.kind not in "iu" or not (
            np.all(pair >= 0) and np.all(pair < checks.SEED_LIMIT)
        ):
            raise ValueError(
                "`seed` must be an int, a SeedGenerator, or a pair of ints in "
                f"[0, {checks.SEED_LIMIT}) (a stateless seed). Received: seed={seed!r}"
            )
        return ops.convert_to_tensor(pair, dtype="int32")
    if getattr(seed, "shape", None) is not None and tuple(seed.shape) != (2,):
        raise ValueError(
            f"A seed tensor must have shape (2,). Received: shape={tuple(seed.shape)}"
        )
    dtype = keras.backend.standardize_dtype(getattr(seed, "dtype", "int32"))
    if "int" not in dtype:  # a float tensor would be truncated to another seed
        raise ValueError(f"A seed tensor must hold integers. Received: dtype={dtype}")
    return seed


def fold_in(seed, data):
    """A new stateless seed derived from `seed` and an integer `data`.

    Distinct `data` give independent streams; the same pair always gives the
    same seed (`tf.random.experimental.stateless_fold_in`, `jax.random.fold_in`,
    SplitMix64 on PyTorch).
    """
    if backend_name() == "tensorflow":
        import tensorflow as tf

        seed = tf.convert_to_tensor(seed)
        if seed.dtype not in (tf.int32, tf.int64):
            seed = tf.cast(seed, tf.int64)
        return tf.random.experimental.stateless_fold_in(
            seed, tf.cast(data, tf.int64), alg="philox"
        )
    if backend_name() == "torch":
        return torch_stream.fold_in(seed, data)
    import jax

    key = jax.numpy.asarray(seed).astype("uint32")
    return jax.random.fold_in(key, jax.numpy.asarray(data).astype("uint32"))


def uniform(shape, seed, dtype, minval, maxval):
    if backend_name() == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_uniform(
            shape, seed=seed, minval=minval, maxval=maxval, dtype=dtype, alg="philox"
        )
    if backend_name() == "torch":
        return torch_stream.uniform01(shape, seed, dtype) * (maxval - minval) + minval
    import jax

    key = jax.numpy.asarray(seed).astype("uint32")
    return jax.random.uniform(key, shape, dtype=dtype, minval=minval, maxval=maxval)


def uniform01(shape, seed, dtype):
    """Uniform on [UNIFORM_FLOOR, 1): the raw Philox draw, clipped away from 0.

    TF's `stateless_uniform` always adds two passes (`* (max - min) + min`);
    the raw op and one `maximum` cost one.
    """
    if backend_name() == "tensorflow":
        import tensorflow as tf

        key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
        v = tf.raw_ops.StatelessRandomUniformV2(
            shape=shape,
            key=key,
            counter=counter,
            alg=1,
            dtype=dtype,  # 1: Philox
        )
        return tf.maximum(v, tf.constant(UNIFORM_FLOOR, dtype))
    if backend_name() == "torch":
        return torch_stream.uniform01(shape, seed, dtype)
    return uniform(shape, seed, dtype, UNIFORM_FLOOR, 1.0)


def normal(shape, seed, dtype):
    if backend_name() == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")
    if backend_name() == "torch":
        # Box-Muller on two independent uniform streams.
        radius = ops.sqrt(
            -2.0 * ops.log(torch_stream.uniform01(shape, fold_in(seed, 0), dtype))
        )
        angle = (2.0 * math.pi) * torch_stream.uniform01(shape, fold_in(seed, 1), dtype)
        return radius * ops.cos(angle)
    import jax

    key = jax.numpy.asarray(seed).astype("uint32")
    return jax.random.normal(key, shape, dtype=dtype)


def sampling_dtype(dtype):
    """Half-precision noise is drawn in float32 and cast at the end."""
    dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
    if dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise ValueError(
            "Noise is drawn in a float dtype (float16, bfloat16, float32 or "
            f"float64). Received: dtype={dtype!r}"
        )
    return "float32" if dtype in ("float16", "bfloat16") else dtype, dtype


def check_shape(shape):
    """A draw's shape as a tuple of ints >= 0 (an int is a 1-D shape)."""
    if checks.is_integer(shape):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or not all(checks.is_integer(d) and d >= 0 for d in dims):
        raise ValueError(
            "`shape` must be a tuple of ints >= 0, e.g. (1000,) or (784, 256). "
            f"Received: shape={shape!r}"
        )
    return tuple(int(d) for d in dims)


# The largest finite values of the half-precision dtypes.
HALF_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38}


def to_output(x, out_dtype):
    """Casts a float32 draw to `out_dtype`, clipping half precision to its range.

    A heavy-tailed draw above float16's largest value would become inf.
    """
    if out_dtype in HALF_MAX:
        limit = HALF_MAX[out_dtype]
        x = ops.clip(x, -limit, limit)
    return ops.cast(x, out_dtype)
