"""The channel dependency graph: which channels of a model live or die together.

A walk over a Sequential or functional Keras 3 model (the companion of
`topology`, for graphs that are not chains). Every channel a layer produces
is a node; layers that tie channels together join their nodes:

- `Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum` join channel
  `i` of every input;
- `DepthwiseConv*D`, `BatchNormalization`, activations, pooling, dropout,
  padding, cropping and upsampling pass channels through (a depthwise output
  channel joins its input channel);
- `Concatenate` places its inputs' channels one after another (offsets);
- `Flatten` (and a flattening `Reshape`) turns one channel into a block of
  the next `Dense` layer's inputs;
- `Dense`, `Conv1D/2D/3D`, `SeparableConv1D/2D`, `Conv*DTranspose` consume
  channels and produce new ones.

A component (channels joined together) must be pruned whole: its members
are the layer slices that lose the channel. Components are gathered into
groups by the layers that produce them. The model's input and output
channels are never pruned, and a layer the graph does not know (a custom
layer, `Lambda`) freezes the channels it touches, named in the group's
`frozen_by`.
"""

import keras
import numpy as np

from keras_heavytail.graph import ChannelGraph
from keras_heavytail.graph import slot_sums
from keras_heavytail.topology import as_array

_L = keras.layers
CONVS = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
TRANSPOSED = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
# Layers whose units (Dense neurons, filters) `prune` scores and `shrink` removes.
PRODUCERS = (_L.Dense,) + CONVS + TRANSPOSED + SEPARABLE
# Elementwise functions of one channel (f(0) decides whether a zero stays zero).
ACTIVATIONS = (_L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU)
# Layers that keep each channel apart and map zeros to zeros.
PASS_THROUGH = (
    _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D,
    _L.GaussianNoise, _L.GaussianDropout, _L.AlphaDropout, _L.Identity,
    _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D,
    _L.AveragePooling1D, _L.AveragePooling2D, _L.AveragePooling3D,
    _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D,
    _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D,
    _L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D,
    _L.Cropping1D, _L.Cropping2D, _L.Cropping3D,
    _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D,
)  # fmt: skip
# Layers that join channel i of every input (Multiply: zero if any is zero).
MERGES = (_L.Add, _L.Subtract, _L.Average, _L.Maximum, _L.Minimum, _L.Multiply)


def _describe(layer):
    return f"{layer.name!r} ({type(layer).__name__})"


def _units(layer):
    return int(layer.units if isinstance(layer, _L.Dense) else layer.filters)


def _activation_zero(activation, values):
    """Whether `activation(values)` is exactly zero, per value."""
    out = activation(keras.ops.convert_to_tensor(np.asarray(values, "float32")[None]))
    return as_array(out)[0] == 0


def producer_weights(layer, channels, positions=1):
    """`(inputs, outputs)`: the weight slices of a producer's input channels
    and of its units, as `(variable, axis, slots, kind)` lists."""
    units = np.arange(_units(layer))
    bias = [(layer.bias, 0, units, "bias")] if layer.use_bias else []
    if isinstance(layer, SEPARABLE):
        multiplier = int(layer.depth_multiplier)
        inputs = [
            (layer.depthwise_kernel, -2, np.arange(channels), "kernel"),
            (layer.pointwise_kernel, -2, np.repeat(np.arange(channels), multiplier), "kernel"),
        ]
        return inputs, [(layer.pointwise_kernel, -1, units, "kernel")] + bias
    in_axis, out_axis = (-1, -2) if isinstance(layer, TRANSPOSED) else (-2, -1)
    inputs = [(layer.kernel, in_axis, np.tile(np.arange(channels), positions), "kernel")]
    return inputs, [(layer.kernel, out_axis, units, "kernel")] + bias


def _producer(graph, layer, nodes, positions, zero):
    if getattr(layer, "groups", 1) != 1 or (
        positions > 1 and not isinstance(layer, _L.Dense)
    ):
        return None
    inputs, outputs = producer_weights(layer, nodes.size, positions)
    graph.add(layer, "in", nodes, inputs)
    units = _units(layer)
    out = graph.new(units)
    graph.add(layer, "out", out, outputs)
    if not graph.values:
        return out, 1, np.zeros(units, dtype=bool)
    incoming = sum(
        slot_sums(as_array(v), axis, slots, units)
        for v, axis, slots, kind in outputs
        if kind == "kernel"
    )
    bias = as_array(layer.bias) if layer.use_bias else np.zeros(units)
    return out, 1, (incoming == 0) & _activation_zero(layer.activation, bias)


def _depthwise(graph, layer, nodes, zero):
    channels, multiplier = nodes.size, int(layer.depth_multiplier)
    graph.add(layer, "channel", nodes, [(layer.kernel, -2, np.arange(channels), "kernel")])
    out = graph.new(channels * multiplier)
    graph.union(out, np.repeat(nodes, multiplier))
    bias = np.zeros(out.size)
    if layer.use_bias:
        bias = as_array(layer.bias)
        graph.add(layer, "channel", out, [(layer.bias, 0, np.arange(out.size), "bias")])
    if not graph.values:
        return out, 1, np.zeros(out.size, dtype=bool)
    silent_kernel = np.all(as_array(layer.kernel).reshape(-1, out.size) == 0, axis=0)
    out_zero = (np.repeat(zero, multiplier) | silent_kernel) & _activation_zero(
        layer.activation, bias
    )
    return out, 1, out_zero


def _batch_norm(graph, layer, nodes, zero, rank):
    if layer.axis not in (-1, rank - 1):
        return None
    slots = np.arange(nodes.size)
    weights = [
        (v, 0, slots, kind)
        for v, kind in (
            (layer.gamma, "scale"), (layer.beta, "scale"),
            (layer.moving_mean, "stat"), (layer.moving_variance, "stat"),
        )
        if v is not None
    ]  # fmt: skip
    graph.add(layer, "channel", nodes, weights)
    if not graph.values:
        return nodes, 1, np.zeros(nodes.size, dtype=bool)
    gamma = as_array(layer.gamma) if layer.gamma is not None else np.ones(nodes.size)
    beta = as_array(layer.beta) if layer.beta is not None else np.zeros(nodes.size)
    std = np.sqrt(as_array(layer.moving_variance) + layer.epsilon)
    constant = beta - gamma * as_array(layer.moving_mean) / std
    return nodes, 1, (zero & (constant == 0)) | ((gamma == 0) & (beta == 0))


def _merge(graph, layer, ins):
    first_nodes, positions, _ = ins[0]
    if any(n.size != first_nodes.size or p != positions for n, p, _ in ins):
        return None
    for nodes, _, _ in ins[1:]:
        graph.union(first_nodes, nodes)
    zeros = np.array([z for _, _, z in ins])
    return first_nodes, positions, (
        zeros.any(0) if isinstance(layer, _L.Multiply) else zeros.all(0)
    )


def _reshaped(layer, nodes, positions, zero):
    """Flatten and Reshape: channels kept last, or flattened into blocks."""
    in_shape, out_shape = layer.input.shape, layer.output.shape
    if positions > 1:
        return (nodes, positions, zero) if len(in_shape) == 2 == len(out_shape) else None
    if len(out_shape) >= 2 and out_shape[-1] == in_shape[-1] and len(in_shape) >= 2:
        return nodes, 1, zero
    if len(out_shape) == 2:
        return nodes, int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1, zero
    return None


def _visit(graph, layer, ins):
    """The (nodes, positions, zero) of `layer`'s output, or `None` if unknown."""
    if len(ins) > 1:
        if isinstance(layer, MERGES):
            return _merge(graph, layer, ins)
        if isinstance(layer, _L.Concatenate):
            if layer.axis not in (-1, len(layer.output.shape) - 1):
                return _merge(graph, layer, ins)
            if any(p > 1 for _, p, _ in ins):
                return None
            nodes = np.concatenate([n for n, _, _ in ins])
            return nodes, 1, np.concatenate([z for _, _, z in ins])
        return None
    nodes, positions, zero = ins[0]
    if isinstance(layer, PRODUCERS):
        return _producer(graph, layer, nodes, positions, zero)
    if isinstance(layer, (_L.Flatten, _L.Reshape)):
        return _reshaped(layer, nodes, positions, zero)
    if isinstance(layer, PASS_THROUGH + ACTIVATIONS):
        if isinstance(layer, ACTIVATIONS) and graph.values:
            zero = zero & _activation_zero(layer, np.zeros(1))[0]
        return nodes, positions, zero
    if positions > 1:
        return None
    if isinstance(layer, DEPTHWISE):
        return _depthwise(graph, layer, nodes, zero)
    if isinstance(layer, _L.BatchNormalization):
        return _batch_norm(graph, layer, nodes, zero, len(layer.input.shape))
    return None


def _io(layer):
    try:
        return keras.tree.flatten(layer.input), keras.tree.flatten(layer.output)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"The channel graph needs each layer called once. Layer {layer.name!r} "
            f"is shared or not connected ({error})."
        ) from error


def wiring(model):
    """How `model`'s layers connect: `(steps, input keys, output keys)`.

    Each step is `(layer, input keys, output tensors, output keys)`; a key
    names a tensor. A Sequential model is a chain by definition (a reloaded
    one may hold layers called more than once, so its tensors are not
    trusted); a functional model's keys are its tensors' ids.
    """
    layers = [layer for layer in model.layers if not isinstance(layer, _L.InputLayer)]
    if isinstance(model, keras.Sequential):
        steps = [
            (layer, [i], [layer.output], [i + 1]) for i, layer in enumerate(layers)
        ]
        return steps, [0], [len(layers)]
    shared = [
        entry["name"]
        for entry in model.get_config().get("layers", [])
        if len(entry.get("inbound_nodes") or []) > 1
    ]
    if shared:
        raise ValueError(
            "The channel graph needs each layer called once. Shared layers "
            f"(called more than once): {shared}"
        )
    steps = []
    for layer in layers:
        inputs, outputs = _io(layer)
        steps.append((layer, [id(t) for t in inputs], outputs, [id(t) for t in outputs]))
    return steps, [id(t) for t in model.inputs], [id(t) for t in model.outputs]


def _channels(tensor):
    return int(tensor.shape[-1] or 0) if len(tensor.shape) else 1


def channel_graph(model, exclude=None, values=True):
    """The channel dependency graph of a Sequential or functional model.

    Args:
        model: a built Keras 3 model (not modified).
        exclude: names of producer layers whose units stay.
            Defaults to `None`.
        values: read the weights to find the channels every producer
            reads as exactly zero (`silent`, what `shrink` needs); `False`
            builds the structure only, faster. Defaults to `True`.

    Returns:
        A finished `ChannelGraph`.

    Example:

    >>> graph = channel_graph(model)  # doctest: +SKIP
    >>> [g for g in graph.groups if not g.prunable]  # doctest: +SKIP
    """
    graph = ChannelGraph(values)
    exclude = set(exclude or [])
    steps, input_keys, output_keys = wiring(model)
    for key, tensor in zip(input_keys, model.inputs):
        graph.tensors[key] = (
            graph.new(_channels(tensor), reason="the model's input"), 1, False)  # fmt: skip
    for layer, in_keys, outputs, out_keys in steps:
        graph.layers.append(layer)
        graph.inputs_of[layer.name] = in_keys
        ins = [graph.tensors[key] for key in in_keys if key in graph.tensors]
        ins = [(n, p, np.broadcast_to(z, n.shape).copy()) for n, p, z in ins]
        known = len(ins) == len(in_keys) > 0 and len(outputs) == 1
        result = _visit(graph, layer, ins) if known else None
        if result is None:
            for nodes, _, _ in ins:
                graph.freeze(nodes, _describe(layer))
            for key, tensor in zip(out_keys, outputs):
                graph.tensors[key] = (
                    graph.new(_channels(tensor), reason=_describe(layer)), 1, False)  # fmt: skip
            continue
        if layer.name in exclude and isinstance(layer, PRODUCERS):
            graph.freeze(result[0], f"excluded {layer.name!r}")
        if isinstance(layer, PRODUCERS):  # the one place a channel's value is read
            graph.see(ins[0][0], ins[0][2])
        graph.tensors[out_keys[0]] = result
    for key in output_keys:
        graph.freeze(graph.tensors[key][0], "the model's output")
    return graph.finish()


def channel_groups(model, exclude=None):
    """The groups of channels that `prune(structure="neuron")` removes together.

    Args:
        model: a built Keras 3 model (not modified).
        exclude: names of producer layers whose units stay.
            Defaults to `None`.

    Returns:
        A list of `ChannelGroup`; frozen ones name the layer that froze them.

    Example:

    >>> for group in channel_groups(model):  # doctest: +SKIP
    ...     print(group)
    """
    return channel_graph(model, exclude).groups

