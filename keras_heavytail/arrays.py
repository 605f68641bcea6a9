"""Numpy copies of tensors and variables, from every backend and from tf_keras."""

import numpy as np


def as_array(x, dtype=None):
    """A numpy copy of an array, tensor or (Keras 3 or tf_keras) variable."""
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=dtype)
