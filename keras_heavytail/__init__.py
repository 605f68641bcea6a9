"""keras-heavytail: heavy-tailed SGD and structural compression for Keras 3.

The library comes in wings, each a namespace a Keras user recognises:

- `keras_heavytail.optimizers`: `HeavyTailSGD`, `HeavyTailNoise(inner_optimizer)`,
  the alpha-stable samplers, the TFP distribution.
- `keras_heavytail.pruning`: the model graph (`ModelGraph`, built once),
  one-shot pruning, importance criteria, `shrink`, `count_macs`, `compress`
  and `sparsity` (pruning during training, shaped like `tfmot.sparsity.keras`).
- `keras_heavytail.compressibility`: weights in, numbers out.
- `keras_heavytail.export`: LiteRT export, the interpreter, model cards.
- `keras_heavytail.experiments`: the research harness (datasets, the paper's
  protocol, sweeps, reports, plots, the `keras-heavytail` command).
- `keras_heavytail.legacy`: the same for tf_keras models (tfmot), imported by
  name.

The names typed most are also here at the top. `import keras_heavytail`
loads Keras and the backend-neutral core, which runs on the TensorFlow, JAX
and PyTorch backends and registers its Keras objects, so `.keras` files that
hold them load; TensorFlow-only names (LiteRT export, `SymmetricStable`) load
on first use and say so on another backend. With the environment variable
`KERAS_HEAVYTAIL_LAZY=1` even the core loads on first use (the command line
uses this so `--help` imports no Keras).

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import importlib
import os
import sys
import warnings
from typing import TYPE_CHECKING

from keras_heavytail import lazy

__version__ = "0.4.0"

# The short public API: name -> the module that defines it.
_WHERE = {
    "Budget": "pruning.budget",
    "HeavyTailNoise": "optimizers.heavy_tail",
    "HeavyTailSGD": "optimizers.heavy_tail",
    "ModelGraph": "pruning.graph",
    "benchmark_tflite": "export.litert",
    "channel_groups": "pruning.graph",
    "compress": "pruning.compress",
    "compressibility_report": "compressibility",
    "count_macs": "pruning.macs",
    "evaluate_tflite": "export.litert",
    "export_tflite": "export.litert",
    "paper_exclusions": "optimizers.exclusions",
    "prune": "pruning.one_shot",
    "shrink": "pruning.shrinking",
    "tail_index": "compressibility",
}
_WINGS = (
    "compressibility",
    "experiments",
    "export",
    "legacy",
    "metrics",
    "optimizers",
    "pruning",
    "sparsity",
)
_TENSORFLOW_ONLY = ("export.litert",)
# Release 0.2's flat names, kept one release with a DeprecationWarning.
_MOVED_NAMES = {
    "Protocol": "experiments",
    "Setting": "experiments",
    "StopAtTrainAccuracy": "experiments",
    "SymmetricStable": "optimizers",
    "best_k_error": "compressibility",
    "build_model": "experiments",
    "export_variants": "export",
    "iso_accuracy_ratio": "experiments",
    "load_dataset": "experiments",
    "model_card": "export",
    "neuron_norms": "compressibility",
    "neuron_prune_ratio": "compressibility",
    "neuron_scores": "pruning",
    "plot_norm_tails": "experiments",
    "plot_pruning_curves": "experiments",
    "positive_stable": "optimizers",
    "predict_tflite": "export",
    "pruning_curve": "experiments",
    "run_protocol": "experiments",
    "stable_noise": "optimizers",
    "symmetric_stable": "optimizers",
}
# Release 0.2's module paths -> their new homes (one release, with a warning).
lazy.alias_modules(
    {
        f"keras_heavytail.{old}": f"keras_heavytail.{new}"
        for old, new in {
            "channels": "pruning.channels",
            "cli": "experiments.cli",
            "datasets": "experiments.datasets",
            "deploy": "export.deploy",
            "distribution": "optimizers.distribution",
            "graph": "pruning.components",
            "group_pruning": "pruning.importance",
            "noise": "optimizers.noise",
            "noise_update": "optimizers.noise_update",
            "plots": "experiments.plots",
            "protocol": "experiments.protocol",
            "report": "experiments.report",
            "shrinking": "pruning.shrinking",
            "sweep": "experiments.sweep",
            "topology": "pruning.graph",
            "training": "experiments.training",
        }.items()
    }
)

# The tfmot-shaped import `from keras_heavytail import sparsity`, for good.
lazy.alias_modules(
    {"keras_heavytail.sparsity": "keras_heavytail.pruning.sparsity"}, warn=False
)

_getattr, __dir__ = lazy.attach(
    __name__, _WHERE, submodules=_WINGS, tensorflow_only=_TENSORFLOW_ONLY
)


def __getattr__(name):
    if name in _MOVED_NAMES:
        wing = _MOVED_NAMES[name]
        warnings.warn(
            f"`keras_heavytail.{name}` moved to `keras_heavytail.{wing}.{name}` "
            "in keras-heavytail 0.3; the flat alias goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f"keras_heavytail.{wing}"), name)
    return _getattr(name)


# `python -m keras_heavytail` imports this package before `__main__` runs:
# load lazily then too, as the console command does, so `--help` is quick.
_argv = getattr(sys, "orig_argv", [])
_RUN_AS_COMMAND = any(
    a == "-m" and b == __name__ for a, b in zip(_argv, _argv[1:])
)
if _RUN_AS_COMMAND:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
del _argv

if TYPE_CHECKING:  # the public API, one name per line, for readers and IDEs
    from keras_heavytail import compressibility
    from keras_heavytail import experiments
    from keras_heavytail import export
    from keras_heavytail import optimizers
    from keras_heavytail import pruning
    from keras_heavytail import sparsity
    from keras_heavytail.compressibility import compressibility_report
    from keras_heavytail.compressibility import tail_index
    from keras_heavytail.export.litert import benchmark_tflite
    from keras_heavytail.export.litert import evaluate_tflite
    from keras_heavytail.export.litert import export_tflite
    from keras_heavytail.optimizers.exclusions import paper_exclusions
    from keras_heavytail.optimizers.heavy_tail import HeavyTailNoise
    from keras_heavytail.optimizers.heavy_tail import HeavyTailSGD
    from keras_heavytail.pruning.budget import Budget
    from keras_heavytail.pruning.compress import compress
    from keras_heavytail.pruning.graph import ModelGraph
    from keras_heavytail.pruning.graph import channel_groups
    from keras_heavytail.pruning.macs import count_macs
    from keras_heavytail.pruning.one_shot import prune
    from keras_heavytail.pruning.shrinking import shrink
elif os.environ.get("KERAS_HEAVYTAIL_LAZY") != "1" and not _RUN_AS_COMMAND:
    # TensorFlow 2.21 prints its C++ start-up lines (oneDNN, CUDA) when
    # imported whatever TF_CPP_MIN_LOG_LEVEL says, and one more (cuInit) when
    # it first looks for devices: Keras (and with it the backend) is imported,
    # and TensorFlow's devices listed, with stderr captured. A program that
    # imports keras first sees the import's lines.
    from keras_heavytail.files import quiet_import

    def _find_devices(keras):
        if keras.backend.backend() == "tensorflow" and "tensorflow" in sys.modules:
            sys.modules["tensorflow"].config.list_physical_devices()

    quiet_import("keras", then=_find_devices)
    del quiet_import, _find_devices
    # The backend-neutral core, loaded now so its Keras objects are registered.
    for _name, _module in _WHERE.items():
        if _module not in _TENSORFLOW_ONLY:
            globals()[_name] = _getattr(_name)
    from keras_heavytail import sparsity  # noqa: E402  registers its objects

    del _name, _module

__all__ = [
    "Budget",
    "HeavyTailNoise",
    "HeavyTailSGD",
    "ModelGraph",
    "benchmark_tflite",
    "channel_groups",
    "compress",
    "compressibility",
    "compressibility_report",
    "count_macs",
    "evaluate_tflite",
    "experiments",
    "export",
    "export_tflite",
    "optimizers",
    "paper_exclusions",
    "prune",
    "pruning",
    "shrink",
    "sparsity",
    "tail_index",
]
