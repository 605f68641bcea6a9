"""Heavy-tailed optimizers for Keras 3, and the alpha-stable noise they add.

    theta <- theta - lr * grad + sigma * c * lr**(1/alpha) * xi,   xi ~ S(alpha)

(`c = 1/sqrt(fan_in)` by default; `c = 1` in the paper: `HeavyTailSGD.paper()`.)

- `HeavyTailSGD`: `keras.optimizers.SGD` plus the noise after every step.
- `HeavyTailNoise(inner_optimizer)`: the same noise after any optimizer's step.
- `symmetric_stable`, `positive_stable`, `stable_noise`: the samplers, pure
  functions of (shape, alpha, scale, seed, dtype).
- `paper_exclusions`: the layers the paper keeps noise-free.
- `DivergenceWarning`: what `fit` warns when it ends with NaN or inf weights.
- `SymmetricStable`: a TensorFlow Probability distribution (TensorFlow only).
- `LegacyHeavyTailSGD` lives in `keras_heavytail.legacy` (tf_keras).

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

from typing import TYPE_CHECKING

from keras_heavytail import lazy

_WHERE = {
    "DivergenceWarning": "divergence",
    "HeavyTailNoise": "heavy_tail",
    "HeavyTailSGD": "heavy_tail",
    "SymmetricStable": "distribution",
    "min_alpha": "noise",
    "paper_exclusions": "exclusions",
    "positive_stable": "noise",
    "stable_noise": "noise",
    "symmetric_stable": "noise",
}
__getattr__, __dir__ = lazy.attach(
    __name__, _WHERE, submodules=("stateless", "torch_stream"),
    tensorflow_only=("distribution",),
)

if TYPE_CHECKING:
    from keras_heavytail.optimizers.distribution import SymmetricStable
    from keras_heavytail.optimizers.divergence import DivergenceWarning
    from keras_heavytail.optimizers.exclusions import paper_exclusions
    from keras_heavytail.optimizers.heavy_tail import HeavyTailNoise
    from keras_heavytail.optimizers.heavy_tail import HeavyTailSGD
    from keras_heavytail.optimizers.noise import min_alpha
    from keras_heavytail.optimizers.noise import positive_stable
    from keras_heavytail.optimizers.noise import stable_noise
    from keras_heavytail.optimizers.noise import symmetric_stable

__all__ = [
    "DivergenceWarning",
    "HeavyTailNoise",
    "HeavyTailSGD",
    "SymmetricStable",
    "min_alpha",
    "paper_exclusions",
    "positive_stable",
    "stable_noise",
    "symmetric_stable",
]
