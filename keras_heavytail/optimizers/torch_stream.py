"""A counter-based random stream for the PyTorch backend (SplitMix64).

PyTorch has no stateless (counter-based) random ops, and its CPU generator
keeps 32 bits of a seed. Its stream is therefore built here: a seed is two
32-bit words, `fold_in` mixes them with the data through SplitMix64, and
uniforms are SplitMix64 of (key, element index), a counter-based generator
(Steele et al., 2014) that is a pure function of the seed and the same on
CPU and GPU. Torch runs eagerly, so the seed words are read as Python ints.
"""

import math

from keras import ops

# Uniforms are drawn on [UNIFORM_FLOOR, 1): the lower end keeps cos(U) and -log(V)
# strictly positive in float32, so every stable draw is finite for alpha >=
# noise.MIN_ALPHA. The samplers of every backend use this floor.
UNIFORM_FLOOR = 2.0**-24
_MASK64 = 2**64 - 1


def _splitmix64(x):
    """SplitMix64's finaliser on a Python int: 64 bits in, 64 mixed bits out."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _torch_key(seed):
    """A stateless seed tensor (two 32-bit words) as one 64-bit Python int."""
    high, low = (int(w) & 0xFFFFFFFF for w in ops.convert_to_numpy(seed).ravel())
    return (high << 32) | low


def _torch_seed(key, like):
    """A 64-bit int as a seed tensor `[high, low]` (int64) on `like`'s device."""
    import torch

    return torch.tensor([key >> 32, key & 0xFFFFFFFF], device=like.device)


def fold_in(seed, data):
    """`seed` folded with an int `data` through SplitMix64, on torch."""
    seed = ops.convert_to_tensor(seed)
    data = int(ops.convert_to_numpy(data)) & _MASK64
    return _torch_seed(_splitmix64(_splitmix64(_torch_key(seed)) ^ data), seed)


def _torch_signed(value):
    """A 64-bit constant as the signed int64 torch stores."""
    return value - 2**64 if value >= 2**63 else value


def uniform01(shape, seed, dtype):
    """Uniform on [UNIFORM_FLOOR, 1): SplitMix64 of (key, element index).

    In place on int64 (torch's `>>` is arithmetic, so each shift is masked
    to make it logical); the top 24 (float32) or 53 (float64) bits become
    the float.
    """
    import torch

    seed = ops.convert_to_tensor(seed)
    x = torch.arange(1, math.prod(shape) + 1, dtype=torch.int64, device=seed.device)
    x.mul_(_torch_signed(0x9E3779B97F4A7C15)).add_(_torch_signed(_torch_key(seed)))
    shifted = torch.empty_like(x)
    for bits, multiplier in (
        (30, 0xBF58476D1CE4E5B9),
        (27, 0x94D049BB133111EB),
        (31, 1),
    ):
        torch.bitwise_right_shift(x, bits, out=shifted)
        x.bitwise_xor_(shifted.bitwise_and_((1 << (64 - bits)) - 1))
        if multiplier != 1:
            x.mul_(_torch_signed(multiplier))
    bits = 53 if dtype == "float64" else 24
    x.bitwise_right_shift_(64 - bits).bitwise_and_((1 << bits) - 1)
    u = x.to(getattr(torch, dtype)).mul_(2.0**-bits)
    return u.clamp_(min=UNIFORM_FLOOR).reshape(shape)
