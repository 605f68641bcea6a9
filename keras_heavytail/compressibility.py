"""Numbers about weights and outputs: tail indices, best-k errors, the criterion.

Numpy in, numbers out. Kernels follow Keras' layout: the last axis indexes
output units (neurons, or filters of a convolution), the other axes hold each
unit's incoming weights.
"""

import json
import math

import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail.arrays import as_array
from keras_heavytail.pruning.graph import ModelGraph
from keras_heavytail.pruning.graph import unit_axes


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
    return float(np.median(estimates))


def tail_index(x, method="mmo2014", tail_fraction=0.05, seed=0, center=True, cap=True):
    """Estimates the tail index alpha of a (roughly symmetric) sample.

    `"mmo2014"` is the block-sum estimator of Mohammadi, Mohammadpour & Ogata
    (2015), used for network weights by Barsbey et al. (2021): for blocks of
    `m` entries,

    ```python
    1 / alpha = (mean(log|sum of a block|) - mean(log|x|)) / log(m)
    ```

    taken as the median over block sizes `m` = 2, 4, 8, ... up to sqrt(n),
    and capped at 2 (a stable law has alpha <= 2; larger values mean
    "Gaussian or lighter"). As in the paper's reference code, the sample is
    centred on its median first; entries are then shuffled with `seed`, so
    the layout of a kernel does not bias the blocks. `"hill"` is Hill's (1975)
    estimator on the largest `tail_fraction` of |x|; it is not capped.

    Args:
        x: array of any shape; all entries are used. Defaults to none; required.
        method: `"mmo2014"` or `"hill"`. Defaults to `"mmo2014"`.
        tail_fraction: fraction of order statistics used by `"hill"`.
            Defaults to `0.05`.
        seed: seed of the shuffle before blocking. Defaults to `0`.
        center: subtract the median before `"mmo2014"`. Defaults to `True`.
        cap: cap the `"mmo2014"` estimate at 2. Defaults to `True`.

    Returns:
        A float. A constant sample (all zeros, say) raises a ValueError: it
        has no tail.

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
    if np.all(x == x[0]):
        raise ValueError(
            f"A constant sample has no tail index. Received: {x.size} entries "
            f"all equal to {x[0]}"
        )
    if method == "mmo2014":
        if x.size < 16:
            raise ValueError(f"`x` needs at least 16 entries. Received: {x.size}")
        if center:
            x = x - np.median(x)
        x = np.random.default_rng(seed).permutation(x)
        top = max(2, int(math.log2(math.sqrt(x.size))))
        estimate = _mmo2014(x, [2**k for k in range(1, top + 1)])
        return min(estimate, 2.0) if cap else estimate
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


def best_k_error(w, keep, p=2):
    """Relative l_p error of keeping only the largest-magnitude entries.

    ```python
    k = round(keep * w.size)
    error = ||w - w_k||_p / ||w||_p    # w_k: w with all but its k largest |entries| zeroed
    ```

    Args:
        w: array of any shape. Defaults to none; required.
        keep: fraction of entries kept, in [0, 1]. Defaults to none; required.
        p: the norm, >= 1 (`math.inf`: the largest dropped magnitude over
            the largest). Defaults to `2`.

    Returns:
        A float in [0, 1]; small means compressible.
    """
    w = _flat(w, "w")
    keep = checks.check_fraction(keep, "keep")
    if not checks.is_real(p) or math.isnan(p) or p < 1:
        raise ValueError(f"`p` must be a number >= 1 (or math.inf). Received: p={p!r}")
    mags = np.sort(np.abs(w))  # ascending: the dropped entries come first
    dropped = w.size - int(round(keep * w.size))
    if math.isinf(p):
        return float(mags[dropped - 1] / mags[-1]) if dropped and mags[-1] > 0 else 0.0
    total = np.sum(mags**p)
    if total == 0:
        return 0.0
    return float((np.sum(mags[:dropped] ** p) / total) ** (1.0 / p))


def neuron_norms(kernel):
    """l2 norm of each output unit's incoming weights (all axes but the last)."""
    kernel = as_array(kernel, "float64")
    if kernel.ndim < 2:
        raise ValueError(
            f"`kernel` must have 2 or more axes. Received: shape={kernel.shape}"
        )
    if kernel.shape[-1] == 0:
        raise ValueError(
            f"`kernel` must have at least one unit. Received: shape={kernel.shape}"
        )
    return np.sqrt(np.sum(kernel**2, axis=tuple(range(kernel.ndim - 1))))


def prunable_neuron_count(kernel, max_rel_sq_error=defaults.MAX_REL_SQ_ERROR, power=2):
    """How many units the criterion prunes (see `neuron_prune_ratio`)."""
    checks.check_fraction(max_rel_sq_error, "max_rel_sq_error")
    if power not in (1, 2):
        raise ValueError(f"`power` must be 1 or 2. Received: power={power!r}")
    mass = np.sort(neuron_norms(kernel) ** power)
    total = mass.sum()
    if total == 0:
        return mass.size
    return int(np.sum(np.cumsum(mass) <= max_rel_sq_error * total))


def neuron_prune_ratio(kernel, max_rel_sq_error=defaults.MAX_REL_SQ_ERROR, power=2):
    """The paper's criterion: the share of units prunable within an error budget.

    Units are sorted by the l2 norm of their incoming weights; the most units
    are pruned whose summed squared norms stay within `max_rel_sq_error` of
    the kernel's squared Frobenius norm (Wan et al., 2024, reference code):

    ```python
    pruned = max k such that sum(sorted(norms**power)[:k]) <= eps * sum(norms**power)
    ```

    `power=1` is the L1 version: removing ReLU units changes a network's
    output roughly in proportion to the removed norms themselves, and for a
    tail index in (1, 2) the squared mass sits in a few large units while the
    plain mass stays spread over the bulk, so the two can disagree.

    Args:
        kernel: array whose last axis indexes units. Defaults to none; required.
        max_rel_sq_error: the budget `eps` in [0, 1].
            Defaults to `defaults.MAX_REL_SQ_ERROR`.
        power: 2 (the paper's squared norms) or 1 (plain norms).
            Defaults to `2`.

    Returns:
        A float in [0, 1]: pruned units / all units.

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    count = prunable_neuron_count(kernel, max_rel_sq_error, power)
    return count / as_array(kernel).shape[-1]


KEEPS = (0.5, 0.2, 0.1)

# What each column of a report means, for tables and report.md.
# Which way each measurement reads, for the table's legend.
MORE_COMPRESSIBLE = (
    "More compressible: lower tail_index and best_k_error, higher "
    "neuron_prune_ratio and parameter_prune_ratio. tail_index is capped at 2: "
    "2.000 means Gaussian or lighter tails (no heavy tail to exploit)."
)

COLUMN_HELP = {
    "layer": "the layer's name; `(model)` pools every kernel",
    "shape": "the kernel's shape as Keras stores it: units last (inputs ... x "
    "units), except a transposed convolution's (... x units x inputs); none for "
    "`(model)`",
    "parameters": "kernel entries (biases left out)",
    "tail_index": "tail index alpha of the kernel entries (block-sum estimator, "
    "median-centred): 2 is Gaussian, lower is heavier-tailed",
    "neuron_tail_index": "Hill's tail index of the units' incoming-weight norms "
    "(top 10%; empty under 20 units, and for `(model)`: layers' norms are on "
    "different scales): large (10-30) means the norms are nearly equal, 1-3 "
    "means a few units dominate",
    "best_k_error@0.5": "relative l2 error of keeping the largest 50% of entries",
    "best_k_error@0.2": "the same keeping 20%",
    "best_k_error@0.1": "the same keeping 10%",
    "neuron_prune_ratio": "the paper's criterion: share of units whose squared "
    "norms sum to at most max_rel_sq_error of the layer's",
    "neuron_prune_ratio_l1": "the same with plain norms (the L1 version): "
    "closer to what pruning does to a ReLU network's output",
    "parameter_prune_ratio": "share of kernel entries the paper's criterion "
    "removes (each pruned unit's incoming weights)",
}


def _estimate(function, *args):
    """`function(*args)`, or NaN where the sample has no estimate.

    A 90%-pruned kernel or a layer of a few units has too few nonzero or too
    few entries for an estimator; the report says so with an empty cell
    instead of failing.
    """
    try:
        return function(*args)
    except ValueError:
        return float("nan")


def _norm_tail_index(norms):
    """Hill's estimate on the top 10% of neuron norms (NaN under 20 units).

    Norms are positive, so the symmetric block-sum estimator does not apply;
    Hill's does. Large values mean light tails.
    """
    if norms.size < 20:
        return float("nan")
    return _estimate(tail_index, norms, "hill", 0.1)


def _numbers(kernels, max_rel_sq_error):
    """The row's numbers for one kernel, or pooled over several."""
    entries = np.concatenate([k.ravel() for k in kernels])
    norms = np.concatenate([neuron_norms(k) for k in kernels])
    pruned = [prunable_neuron_count(k, max_rel_sq_error) for k in kernels]
    pruned_l1 = [prunable_neuron_count(k, max_rel_sq_error, power=1) for k in kernels]
    row = {
        "parameters": int(entries.size),
        # A pruned kernel's zeros are not draws of its distribution: past half
        # of them zero, the estimate would measure the pruning, so it is skipped.
        "tail_index": (
            float("nan") if np.mean(entries == 0) > 0.5 else _estimate(tail_index, entries)
        ),
        "neuron_tail_index": _norm_tail_index(norms),
    }
    for keep in KEEPS:
        row[f"best_k_error@{keep:g}"] = best_k_error(entries, keep)
    row["neurons"] = int(norms.size)
    row["neuron_prune_ratio"] = sum(pruned) / norms.size
    row["neuron_prune_ratio_l1"] = sum(pruned_l1) / norms.size
    fan_ins = [k.size // k.shape[-1] for k in kernels]
    removed = sum(count * fan_in for count, fan_in in zip(pruned, fan_ins))
    row["parameter_prune_ratio"] = removed / entries.size
    return row


def kernel_row(name, kernel, max_rel_sq_error=defaults.MAX_REL_SQ_ERROR):
    """One report row of numbers about one kernel."""
    kernel = as_array(kernel, "float64")
    return {
        "layer": name,
        "shape": list(kernel.shape),
        **_numbers([kernel], max_rel_sq_error),
    }


def _json_value(value):
    """NaN and inf are not JSON: they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class CompressibilityReport:
    """Rows of numbers per prunable layer, plus a whole-model row.

    `str(report)` is an aligned table (`report.table()`) and which direction
    is more compressible, `report.legend()` what each column means,
    `report.to_json()` a JSON string (an estimate that does not exist is
    `null`), `report.rows` a list of dicts.
    """

    COLUMNS = (
        ["layer", "shape", "parameters", "tail_index", "neuron_tail_index"]
        + [f"best_k_error@{keep:g}" for keep in KEEPS]
        + ["neuron_prune_ratio", "neuron_prune_ratio_l1", "parameter_prune_ratio"]
    )

    def __init__(self, rows, max_rel_sq_error):
        self.rows = rows
        self.max_rel_sq_error = max_rel_sq_error

    def to_dict(self):
        rows = [{k: _json_value(v) for k, v in row.items()} for row in self.rows]
        return {"max_rel_sq_error": self.max_rel_sq_error, "rows": rows}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    def __getitem__(self, layer):
        for row in self.rows:
            if row["layer"] == layer:
                return row
        raise KeyError(layer)

    def __str__(self):
        return f"{self.table()}\n\n{MORE_COMPRESSIBLE}\n`report.legend()` defines each column."

    def legend(self):
        """What each column means, one line per column (`COLUMN_HELP`)."""
        return "\n".join(f"- {column}: {meaning}" for column, meaning in COLUMN_HELP.items())

    def table(self):
        """The rows as an aligned text table, one line per layer."""

        def fmt(value):
            if isinstance(value, float):
                return f"{value:.3f}" if math.isfinite(value) else "-"
            if isinstance(value, list):
                return "x".join(str(v) for v in value)
            return "-" if value is None else str(value)

        table = [list(self.COLUMNS)] + [
            [fmt(r[c]) for c in self.COLUMNS] for r in self.rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(self.COLUMNS))]
        lines = [
            "  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table
        ]
        return "\n".join(lines)


def units_last(layer, kernel):
    """`kernel` laid out as `(..., units)`: each output channel's weights in one column.

    A Dense or Conv kernel already is. A depthwise kernel `(*spatial, C, M)`
    has `C * M` output channels of `prod(spatial)` weights each; a
    transposed convolution's kernel `(*spatial, out, in)` has its output
    channels on the second-to-last axis (`pruning.graph.unit_axes`).
    """
    axes = unit_axes(layer).get("kernel", (-1,))
    if axes == (-1,):
        return kernel
    moved = np.moveaxis(kernel, axes, tuple(range(-len(axes), 0)))
    return moved.reshape(-1, math.prod(moved.shape[-len(axes):]))


def compressibility_report(model, max_rel_sq_error=defaults.MAX_REL_SQ_ERROR):
    """Compressibility numbers of every layer with a kernel, and of the model.

    Per layer: shape, parameters, tail index of the entries (`tail_index`,
    block-sum estimator) and of the neuron norms (Hill, top 10%), best-k
    relative l2 errors at keep = 0.5/0.2/0.1 (`best_k_error`), the
    paper-criterion prune ratio (`neuron_prune_ratio`), its L1 version and
    the share of parameters the criterion removes. The `"(model)"` row pools
    all entries (and all neuron norms) and gives the share of all units and
    parameters the per-layer criterion prunes. `COLUMN_HELP` defines every
    column. An estimate a layer has too few (nonzero) entries for is NaN.

    Args:
        model: a Keras model (Keras 3 or tf_keras). Defaults to none; required.
        max_rel_sq_error: the criterion's error budget.
            Defaults to `defaults.MAX_REL_SQ_ERROR`.

    Returns:
        A `CompressibilityReport`.
    """
    layers = ModelGraph(model).kernel_layers
    if not layers:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel to measure.")
    kernels = [units_last(layer, as_array(layer.kernel, "float64")) for layer in layers]
    for layer, kernel in zip(layers, kernels):
        if not np.all(np.isfinite(kernel)):
            raise ValueError(
                f"Layer {layer.name!r} has NaN or inf weights (the model diverged): "
                "its tails and prunable share cannot be measured. Train again with a "
                "lower learning rate or sigma."
            )
    rows = [
        {**kernel_row(layer.name, k, max_rel_sq_error), "shape": list(layer.kernel.shape)}
        for layer, k in zip(layers, kernels)
    ]
    whole = _numbers(kernels, max_rel_sq_error)
    # Norms of different layers are on different scales (a small classifier's
    # larger norms would read as the pooled tail): no pooled estimate.
    whole = {"layer": "(model)", "shape": None, **whole, "neuron_tail_index": float("nan")}
    return CompressibilityReport(rows + [whole], max_rel_sq_error)
