"""Model cards: a JSON file beside each exported model, saying what it is.

A card holds where the model came from, how it was trained and exported,
its accuracy and latency measured in LiteRT, and the library versions that
made it, so a file found on a device can be traced back. `format_latency`
writes a latency as cards and tables show it.
"""

import json
import platform
from pathlib import Path

import numpy as np

from keras_heavytail import files


def library_versions():
    """Versions of the libraries that made a model, for its card."""
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in (
        "keras-heavytail",
        "keras",
        "tensorflow",
        "ai-edge-litert",
        "numpy",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def model_card(
    path,
    *,
    source,
    training=None,
    export=None,
    evaluation=None,
    benchmark=None,
    **extra,
):
    """Writes `<model>.json` next to a `.tflite` file; returns the card.

    Args:
        path: the `.tflite` file the card describes.
        source: where the model came from (a sentence or a file).
        training: training settings (alpha, sigma, noise, seed, ...).
        export: an `ExportReport` or its dict.
        evaluation: the output of `evaluate_tflite` (accuracy measured in LiteRT).
        benchmark: the output of `benchmark_tflite`.
        **extra: anything else worth keeping (neurons kept, pruning ...).

    Returns:
        The card as a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .tflite file at {str(path)!r} to describe.")
    if hasattr(export, "to_dict"):  # an ExportReport
        export = export.to_dict()
    card = {
        "model": path.name,
        "source": source,
        "bytes": path.stat().st_size,
        "training": training,
        "export": export,
        "litert_evaluation": evaluation,
        "litert_latency": benchmark,
        **extra,
        "versions": library_versions(),
    }
    files.write_text(
        path.with_suffix(".json"), json.dumps(card, indent=2, default=str) + "\n"
    )
    return card


def format_latency(ms):
    """A latency given in milliseconds, as text: 3 significant figures and a unit.

    Microseconds below 1 ms, milliseconds below 1 s, then seconds: 0.005379
    gives `"5.38 µs"`, 12.345 gives `"12.3 ms"`; `None` or NaN gives `"-"`.
    """
    if ms is None or np.ndim(ms) != 0 or not np.isfinite(ms) or ms < 0:
        return "-"  # nothing measured (a negative time is no measurement)
    ms = float(ms)
    if ms >= 1e6:
        return f"{ms / 1e3:.3g} s"
    for unit, value in (("µs", ms * 1e3), ("ms", ms), ("s", ms / 1e3)):
        value = float(f"{value:.3g}")  # 3 significant figures, then their decimals
        if value < 1000 or unit == "s":
            decimals = max(0, 2 - int(np.floor(np.log10(abs(value))))) if value else 2
            return f"{value:.{decimals}f} {unit}"
