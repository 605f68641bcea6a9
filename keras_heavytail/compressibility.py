"""Numbers about weights: tail indices, best-k errors and the paper's criterion.

Numpy in, numbers out. Kernels follow Keras' layout: the last axis indexes
output units (neurons, or filters of a convolution), the other axes hold each
unit's incoming weights.
"""

import json
import math

import numpy as np


def as_array(x, dtype=None):
    """A numpy copy of an array, tensor or (Keras 3 or tf_keras) variable."""
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _flat(x, name="x"):
    x = as_array(x, "float64").ravel()
    if x.size == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name} of size 0")
    if not np.isfinite(x).all():
        raise ValueError(
            f"`{name}` must be finite. Received: {x.size} values with NaN or inf"
        )
    return x


def _mmo2014(x, block_sizes):
    """1 / alpha = (mean log|block sums| - mean log|x|) / log(block size)."""
    eps = np.finfo("float64").tiny
    log_x = np.mean(np.log(np.abs(x) + eps))
    estimates = []
    for size in block_sizes:
        blocks = x[: (x.size // size) * size].reshape(-1, size).sum(axis=1)
        inv = (np.mean(np.log(np.abs(blocks) + eps)) - log_x) / math.log(size)
        estimates.append(1.0 / inv if inv > 0 else np.inf)
    return float(min(np.median(estimates), 2.0))


def tail_index(x, method="mmo2014", tail_fraction=0.05, seed=0):
    """Estimates the tail index alpha of a (roughly symmetric) sample.

    `"mmo2014"` is the block-sum estimator of Mohammadi, Mohammadpour & Ogata
    (2015), used for network weights by Barsbey et al. (2021): for blocks of
    `m` entries,

    ```python
    1 / alpha = (mean(log|sum of a block|) - mean(log|x|)) / log(m)
    ```

    taken as the median over block sizes `m` = 2, 4, 8, ... up to sqrt(n),
    and capped at 2 (a stable law has alpha <= 2; larger values mean
    "Gaussian or lighter"). Entries are shuffled with `seed` first, so the
    layout of a kernel does not bias the blocks. `"hill"` is Hill's (1975)
    estimator on the largest `tail_fraction` of |x|; it is not capped.

    Args:
        x: array of any shape; all entries are used. Defaults to none; required.
        method: `"mmo2014"` or `"hill"`. Defaults to `"mmo2014"`.
        tail_fraction: fraction of order statistics used by `"hill"`.
            Defaults to `0.05`.
        seed: seed of the shuffle before blocking. Defaults to `0`.

    Returns:
        A float.

    Example:

    >>> import scipy.stats
    >>> x = scipy.stats.levy_stable.rvs(1.5, 0, size=100000, random_state=0)
    >>> round(tail_index(x), 1)
    1.5

    References:
        - [Mohammadi, Mohammadpour & Ogata, 2015](https://doi.org/10.1007/s00184-014-0515-7)
        - [Barsbey et al., 2021](https://arxiv.org/abs/2108.00781)
        - [Hill, 1975](https://doi.org/10.1214/aos/1176343247)
    """
    x = _flat(x)
    if method == "mmo2014":
        if x.size < 16:
            raise ValueError(f"`x` needs at least 16 entries. Received: {x.size}")
        x = np.random.default_rng(seed).permutation(x)
        top = max(2, int(math.log2(math.sqrt(x.size))))
        return _mmo2014(x, [2**k for k in range(1, top + 1)])
    if method == "hill":
        if not 0 < tail_fraction < 1:
            raise ValueError(
                f"`tail_fraction` must be in (0, 1). Received: tail_fraction={tail_fraction}"
            )
        mags = np.sort(np.abs(x))[::-1]
        k = max(1, int(tail_fraction * x.size))
        if k >= x.size or mags[k] <= 0:
            raise ValueError("Too few nonzero entries for the Hill estimator.")
        return float(1.0 / np.mean(np.log(mags[:k] / mags[k])))
    raise ValueError(
        f"`method` must be 'mmo2014' or 'hill'. Received: method={method!r}"
    )


def _check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}"
        )
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value}")
    return float(value)


def best_k_error(w, keep, p=2):
    """Relative l_p error of keeping only the largest-magnitude entries.

    ```python
    k = round(keep * w.size)
    error = ||w - w_k||_p / ||w||_p    # w_k: w with all but its k largest |entries| zeroed
    ```

    Args:
        w: array of any shape. Defaults to none; required.
        keep: fraction of entries kept, in [0, 1]. Defaults to none; required.
        p: the norm, >= 1. Defaults to `2`.

    Returns:
        A float in [0, 1]; small means compressible.
    """
    w = _flat(w, "w")
    keep = _check_fraction(keep, "keep")
    if p < 1:
        raise ValueError(f"`p` must be >= 1. Received: p={p}")
    mags = np.sort(np.abs(w))  # ascending: the dropped entries come first
    total = np.sum(mags**p)
    if total == 0:
        return 0.0
    dropped = w.size - int(round(keep * w.size))
    return float((np.sum(mags[:dropped] ** p) / total) ** (1.0 / p))


def neuron_norms(kernel):
    """l2 norm of each output unit's incoming weights (all axes but the last)."""
    kernel = as_array(kernel, "float64")
    if kernel.ndim < 2:
        raise ValueError(
            f"`kernel` must have 2 or more axes. Received: shape={kernel.shape}"
        )
    return np.sqrt(np.sum(kernel**2, axis=tuple(range(kernel.ndim - 1))))


def prunable_neuron_count(kernel, max_rel_sq_error=0.1):
    """How many units the paper's criterion prunes (see `neuron_prune_ratio`)."""
    _check_fraction(max_rel_sq_error, "max_rel_sq_error")
    squared = np.sort(neuron_norms(kernel) ** 2)
    total = squared.sum()
    if total == 0:
        return squared.size
    return int(np.sum(np.cumsum(squared) <= max_rel_sq_error * total))


def neuron_prune_ratio(kernel, max_rel_sq_error=0.1):
    """The paper's criterion: the share of units prunable within a squared error.

    Units are sorted by the l2 norm of their incoming weights; the most units
    are pruned whose summed squared norms stay within `max_rel_sq_error` of
    the kernel's squared Frobenius norm (Wan et al., 2024, reference code).

    Args:
        kernel: array whose last axis indexes units. Defaults to none; required.
        max_rel_sq_error: in [0, 1]. Defaults to `0.1`.

    Returns:
        A float in [0, 1]: pruned units / all units.

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    count = prunable_neuron_count(kernel, max_rel_sq_error)
    return count / as_array(kernel).shape[-1]


def kernel_layers(model):
    """Layers of `model` with a kernel of 2 or more axes, in order."""
    layers = []
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "kernel"):
            layers.extend(kernel_layers(layer))
        elif (
            getattr(layer, "kernel", None) is not None and len(layer.kernel.shape) >= 2
        ):
            layers.append(layer)
    return layers


KEEPS = (0.5, 0.2, 0.1)


def _norm_tail_index(norms):
    """Hill's estimate on the top 10% of neuron norms (NaN under 20 units).

    Norms are positive, so the symmetric block-sum estimator does not apply;
    Hill's does. Large values mean light tails.
    """
    return tail_index(norms, "hill", 0.1) if norms.size >= 20 else float("nan")


def kernel_row(name, kernel, max_rel_sq_error=0.1):
    """One report row of numbers about one kernel."""
    kernel = as_array(kernel, "float64")
    norms = neuron_norms(kernel)
    row = {
        "layer": name,
        "shape": list(kernel.shape),
        "parameters": int(kernel.size),
        "tail_index": tail_index(kernel) if kernel.size >= 16 else float("nan"),
        "neuron_tail_index": _norm_tail_index(norms),
    }
    for keep in KEEPS:
        row[f"best_k_error@{keep:g}"] = best_k_error(kernel, keep)
    row["neurons"] = int(kernel.shape[-1])
    row["neuron_prune_ratio"] = neuron_prune_ratio(kernel, max_rel_sq_error)
    return row


class CompressibilityReport:
    """Rows of numbers per prunable layer, plus a whole-model row.

    `str(report)` is an aligned table, `report.to_json()` a JSON string and
    `report.rows` a list of dicts.
    """

    COLUMNS = (
        ["layer", "shape", "parameters", "tail_index", "neuron_tail_index"]
        + [f"best_k_error@{keep:g}" for keep in KEEPS]
        + ["neuron_prune_ratio"]
    )

    def __init__(self, rows, max_rel_sq_error):
        self.rows = rows
        self.max_rel_sq_error = max_rel_sq_error

    def to_dict(self):
        return {"max_rel_sq_error": self.max_rel_sq_error, "rows": self.rows}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def __getitem__(self, layer):
        for row in self.rows:
            if row["layer"] == layer:
                return row
        raise KeyError(layer)

    def __str__(self):
        def fmt(value):
            if isinstance(value, float):
                return f"{value:.3f}"
            if isinstance(value, list):
                return "x".join(str(v) for v in value)
            return str(value)

        table = [list(self.COLUMNS)] + [
            [fmt(r[c]) for c in self.COLUMNS] for r in self.rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(self.COLUMNS))]
        lines = [
            "  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table
        ]
        return "\n".join(lines)


def compressibility_report(model, max_rel_sq_error=0.1):
    """Compressibility numbers of every layer with a kernel, and of the model.

    Per layer: shape, parameters, tail index of the entries (`tail_index`,
    block-sum estimator) and of the neuron norms (Hill, top 10%), best-k relative l2 errors at keep = 0.5/0.2/0.1
    (`best_k_error`) and the paper-criterion prune ratio
    (`neuron_prune_ratio`). The `"(model)"` row pools all entries (and all
    neuron norms) and gives the share of all units the per-layer criterion
    prunes.

    Args:
        model: a Keras model (Keras 3 or tf_keras). Defaults to none; required.
        max_rel_sq_error: the criterion's error budget. Defaults to `0.1`.

    Returns:
        A `CompressibilityReport`.
    """
    layers = kernel_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel to measure.")
    kernels = [as_array(layer.kernel, "float64") for layer in layers]
    rows = [
        kernel_row(layer.name, k, max_rel_sq_error) for layer, k in zip(layers, kernels)
    ]
    entries = np.concatenate([k.ravel() for k in kernels])
    norms = np.concatenate([neuron_norms(k) for k in kernels])
    pruned = sum(prunable_neuron_count(k, max_rel_sq_error) for k in kernels)
    whole = {
        "layer": "(model)",
        "shape": [int(entries.size)],
        "parameters": int(entries.size),
        "tail_index": tail_index(entries),
        "neuron_tail_index": _norm_tail_index(norms),
    }
    for keep in KEEPS:
        whole[f"best_k_error@{keep:g}"] = best_k_error(entries, keep)
    whole["neurons"] = int(norms.size)
    whole["neuron_prune_ratio"] = pruned / norms.size
    return CompressibilityReport(rows + [whole], max_rel_sq_error)
