"""Pruning during training for Keras 3, shaped like `tfmot.sparsity.keras`.

The tfmot-shaped import (`from keras_heavytail import sparsity`); the code
lives in `keras_heavytail.pruning.sparsity`.
"""

from keras_heavytail.pruning.sparsity import ConstantSparsity
from keras_heavytail.pruning.sparsity import GradualPruning
from keras_heavytail.pruning.sparsity import PolynomialDecay
from keras_heavytail.pruning.sparsity import PruningSchedule
from keras_heavytail.pruning.sparsity import masks_from_zeros
from keras_heavytail.pruning.sparsity import strip_pruning

__all__ = [
    "ConstantSparsity",
    "GradualPruning",
    "PolynomialDecay",
    "PruningSchedule",
    "masks_from_zeros",
    "strip_pruning",
]
