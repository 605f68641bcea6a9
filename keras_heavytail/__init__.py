"""keras-heavytail: heavy-tailed SGD that makes Keras models compressible.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

from keras_heavytail.noise import SymmetricStable
from keras_heavytail.noise import positive_stable
from keras_heavytail.noise import stable_noise
from keras_heavytail.noise import symmetric_stable
from keras_heavytail.optimizers import HeavyTailNoise
from keras_heavytail.optimizers import HeavyTailSGD
from keras_heavytail.optimizers import paper_exclusions

__version__ = "0.1.0"

__all__ = [
    "HeavyTailNoise",
    "HeavyTailSGD",
    "SymmetricStable",
    "paper_exclusions",
    "positive_stable",
    "stable_noise",
    "symmetric_stable",
]
