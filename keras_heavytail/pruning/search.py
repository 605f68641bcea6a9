"""The pruning that meets a cost: a bisection on the ratio, then on the groups.

`prune_to` finds the smallest pruning of a model whose MACs and parameters
(`count_macs`) stay under targets; `compress` calls it once per round. With
`round_to`, a uniform ratio can make every group jump at once, so `refine`
then gives the first `k` groups the larger ratio, with a bisection on `k`.
Bytes and latency, measured in LiteRT, are steered by parameters and MACs
(`proxy_kind`, `proxy_target`).
"""

import math

from keras_heavytail.pruning.graph import ModelGraph
from keras_heavytail.pruning.macs import count_macs
from keras_heavytail.pruning.macs import layer_macs
from keras_heavytail.pruning.macs import mac_kernels
from keras_heavytail.pruning.one_shot import copy_model
from keras_heavytail.pruning.one_shot import group_masks
from keras_heavytail.pruning.one_shot import prunable_groups
from keras_heavytail.pruning.shrinking import shrink
from keras_heavytail.pruning.shrinking import shrunk_shapes
from keras_heavytail.pruning.zeroing import apply_masks


def costs(model):
    """`(ModelCost, {"macs": ..., "params": ...})` of a model."""
    cost = count_macs(model)
    return cost, {"macs": cost.macs, "params": cost.params}


def proxy_kind(kind):
    """The counted cost that steers a measured one: params for bytes, MACs for latency."""
    return {"bytes": "params", "latency_ms": "macs"}.get(kind, kind)


class Workbench:
    """One working copy of a model and its graph, for many candidates.

    A search tries a dozen ratios on the same model: each candidate resets
    the copy to the model's weights and zeroes what `group_masks` drops,
    instead of cloning the model (and walking the clone) again. `cost`
    reads the candidate's MACs and parameters off the shapes its weights
    would have once shrunk (`shrunk_shapes`); only the winner is built
    (`candidate`).
    """

    def __init__(self, model):
        self.model = model
        self.weights = model.get_weights()
        self.copy = copy_model(model)
        self.graph = ModelGraph(self.copy)
        # A counted layer's MACs are its positions times its kernels' summed
        # size (`mac_kernels`); pruning channels leaves the positions alone.
        self.positions = []
        for layer in self.graph.layers:
            kernels = mac_kernels(layer)
            if kernels:
                size = sum(math.prod(k.shape) for k in kernels)
                self.positions.append((layer_macs(layer) // size, [id(k) for k in kernels]))

    def masked(self, ratio, options):
        """The working copy with `ratio` of the channels zeroed (`group_masks`)."""
        self.copy.set_weights(self.weights)
        return apply_masks(self.copy, group_masks(self.graph, ratio, **options), self.graph)

    def cost(self, ratio, options):
        """`{"macs": ..., "params": ...}` of `candidate(ratio, options)`, unbuilt."""
        self.masked(ratio, options)
        shapes = shrunk_shapes(self.graph)
        return {
            "macs": sum(p * sum(math.prod(shapes[k]) for k in ks) for p, ks in self.positions),
            "params": sum(math.prod(shape) for shape in shapes.values()),
        }

    def candidate(self, ratio, options):
        """A shrunk model with `ratio` of the channels pruned (`group_masks`)."""
        return shrink(self.masked(ratio, options))


def meets(cost, targets):
    """Whether every cost in `targets` is at or under its target."""
    return all(cost[kind] <= target for kind, target in targets.items())


def prune_to(model, targets, options, steps=8, close=0.98):
    """The smallest pruning of `model` (a bisection on the ratio) that meets
    `targets` (`{macs or params: absolute}`); `None` if none does. A
    candidate within `close` of every target (and under it) ends the search."""

    def near(cost):
        return all(cost[k] >= close * t for k, t in targets.items())

    bench = model if isinstance(model, Workbench) else Workbench(model)
    lo, hi, best, near_enough = 0.0, 1.0, None, False
    for _ in range(steps):
        mid = (lo + hi) / 2
        cost = bench.cost(mid, options)
        if meets(cost, targets):
            hi, best, near_enough = mid, mid, near(cost)
            if near_enough:
                break
        else:
            lo = mid
    if best is None:
        if not meets(bench.cost(1.0, options), targets):
            return None
        best = 1.0
    elif options["scope"] == "layer" and lo > 0 and not near_enough:
        best = refine(bench, targets, options, lo, hi, steps)
    return bench.candidate(best, options)


def refine(model, targets, options, lo, hi, steps):
    """Between a ratio that misses (`lo`) and one that meets (`hi`), rounding
    to `round_to` can make every group jump at once (on a small network, from
    0.6x to 0.2x the MACs): `k` groups take `hi` and the rest `lo`, the first
    `k` or the last `k` in graph order, each with a bisection on `k`; the
    ratios that meet the targets at the highest cost win."""
    bench = model if isinstance(model, Workbench) else Workbench(model)
    count = len(prunable_groups(bench.graph, options.get("exclude"))[1])
    found = [(hi, bench.cost(hi, options))]
    for first in (True, False):
        low, high = 0, count  # k = count is `hi`, which meets
        for _ in range(min(steps, max(count.bit_length(), 1))):
            if high - low <= 1:
                break
            k = (low + high) // 2
            ratios = [hi] * k + [lo] * (count - k)
            ratios = ratios if first else ratios[::-1]
            cost = bench.cost(ratios, options)
            if meets(cost, targets):
                high = k
                found.append((ratios, cost))
            else:
                low = k
    pick = max(found, key=lambda f: sum(f[1][k] / t for k, t in targets.items()))
    return pick[0]


def check_reachable(model, targets, options, asked=None):
    """Raises a ValueError if even the smallest pruning misses `targets`
    (`asked`: the budget's own targets, named in the message when they are
    steered through `targets`)."""
    # The smallest model does not depend on the ranking: no gradients needed.
    options = dict(options, score="magnitude", gradients=None)
    floor = Workbench(model).cost(1.0, options)
    if not meets(floor, targets):
        raise ValueError(
            f"The budget cannot be met: pruning every prunable channel group "
            f"down to min_channels={options['min_channels']} (round_to="
            f"{options['round_to']}) leaves {floor}, above the target "
            f"{ {k: round(v, 1) for k, v in targets.items()} }"
            + (f" that steers the budget's { {k: round(v, 1) for k, v in asked.items()} }"
               if asked and asked.keys() != targets.keys() else "")
            + " (bytes and latency are steered by parameters and MACs; a LiteRT file "
            "and its latency have a fixed part no pruning removes). The rest is in "
            "frozen groups (the model's inputs and outputs, excluded or "
            "unknown layers: see `channel_groups`). Lower min_channels or "
            "round_to, or ask for less."
        )


def proxy_target(kind, target, dense, now):
    """The proxy cost (parameters for bytes, MACs for latency) that should
    bring `kind` to `target`: a line through the dense and the current model
    (a LiteRT file and its latency have a fixed part pruning cannot remove),
    or a proportional cut where the two points do not give a slope."""
    key = proxy_kind(kind)
    slope = (dense[kind] - now[kind]) / max(dense[key] - now[key], 1e-9)
    if slope > 0:
        return max(now[key] - (now[kind] - target) / slope * 1.05, 0.0)
    return now[key] * target / now[kind] * 0.97
