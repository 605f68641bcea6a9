"""Applying pruning masks: zeroing, in place, what a mask drops.

An entry mask zeroes kernel entries. A unit mask zeroes a producer's units
(incoming weights and biases) and, through the channel graph, every
per-channel weight on the way of a channel all its producers drop, so the
channel is exactly zero everywhere and `shrink` can remove it.
"""

import numpy as np

from keras_heavytail.arrays import as_array
from keras_heavytail.pruning import channels
from keras_heavytail.pruning.graph import model_graph
from keras_heavytail.pruning.graph import unit_axes


def apply_masks(model, masks, graph=None):
    """Zeroes, in place, what `masks` (from `pruning_masks`) says to drop.

    An entry mask has the kernel's shape. A unit mask drops units of a
    producer (Dense, Conv, ...): their incoming weights and biases; when
    every producer of a channel component drops it, the per-channel weights
    on its way (BatchNormalization scale and shift, depthwise kernels and
    biases) are zeroed too, so the channel is exactly zero everywhere and
    `shrink` can remove it.

    Args:
        model: the Keras 3 model to change.
        masks: `{layer name: kept-mask}`.
        graph: `model`'s `ModelGraph`, if the caller keeps one (the pruning
            callback does, to walk the model once). Defaults to `None`.

    Returns:
        `model`.
    """
    graph = graph if graph is not None else model_graph(model)
    by_name = {layer.name: layer for layer in graph.layers}
    units = {}
    for name, mask in masks.items():
        layer = by_name.get(name) or graph.model.get_layer(name)
        if channels.is_producer(layer) and np.ndim(mask) == 1:
            units[name] = np.asarray(mask, dtype=bool)
        else:  # an entry mask, or a unit mask of a kernel's last axis
            layer.kernel.assign(as_array(layer.kernel) * mask)
    if units:
        structure = graph.channels()
        zero_units(structure, units)
        seen = {member.layer.name for member in structure.members if member.role == "out"}
        for name in set(units) - seen:  # inside a nested model: no channel member
            _zero_own_units(by_name.get(name) or graph.model.get_layer(name), units[name])
    return model


def _zero_own_units(layer, kept):
    """Zeroes a producer's dropped units (incoming weights and bias) alone."""
    # A producer (Dense, Conv, transposed, SeparableConv): one kernel holds its units.
    attribute = "pointwise_kernel" if hasattr(layer, "pointwise_kernel") else "kernel"
    kernel = getattr(layer, attribute)
    (axis,) = unit_axes(layer)[attribute]
    shape = [1] * len(kernel.shape)
    shape[axis] = kept.size
    kernel.assign(as_array(kernel) * kept.reshape(shape))
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(as_array(layer.bias) * kept)


def _zero_slots(member, kept, kinds):
    """Multiplies `member`'s weights of the given kinds by the kept slots."""
    for variable, axis, slots, kind in member.weights:
        if kind in kinds:
            shape = [1] * len(variable.shape)
            shape[axis] = -1
            mask = kept[slots].reshape(shape)
            variable.assign(as_array(variable) * mask)


def zero_units(structure, units):
    """Zeroes, in place, the units `{producer name: kept}` drop, and the
    per-channel weights of every component that all its producers drop.

    Args:
        structure: the model's `ChannelGraph` (`ModelGraph.channels()`).
        units: `{producer name: kept-mask}`.
    """
    gone = np.ones(structure.frozen.size, dtype=bool)  # every producer drops it
    produced = np.zeros(structure.frozen.size, dtype=bool)
    for member in structure.members:
        if member.role != "out":
            continue
        mask = units.get(member.layer.name, np.ones(member.nodes.size, dtype=bool))
        if member.layer.name in units:
            _zero_slots(member, mask, ("kernel", "bias"))
        np.logical_and.at(gone, structure.component[member.nodes], ~mask)
        np.logical_or.at(produced, structure.component[member.nodes], True)
    gone &= produced
    for member in structure.members:
        if member.role == "channel":
            kept = ~gone[structure.component[member.nodes]]
            _zero_slots(member, kept, ("kernel", "bias", "scale"))
