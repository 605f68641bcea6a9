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
        from keras_heavytail import files

        files.save_figure(fig, path, dpi=120, bbox_inches="tight")
    return fig


def _axes(items, what, size=(6, 4)):
    """A new figure and its axes; `items` (what will be drawn) must not be empty."""
    if not items:
        raise ValueError(f"`{what}` must hold at least one item to plot.")
    return _pyplot().subplots(figsize=size)


def _labels(ax, x, y, title):
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)


def plot_pruning_curves(curves, path=None, title="Accuracy after one-shot pruning"):
    """Accuracy against pruned fraction, one line per model.

    Args:
        curves: `{label: rows}` with rows from `pruning_curve`.
        path: PNG file to write. Defaults to `None` (no file).
        title: Defaults to `"Accuracy after one-shot pruning"`.

    Returns:
        The matplotlib `Figure`.
    """
    fig, ax = _axes(curves, "curves")
    for label, rows in curves.items():
        ax.plot(
            [r["ratio"] for r in rows], [r["accuracy"] for r in rows], "o-", label=label
        )
    _labels(ax, "fraction pruned", "test accuracy", title)
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
    fig, ax = _axes(kernels, "kernels")
    for label, kernel in kernels.items():
        norms = np.sort(neuron_norms(kernel))
        ccdf = 1.0 - np.arange(norms.size) / norms.size
        ax.loglog(norms, ccdf, ".", markersize=3, label=label)
    _labels(ax, "neuron norm ||w_j||", "P(norm > x)", title)
    ax.grid(alpha=0.3, which="both")
    # Below the axes: a CCDF's points reach every corner but the upper right.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small",
              markerscale=3, frameon=False)  # fmt: skip
    return _save(fig, path)


def plot_sweep(rows, path=None, title="Neurons at iso-accuracy against sigma"):
    """Iso-accuracy neurons against sigma: one line per noise setting, SGD flat.

    Args:
        rows: `SweepResult.rows` (dicts with `protocol`, `width`, `setting`,
            `noise`, `alpha`, `sigma`, `anneal` and `(mean, std)` of
            `neurons_at_iso_accuracy`).
        path: PNG file to write. Defaults to `None` (no file).
        title: Defaults to `"Neurons at iso-accuracy against sigma"`.

    Returns:
        The matplotlib `Figure`.
    """
    fig, ax = _axes(rows, "rows", size=(7, 4.5))
    lines = {}
    for row in rows:
        group = f"{row['protocol']}, width {row['width']}"
        mean, spread = row["neurons_at_iso_accuracy"]
        if row["setting"] == "SGD":
            ax.axhline(mean, linestyle="--", color="gray")
            ax.annotate(f"SGD ({group})", (0.01, mean), xycoords=("axes fraction", "data"),
                        fontsize="small", color="gray")  # fmt: skip
            continue
        label = f"{row['noise']}, alpha={row['alpha']!r}"
        label += (", annealed" if row["anneal"] else "") + f" ({group})"
        lines.setdefault(label, []).append((row["sigma"], mean, spread))
    for label, points in lines.items():
        points.sort()
        ax.errorbar([p[0] for p in points], [p[1] for p in points],
                    yerr=[p[2] for p in points], marker="o", capsize=3, label=label)  # fmt: skip
    sigmas = [p[0] for points in lines.values() for p in points]
    if sigmas and min(sigmas) > 0:
        ax.set_xscale("log")  # sigma grids are geometric
    _labels(ax, "sigma", "hidden neurons at iso-accuracy (fewer is better)", title)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize="small")
    return _save(fig, path)
