"""`shrink`: turn a pruned Keras 3 model into a smaller dense one.

Removing pruned units is what makes a pruned model fast: sparse storage
shrinks the file, but runtimes densify the weights again. The channels to
remove, and every layer slice they touch, come from the channel dependency
graph (`ModelGraph.channels`), so residual additions, concatenations,
depthwise and separable convolutions shrink consistently.
"""

import keras
import numpy as np

from keras_heavytail.arrays import as_array
from keras_heavytail.pruning import channels
from keras_heavytail.pruning.components import copy_layer
from keras_heavytail.pruning.graph import model_graph


def kept_channels(graph):
    """Which channel components of `graph` stay after `shrink`.

    A component goes when it is not frozen and exactly zero in every tensor
    it appears in; every tensor keeps at least one channel.

    Args:
        graph: a `channels.ChannelGraph`.

    Returns:
        A boolean array indexed by component id.
    """
    keep = graph.frozen | ~graph.silent
    for nodes, _, _ in graph.tensors.values():
        components = graph.component[nodes]
        if components.size and not keep[components].any():
            keep[components[0]] = True
    return keep


def shrunk_shapes(model):
    """`{id(variable): shape}` of every weight as `shrink(model)` would leave it.

    The same channels go as in `shrink`, read off the same graph, but no
    layer is built: what a search needs to cost a dozen candidates.
    """
    walker = model_graph(model)
    graph = walker.channels(values=True)
    keep = kept_channels(graph)
    shapes = {id(w): list(w.shape) for w in walker.model.weights}
    for member in graph.members:
        kept = keep[graph.component[member.nodes]]
        for variable, axis, slots, _ in member.weights:
            shapes[id(variable)][axis] = int(kept[slots].sum())
    return {key: tuple(shape) for key, shape in shapes.items()}


def _new_weights(graph, keep):
    """`{layer name: (weights, kept units or None)}` with dropped slots removed."""
    out = {}
    for layer in graph.layers:
        out[layer.name] = ([as_array(w) for w in layer.weights], None)
    for member in graph.members:
        weights, units = out[member.layer.name]
        kept = keep[graph.component[member.nodes]]
        for variable, axis, slots, _ in member.weights:
            i = next(j for j, w in enumerate(member.layer.weights) if w is variable)
            weights[i] = np.compress(kept[slots], weights[i], axis=axis)
        if member.role == "out":
            units = int(kept.sum())
        out[member.layer.name] = (weights, units)
    return out


def _rebuilt(layer, graph, keep, units):
    """A new layer like `layer`, sized for the kept channels."""
    config = {}
    if units is not None:
        config[channels.units_key(layer)] = units
    if isinstance(layer, keras.layers.Reshape):
        nodes, _, _ = graph.tensors[graph.inputs_of[layer.name][0]]
        kept = int(keep[graph.component[nodes]].sum())
        target = tuple(layer.target_shape)
        if layer.output.shape[-1] == layer.input.shape[-1]:
            target = target[:-1] + (kept,)
        elif len(target) == 1:
            target = (int(np.prod(layer.input.shape[1:-1] or (1,))) * kept,)
        config["target_shape"] = target
    return copy_layer(layer, **config)


def _assemble(graph, new_layers):
    """The new layers wired as the model's layers are (Sequential for chains)."""
    model = graph.model
    # Shrunk again (compress's rounds): one suffix, not one per round.
    name = model.name if model.name.endswith("_shrunk") else f"{model.name}_shrunk"
    if graph.chain is not None:
        inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
        return keras.Sequential([inputs] + [new for _, new in new_layers], name=name)
    tensors = {
        id(t): keras.Input(shape=t.shape[1:], dtype=t.dtype) for t in model.inputs
    }
    for old, new in new_layers:
        if not all(id(t) in tensors for t in keras.tree.flatten(old.input)):
            raise ValueError(
                f"shrink cannot rewire layer {old.name!r} of model {model.name!r}: its "
                "input is not a tensor of the model (a model nested in a functional "
                "model). Call the nested model's layers on the outer tensors instead, "
                "or prune and shrink the nested model on its own."
            )
        args = keras.tree.map_structure(lambda t: tensors[id(t)], old.input)
        result = new(args)
        for a, b in zip(keras.tree.flatten(old.output), keras.tree.flatten(result)):
            tensors[id(a)] = b
    inputs = [tensors[id(t)] for t in model.inputs]
    outputs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=name,
    )


def shrink(model):
    """A smaller dense model without the channels that pruning switched off.

    A channel (Dense neuron, Conv filter, and every channel tied to it by
    the channel dependency graph: residual additions, concatenations,
    depthwise and BatchNormalization channels) that is exactly zero
    everywhere, as `prune(..., structure="neuron")` leaves it, is removed
    with its kernel slices, biases, BatchNormalization statistics and the
    matching input rows of every consumer. A unit whose output is not zero
    (a bias through a sigmoid) stays. Outputs equal the zero-masked
    model's; the parameter count drops with every channel. The model's
    input and output channels stay, every tensor keeps at least one
    channel, and a layer the graph does not know (`Lambda`, a custom layer)
    keeps the channels it touches (`channel_groups` names it) unless
    `register_layer` taught the graph its rule.

    Args:
        model: a Sequential or functional Keras 3 model (not modified), or
            its `ModelGraph`.

    Returns:
        A `keras.Sequential` for a chain of layers, else a functional
        `keras.Model`; both save and reload without custom objects (unless
        `model` holds custom layers).

    Example:

    >>> small = shrink(prune(model, 0.7, structure="neuron"))  # doctest: +SKIP
    """
    walker = model_graph(model)
    graph = walker.channels(values=True)  # which channels are zero now
    if not any(channels.is_producer(layer) for layer in graph.layers):
        raise ValueError(
            f"Model {walker.model.name!r} has no Dense or Conv layer to shrink."
        )
    keep = kept_channels(graph)
    weights = _new_weights(graph, keep)
    new_layers = [
        (layer, _rebuilt(layer, graph, keep, weights[layer.name][1]))
        for layer in graph.layers
    ]
    small = _assemble(walker, new_layers)
    for layer, new in new_layers:
        if weights[layer.name][0]:
            new.set_weights(weights[layer.name][0])
    return small
