"""Structured pruning by channel groups: scores, masks, zeroing.

The graph side of `prune(..., structure="neuron")`: a channel component of
`channels.channel_graph` (every layer slice that must lose the same
channel) is scored as the sum of its producers' unit scores and pruned
whole, so residual additions, concatenations and depthwise layers stay
consistent. On a chain every group is one layer and this is the paper's
per-unit pruning.
"""

import numpy as np

from keras_heavytail import channels
from keras_heavytail import defaults
from keras_heavytail.graph import slot_sums
from keras_heavytail.topology import as_array


def group_scores(graph, score="norm"):
    """One score per channel component of a `channels.ChannelGraph`.

    The sum over the component's producing layers of each unit's score:
    the l2 norm of its incoming weights (`"norm"`), or that norm times the
    l2 norm of the component's outgoing weights in every consumer
    (`"path"`). On a chain this is `neuron_scores` of each unit.

    Args:
        graph: a `ChannelGraph` (from `channels.channel_graph`).
        score: `"norm"` or `"path"`. Defaults to `"norm"`.

    Returns:
        A float64 array indexed by component id.
    """
    if score not in defaults.PRUNE_SCORES:
        raise ValueError(
            f"`score` must be one of {defaults.PRUNE_SCORES}. Received: score={score!r}"
        )
    count = graph.frozen.size
    outgoing = np.zeros(count)
    for member in graph.members:
        if member.role == "in" and score == "path":
            for variable, axis, slots, _ in member.weights:
                sums = slot_sums(as_array(variable), axis, slots, member.nodes.size)
                np.add.at(outgoing, graph.component[member.nodes], sums)
    scores = np.zeros(count)
    for member in graph.members:
        if member.role != "out":
            continue
        sums = sum(
            slot_sums(as_array(variable), axis, slots, member.nodes.size)
            for variable, axis, slots, kind in member.weights
            if kind == "kernel"
        )
        components = graph.component[member.nodes]
        unit = np.sqrt(sums)
        if score == "path":
            unit = unit * np.sqrt(outgoing[components])
        np.add.at(scores, components, unit)
    return scores


def group_masks(model, ratio, scope="layer", exclude=None, score="norm"):
    """Unit masks `{producer name: kept}` that prune coupled channels together.

    Each prunable group (`channels.channel_groups`) loses `ratio` of its
    channels (`scope="layer"`), or all groups' channels are ranked together
    (`"global"`); a channel's score is `group_scores`'.

    Args:
        model: a Keras 3 model (not modified).
        ratio: fraction in [0, 1] of channels to prune.
        scope: `"layer"` (per group) or `"global"`. Defaults to `"layer"`.
        exclude: producer names whose units stay. Defaults to `None`.
        score: `"norm"` or `"path"`. Defaults to `"norm"`.

    Returns:
        A dict of boolean arrays, one per unit of each producer.
    """
    graph = channels.channel_graph(model, exclude, values=False)
    groups = [group for group in graph.groups if group.prunable]
    if not groups:
        raise ValueError(
            f"Model {model.name!r} has no prunable channel group: "
            f"{[repr(g) for g in graph.groups]}"
        )
    scores = group_scores(graph, score)
    dropped = np.zeros(scores.size, dtype=bool)
    if scope == "layer":
        for group in groups:
            s = scores[group.components]
            dropped[group.components] = lowest(s, int(round(ratio * s.size)))
    else:
        pooled = np.concatenate([group.components for group in groups])
        dropped[pooled] = lowest(scores[pooled], int(round(ratio * pooled.size)))
    masks = {}
    for member in graph.members:
        components = graph.component[member.nodes]
        if member.role == "out" and not graph.frozen[components].all():
            masks[member.layer.name] = ~dropped[components]
    return masks


def lowest(scores, count):
    """Boolean mask of the `count` lowest scores (stable order on ties)."""
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(scores, kind="stable")[:count]] = True
    return mask


def zero_slots(member, kept, kinds):
    """Multiplies `member`'s weights of the given kinds by the kept slots."""
    for variable, axis, slots, kind in member.weights:
        if kind in kinds:
            shape = [1] * len(variable.shape)
            shape[axis] = -1
            mask = kept[slots].reshape(shape)
            variable.assign(as_array(variable) * mask)


def zero_units(model, units):
    """Zeroes, in place, the units `{producer name: kept}` drop, and the
    per-channel weights of every component that all its producers drop."""
    graph = channels.channel_graph(model, values=False)
    gone = np.ones(graph.frozen.size, dtype=bool)  # every producer drops it
    produced = np.zeros(graph.frozen.size, dtype=bool)
    for member in graph.members:
        if member.role != "out":
            continue
        mask = units.get(member.layer.name, np.ones(member.nodes.size, dtype=bool))
        if member.layer.name in units:
            zero_slots(member, mask, ("kernel", "bias"))
        np.logical_and.at(gone, graph.component[member.nodes], ~mask)
        np.logical_or.at(produced, graph.component[member.nodes], True)
    gone &= produced
    for member in graph.members:
        if member.role == "channel":
            kept = ~gone[graph.component[member.nodes]]
            zero_slots(member, kept, ("kernel", "bias", "scale"))
    return model
