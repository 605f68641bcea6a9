"""The research harness: the paper's protocol, datasets, sweeps, reports, the CLI.

Not part of the library a pipeline imports: it trains, measures and reports
with the wings (`optimizers`, `pruning`, `compressibility`, `export`), and no
wing imports it back.

- `load_dataset`: digits (embedded), teacher-student, MNIST, Fashion-MNIST,
  CIFAR-10 from local files.
- `Protocol`, `Setting`, `build_model`: the paper's experiment, as data.
- `run_protocol`, `iso_accuracy_ratio`, `pruning_curve`: train and measure.
- `run_sweep`, `write_report`, the plots, and `cli.main` (`keras-heavytail`).
"""

from typing import TYPE_CHECKING

from keras_heavytail import lazy

_WHERE = {
    "Dataset": "datasets",
    "Grid": "sweep",
    "Protocol": "protocol",
    "ProtocolResult": "results",
    "Setting": "protocol",
    "StopAtTrainAccuracy": "training",
    "bisect_ratio": "iso_accuracy",
    "build_model": "protocol",
    "aggregate": "results",
    "iso_accuracy_ratio": "iso_accuracy",
    "load_dataset": "datasets",
    "measure": "runner",
    "plot_norm_tails": "plots",
    "plot_pruning_curves": "plots",
    "pruning_curve": "iso_accuracy",
    "run_protocol": "runner",
    "run_sweep": "sweep",
    "train_one": "training",
    "write_report": "report",
}
__getattr__, __dir__ = lazy.attach(
    __name__, _WHERE,
    submodules=("cli", "cli_io"),
)

if TYPE_CHECKING:
    from keras_heavytail.experiments.datasets import Dataset
    from keras_heavytail.experiments.datasets import load_dataset
    from keras_heavytail.experiments.iso_accuracy import bisect_ratio
    from keras_heavytail.experiments.iso_accuracy import iso_accuracy_ratio
    from keras_heavytail.experiments.iso_accuracy import pruning_curve
    from keras_heavytail.experiments.plots import plot_norm_tails
    from keras_heavytail.experiments.plots import plot_pruning_curves
    from keras_heavytail.experiments.protocol import Protocol
    from keras_heavytail.experiments.protocol import Setting
    from keras_heavytail.experiments.protocol import build_model
    from keras_heavytail.experiments.report import write_report
    from keras_heavytail.experiments.results import ProtocolResult
    from keras_heavytail.experiments.results import aggregate
    from keras_heavytail.experiments.runner import measure
    from keras_heavytail.experiments.runner import run_protocol
    from keras_heavytail.experiments.sweep import Grid
    from keras_heavytail.experiments.sweep import run_sweep
    from keras_heavytail.experiments.training import StopAtTrainAccuracy
    from keras_heavytail.experiments.training import train_one

__all__ = [
    "Dataset",
    "Grid",
    "Protocol",
    "ProtocolResult",
    "Setting",
    "StopAtTrainAccuracy",
    "bisect_ratio",
    "aggregate",
    "build_model",
    "iso_accuracy_ratio",
    "load_dataset",
    "measure",
    "plot_norm_tails",
    "plot_pruning_curves",
    "pruning_curve",
    "run_protocol",
    "run_sweep",
    "train_one",
    "write_report",
]
