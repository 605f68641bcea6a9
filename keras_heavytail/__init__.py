"""keras-heavytail: heavy-tailed SGD that makes Keras models compressible.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

from keras_heavytail.compressibility import best_k_error
from keras_heavytail.compressibility import compressibility_report
from keras_heavytail.compressibility import neuron_norms
from keras_heavytail.compressibility import neuron_prune_ratio
from keras_heavytail.compressibility import tail_index
from keras_heavytail.datasets import load_dataset
from keras_heavytail.deploy import export_variants
from keras_heavytail.distribution import SymmetricStable
from keras_heavytail.experiments import Setting
from keras_heavytail.experiments import build_model
from keras_heavytail.experiments import run_protocol
from keras_heavytail.export import benchmark_tflite
from keras_heavytail.export import evaluate_tflite
from keras_heavytail.export import export_tflite
from keras_heavytail.export import model_card
from keras_heavytail.export import predict_tflite
from keras_heavytail.noise import positive_stable
from keras_heavytail.noise import stable_noise
from keras_heavytail.noise import symmetric_stable
from keras_heavytail.optimizers import HeavyTailNoise
from keras_heavytail.optimizers import HeavyTailSGD
from keras_heavytail.optimizers import paper_exclusions
from keras_heavytail.plots import plot_norm_tails
from keras_heavytail.plots import plot_pruning_curves
from keras_heavytail.pruning import neuron_scores
from keras_heavytail.pruning import prune
from keras_heavytail.pruning import pruning_curve
from keras_heavytail.shrinking import shrink

__version__ = "0.1.0"

__all__ = [
    "HeavyTailNoise",
    "HeavyTailSGD",
    "Setting",
    "SymmetricStable",
    "benchmark_tflite",
    "best_k_error",
    "build_model",
    "compressibility_report",
    "evaluate_tflite",
    "export_tflite",
    "export_variants",
    "load_dataset",
    "model_card",
    "neuron_norms",
    "neuron_prune_ratio",
    "neuron_scores",
    "paper_exclusions",
    "plot_norm_tails",
    "plot_pruning_curves",
    "positive_stable",
    "predict_tflite",
    "prune",
    "pruning_curve",
    "run_protocol",
    "shrink",
    "stable_noise",
    "symmetric_stable",
    "tail_index",
]
