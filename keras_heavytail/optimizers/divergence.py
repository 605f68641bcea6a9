"""Divergence: a run whose weights are no longer finite says so.

Heavy-tailed noise makes divergence a normal event. The optimizers check
their weights, and the non-trainable float weights of the model that built
them, once per `fit` (`check_finite_weights`), and the research harness
checks its loss; both give the same advice.
"""

import sys
import warnings

import numpy as np

from keras_heavytail import arrays
from keras_heavytail.optimizers.exclusions import variable_path

# What to do about a diverged run (the optimizers and the harness say it alike).
DIVERGENCE_ADVICE = "Lower sigma or the learning rate, or raise alpha."

# Weights past this size are diverged too, if still finite: float32 keeps 7
# digits, so a gradient step of order 1 added to them is lost (sigma=1e30
# left finite weights of 1e30 and a model at chance without a word).
BLOWN_UP = 1e15


class DivergenceWarning(RuntimeWarning):
    """`fit` ended with non-finite trainable weights.

    Left a warning on purpose: an exception at the end of `fit` would skip
    the callbacks' `on_train_end`, and `BackupAndRestore` would then resume
    the next `fit` from the diverged weights.
    """


def float_weights(variables):
    """The floating-point ones of `variables` (not seed states or counters)."""
    return [v for v in variables if "float" in str(getattr(v, "dtype", ""))]


def check_finite_weights(optimizer, var_list, statistics=()):
    """Warns (`DivergenceWarning`) naming the first diverged variable.

    `var_list` (the trained weights) is diverged when not finite or beyond
    `BLOWN_UP`; `statistics` (non-trainable weights such as
    BatchNormalization's moving variance, which may be large) when not
    finite. A warning, not an error: an error here would skip the
    callbacks' end of training (`BackupAndRestore` would keep a backup of
    the diverged run).
    """
    if sys.exc_info()[0] is not None:
        return  # fit is unwinding from another error: let that one through
    bounded = [(v, True) for v in var_list] + [(v, False) for v in statistics]
    for variable, bound in bounded:
        values = arrays.as_array(variable)
        finite = np.all(np.isfinite(values))
        if not finite or (bound and values.size and np.max(np.abs(values)) > BLOWN_UP):
            what = "is not finite" if not finite else f"holds values beyond {BLOWN_UP:g}"
            warnings.warn(
                f"Training with {type(optimizer).__name__} diverged: variable "
                f"{variable_path(variable)!r} {what} after step "
                f"{int(optimizer.iterations)}. {DIVERGENCE_ADVICE}",
                DivergenceWarning,
                stacklevel=2,
            )
            return
