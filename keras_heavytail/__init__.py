"""keras-heavytail: heavy-tailed SGD that makes Keras models compressible.

`import keras_heavytail` loads Keras and the backend-neutral core (the
optimizers, samplers, compressibility, pruning and shrink), which run on the
TensorFlow, JAX and PyTorch backends and register their Keras objects, so
`.keras` files that hold them load. It imports no TensorFlow Probability,
tf_keras, tfmot, LiteRT or matplotlib: the names that need them
(`SymmetricStable`, the LiteRT export functions, the plots) load on first
use, and the TensorFlow-only ones say so on another backend. The tf_keras
path is `keras_heavytail.legacy`, imported by name.

With the environment variable `KERAS_HEAVYTAIL_LAZY=1` even the core loads
on first use (the command line uses this so `--help` imports no Keras);
`.keras` files that hold this package's optimizers then load after
`import keras_heavytail.optimizers`.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import importlib
import os
from typing import TYPE_CHECKING

__version__ = "0.2.0"

# Public name -> the module that defines it.
_WHERE = {
    "HeavyTailNoise": "optimizers",
    "HeavyTailSGD": "optimizers",
    "Protocol": "protocol",
    "Setting": "protocol",
    "StopAtTrainAccuracy": "training",
    "SymmetricStable": "distribution",
    "benchmark_tflite": "export",
    "best_k_error": "compressibility",
    "build_model": "protocol",
    "channel_groups": "channels",
    "compressibility_report": "compressibility",
    "evaluate_tflite": "export",
    "export_tflite": "export",
    "export_variants": "deploy",
    "iso_accuracy_ratio": "pruning",
    "load_dataset": "datasets",
    "model_card": "export",
    "neuron_norms": "compressibility",
    "neuron_prune_ratio": "compressibility",
    "neuron_scores": "pruning",
    "paper_exclusions": "noise_update",
    "plot_norm_tails": "plots",
    "plot_pruning_curves": "plots",
    "positive_stable": "noise",
    "predict_tflite": "export",
    "prune": "pruning",
    "pruning_curve": "pruning",
    "run_protocol": "experiments",
    "shrink": "shrinking",
    "stable_noise": "noise",
    "symmetric_stable": "noise",
    "tail_index": "compressibility",
}
# Public submodules, imported by name (`keras_heavytail.sparsity`).
_SUBMODULES = ("sparsity",)
# Modules that need TensorFlow (and TFP or LiteRT): never imported eagerly.
_TENSORFLOW_ONLY = ("distribution", "export", "deploy")
# Modules that need an optional extra: never imported eagerly.
_OPTIONAL = ("plots",)


def _load(name):
    module_name = _WHERE[name]
    if module_name in _TENSORFLOW_ONLY:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ImportError(
                f"keras_heavytail.{name} needs the TensorFlow backend "
                f"(KERAS_BACKEND=tensorflow and `pip install "
                f"'keras-heavytail[tensorflow]'`). Received: backend="
                f"{keras.backend.backend()!r}"
            )
    module = importlib.import_module(f"keras_heavytail.{module_name}")
    return getattr(module, name)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_heavytail.{name}")
    if name in _WHERE:
        value = _load(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_heavytail' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | set(_SUBMODULES))


if TYPE_CHECKING:  # the public API, one name per line, for readers and IDEs
    from keras_heavytail import sparsity
    from keras_heavytail.channels import channel_groups
    from keras_heavytail.compressibility import best_k_error
    from keras_heavytail.compressibility import compressibility_report
    from keras_heavytail.compressibility import neuron_norms
    from keras_heavytail.compressibility import neuron_prune_ratio
    from keras_heavytail.compressibility import tail_index
    from keras_heavytail.datasets import load_dataset
    from keras_heavytail.deploy import export_variants
    from keras_heavytail.distribution import SymmetricStable
    from keras_heavytail.experiments import run_protocol
    from keras_heavytail.export import benchmark_tflite
    from keras_heavytail.export import evaluate_tflite
    from keras_heavytail.export import export_tflite
    from keras_heavytail.export import model_card
    from keras_heavytail.export import predict_tflite
    from keras_heavytail.noise import positive_stable
    from keras_heavytail.noise import stable_noise
    from keras_heavytail.noise import symmetric_stable
    from keras_heavytail.noise_update import paper_exclusions
    from keras_heavytail.optimizers import HeavyTailNoise
    from keras_heavytail.optimizers import HeavyTailSGD
    from keras_heavytail.plots import plot_norm_tails
    from keras_heavytail.plots import plot_pruning_curves
    from keras_heavytail.protocol import Protocol
    from keras_heavytail.protocol import Setting
    from keras_heavytail.protocol import build_model
    from keras_heavytail.pruning import iso_accuracy_ratio
    from keras_heavytail.pruning import neuron_scores
    from keras_heavytail.pruning import prune
    from keras_heavytail.pruning import pruning_curve
    from keras_heavytail.shrinking import shrink
    from keras_heavytail.training import StopAtTrainAccuracy
elif os.environ.get("KERAS_HEAVYTAIL_LAZY") != "1":
    # The backend-neutral core, loaded now so its Keras objects are registered.
    for _name, _module in _WHERE.items():
        if _module not in _TENSORFLOW_ONLY + _OPTIONAL:
            globals()[_name] = _load(_name)
    del _name, _module
    for _module in _SUBMODULES:  # backend-neutral: registers its Keras objects
        importlib.import_module(f"keras_heavytail.{_module}")
    del _module

__all__ = [
    "HeavyTailNoise",
    "HeavyTailSGD",
    "Protocol",
    "Setting",
    "StopAtTrainAccuracy",
    "SymmetricStable",
    "benchmark_tflite",
    "best_k_error",
    "build_model",
    "channel_groups",
    "compressibility_report",
    "evaluate_tflite",
    "export_tflite",
    "export_variants",
    "iso_accuracy_ratio",
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
    "sparsity",
    "stable_noise",
    "symmetric_stable",
    "tail_index",
]
