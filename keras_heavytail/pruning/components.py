"""The data of a channel dependency graph: nodes, components, members, groups.

`channels.channel_graph` walks a model and fills a `ChannelGraph`: one node
per channel a layer makes, joined (union-find) where layers tie channels
together; a component is what must be removed whole. Also `copy_layer`,
the one way `prune` and `shrink` copy a layer.
"""

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass(eq=False)
class Member:
    """One layer's slice of channels: `nodes[s]` is the node of slot `s`.

    `role` is `"out"` (units the layer produces), `"in"` (channels it
    consumes) or `"channel"` (per-channel weights it passes through).
    `weights` lists `(variable, axis, slots, kind)`: index `i` of `variable`
    along `axis` belongs to slot `slots[i]`; `kind` is `"kernel"`, `"bias"`,
    `"scale"` (zeroed when the channel is pruned) or `"stat"` (only removed).
    """

    layer: object
    role: str
    nodes: np.ndarray
    weights: list


@dataclasses.dataclass(eq=False)
class ChannelGroup:
    """Channels that the same layers produce, pruned by the same rule.

    `layers` produce the channels; `members` names every layer that holds a
    slice of them; `components` are the graph's component ids, one per
    channel that is removed whole; `frozen_by` says why the group cannot be
    pruned (empty if it can).
    """

    layers: tuple
    members: tuple
    components: np.ndarray
    frozen_by: tuple

    @property
    def prunable(self):
        return not self.frozen_by

    def __repr__(self):
        state = f"frozen by {', '.join(self.frozen_by)}" if self.frozen_by else "prunable"
        return f"ChannelGroup({list(self.layers)}, {self.components.size} channels, {state})"


def slot_sums(array, axis, slots, count, power=2):
    """Sum of `|array| ** power` over each slot's indices along `axis`."""
    moved = np.moveaxis(np.asarray(array, "float64"), axis, 0)
    per_index = np.sum(np.abs(moved.reshape(moved.shape[0], -1)) ** power, axis=1)
    return np.bincount(slots, weights=per_index, minlength=count)


class ChannelGraph:
    """The channel nodes of one model, their components, members and groups.

    Build it with `channel_graph`. After building: `component[node]` is the
    component id of a node, `frozen[c]` and `reasons[c]` say whether and why
    component `c` is frozen, `silent[c]` whether every producer reads its
    channels as exactly zero (as `prune` leaves them), `members` the layer
    slices, `tensors` `{key: (nodes, positions, zero)}` (keys from
    `channels.wiring`), `inputs_of` `{layer name: input keys}` and `layers`
    the visited layers in order.
    """

    def __init__(self, values=True):
        self.values = values
        self.parent = []
        self.zero = []
        self.node_reasons = {}
        self.members = []
        self.tensors = {}
        self.layers = []
        self.inputs_of = {}

    def new(self, count, reason=None):
        nodes = np.arange(len(self.parent), len(self.parent) + int(count))
        self.parent.extend(nodes.tolist())
        self.zero.extend([True] * nodes.size)
        if reason is not None:
            self.freeze(nodes, reason)
        return nodes

    def find(self, node):
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a, b):
        for x, y in zip(np.ravel(a), np.ravel(b)):
            rx, ry = self.find(int(x)), self.find(int(y))
            if rx != ry:
                self.parent[ry] = rx

    def freeze(self, nodes, reason):
        for node in np.ravel(nodes):
            self.node_reasons.setdefault(int(node), set()).add(reason)

    def see(self, nodes, zero):
        """Records whether a producer reads each node's channel as exactly zero.

        Channel-wise layers map channel `c` to channel `c` of the same
        component, so a component can go when every producer that reads it
        reads zeros (the model's outputs and unknown layers freeze theirs).
        """
        for node, z in zip(np.ravel(nodes), np.broadcast_to(zero, np.shape(nodes))):
            self.zero[node] = self.zero[node] and bool(z)

    def add(self, layer, role, nodes, weights):
        self.members.append(Member(layer, role, np.asarray(nodes), weights))

    def finish(self):
        roots = np.array([self.find(i) for i in range(len(self.parent))], dtype=int)
        _, self.component = np.unique(roots, return_inverse=True)
        count = int(self.component.max()) + 1 if self.component.size else 0
        self.reasons = [set() for _ in range(count)]
        for node, reasons in self.node_reasons.items():
            self.reasons[self.component[node]] |= reasons
        self.frozen = np.array([bool(r) for r in self.reasons], dtype=bool)
        self.silent = np.ones(count, dtype=bool)
        np.logical_and.at(self.silent, self.component, np.array(self.zero, dtype=bool))
        self.groups = _groups(self, count)
        return self


def _groups(graph, count):
    producers = [set() for _ in range(count)]
    holders = [set() for _ in range(count)]
    for member in graph.members:
        for c in np.unique(graph.component[member.nodes]):
            holders[c].add(member.layer.name)
            if member.role == "out":
                producers[c].add(member.layer.name)
    order = {layer.name: i for i, layer in enumerate(graph.layers)}
    by_key = {}
    for c in range(count):
        if not producers[c] and graph.frozen[c] and not holders[c]:
            continue  # channels no layer holds a slice of (input to output)
        key = (
            tuple(sorted(producers[c], key=order.get)),
            tuple(sorted(graph.reasons[c])),
        )
        by_key.setdefault(key, ([], set()))
        by_key[key][0].append(c)
        by_key[key][1].update(holders[c])
    return [
        ChannelGroup(
            layers=key[0],
            members=tuple(sorted(held, key=order.get)),
            components=np.array(comps),
            frozen_by=key[1] if key[1] else (() if key[0] else ("no producing layer",)),
        )
        for key, (comps, held) in by_key.items()
    ]


def copy_layer(layer, **overrides):
    """A new, unbuilt layer like `layer`, its config changed by `overrides`.

    A `Lambda` holding a Python lambda cannot go through its config in safe
    mode; it is copied from its function instead.

    Args:
        layer: a Keras 3 layer.
        **overrides: config entries to change (`units`, `filters`, ...).

    Returns:
        A new layer of the same type and name, without weights.
    """
    config = {**layer.get_config(), **overrides}
    try:
        return type(layer).from_config(config)
    except ValueError:
        if isinstance(layer, keras.layers.Lambda):
            return keras.layers.Lambda(layer.function, arguments=layer.arguments, name=layer.name)
        raise
