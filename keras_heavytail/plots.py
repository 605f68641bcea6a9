"""Matplotlib figures: pruning curves and the tails of neuron norms.

matplotlib is optional (`pip install "keras-heavytail[plots]"`) and is
imported inside each function. Figures are drawn with the Agg backend, so
they work on machines without a screen, and saved as PNG when `path` is given.
"""

import numpy as np

from keras_heavytail.compressibility import neuron_norms


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Plots need matplotlib: pip install 'keras-heavytail[plots]'"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_pruning_curves(curves, path=None, title="Accuracy after one-shot pruning"):
    """Accuracy against pruned fraction, one line per model.

    Args:
        curves: `{label: rows}` with rows from `pruning_curve`.
        path: PNG file to write. Defaults to `None` (no file).
        title: Defaults to `"Accuracy after one-shot pruning"`.

    Returns:
        The matplotlib `Figure`.
    """
    if not curves:
        raise ValueError("`curves` must name at least one model's pruning curve.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in curves.items():
        ax.plot(
            [r["ratio"] for r in rows], [r["accuracy"] for r in rows], "o-", label=label
        )
    ax.set_xlabel("fraction pruned")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_norm_tails(kernels, path=None, title="Tail of neuron norms (log-log CCDF)"):
    """Complementary CDF of neuron norms on log-log axes, one line per kernel.

    A heavy (power-law) tail is a straight line whose slope is minus the
    tail index; a Gaussian-like tail bends down.

    Args:
        kernels: `{label: kernel array}` (last axis = units).
        path: PNG file to write. Defaults to `None` (no file).
        title: Defaults to `"Tail of neuron norms (log-log CCDF)"`.

    Returns:
        The matplotlib `Figure`.
    """
    if not kernels:
        raise ValueError("`kernels` must hold at least one kernel.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, kernel in kernels.items():
        norms = np.sort(neuron_norms(kernel))
        ccdf = 1.0 - np.arange(norms.size) / norms.size
        ax.loglog(norms, ccdf, ".", markersize=3, label=label)
    ax.set_xlabel("neuron norm ||w_j||")
    ax.set_ylabel("P(norm > x)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)
