"""Argument checks shared by every wing: one message shape, the bad value repeated.

"`ratio` must be in [0, 1]. Received: ratio=1.5", as Keras says it.
"""

import math
import numbers

import numpy as np

# The largest seed every backend's stateless random ops accept.
SEED_LIMIT = 2**31 - 1


def check_choice(value, name, choices):
    """Raises a ValueError unless `value` is one of `choices`; returns it."""
    if isinstance(value, (list, dict, set)) or value not in choices:
        raise ValueError(
            f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}"
        )
    return value


def check_fraction(value, name):
    """Validates a number in [0, 1] named `name`; returns it as a float."""
    if not is_real(value):
        raise ValueError(
            f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}"
        )
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value}")
    return float(value)


def is_real(value):
    """A Python or numpy real number (bools are not numbers here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_integer(value):
    """A Python or numpy integer (bools are not numbers here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_bool(value, name):
    """Validates True or False (a numpy bool too) named `name`; returns a bool.

    A string such as "no" is truthy: taken as a flag it would do the opposite.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_positive(value, name):
    """Validates a finite number > 0 named `name`; returns it as a float."""
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
    return float(value)
