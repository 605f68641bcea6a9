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

import dataclasses

import keras
import numpy as np

from keras_heavytail import checks
from keras_heavytail.arrays import as_array
from keras_heavytail.pruning.components import ChannelGraph
from keras_heavytail.pruning.components import slot_sums

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


OUTPUT_REASON = "the model's output"
RULE_KINDS = ("elementwise", "channelwise", "producer")


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """How a registered layer's channels tie its input to its output."""

    kind: str
    kernel: str = "kernel"
    bias: str = "bias"
    units: str = "units"


_REGISTRY = {}


def register_layer(layer_class, kind, kernel="kernel", bias="bias", units="units"):
    """Teaches the model graph how a custom layer's channels flow.

    A layer the graph does not know freezes the channels it touches (they
    are never pruned, and `channel_groups` names the layer). Register it to
    let them be pruned and shrunk through it:

    - `"elementwise"`: output channel `c` depends on input channel `c` alone
      and the layer holds no per-channel weights (a custom activation).
    - `"channelwise"`: the same, with per-channel weights: every weight whose
      last axis has the channel count (a learned scale, a custom
      normalisation) is zeroed and removed with its channel.
    - `"producer"`: like `Dense`: a kernel whose axis -2 reads input channels
      and whose last axis holds the layer's units, an optional bias of one
      value per unit, and a config entry that sets the number of units
      (`shrink` rebuilds the layer with it changed).

    Whether a pruned channel is exactly zero after the layer is measured by
    calling the layer on zeros, so the rule holds for any activation.
    Subclasses of `layer_class` follow the same rule.

    Args:
        layer_class: a `keras.layers.Layer` subclass.
        kind: `"elementwise"`, `"channelwise"` or `"producer"`.
        kernel: for a producer, the attribute holding the kernel.
            Defaults to `"kernel"`.
        bias: for a producer, the attribute holding the bias (absent or
            `None` for none). Defaults to `"bias"`.
        units: for a producer, the config entry with the number of units.
            Defaults to `"units"`.

    Example:

    >>> register_layer(MyScale, "channelwise")  # doctest: +SKIP
    >>> register_layer(MyDense, "producer", kernel="w", bias="b")  # doctest: +SKIP
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise ValueError(
            "`layer_class` must be a keras.layers.Layer subclass. Received: "
            f"layer_class={layer_class!r}"
        )
    checks.check_choice(kind, "kind", RULE_KINDS)
    for name, value in (("kernel", kernel), ("units", units)):
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"`{name}` must name an attribute or config entry (a string). "
                f"Received: {name}={value!r}"
            )
    if bias is not None and not isinstance(bias, str):
        raise ValueError(f"`bias` must be a string or None. Received: bias={bias!r}")
    _REGISTRY[layer_class] = LayerRule(kind, kernel, bias, units)


def rule_of(layer):
    """The registered `LayerRule` of `layer`'s class (or a base), or `None`."""
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def is_producer(layer):
    """Whether `layer` makes new channels that `prune` scores and `shrink` resizes."""
    if isinstance(layer, PRODUCERS):
        return True
    rule = rule_of(layer)
    return rule is not None and rule.kind == "producer"


def units_key(layer):
    """The config entry that sets a producer's number of units."""
    rule = rule_of(layer)
    if rule is not None and not isinstance(layer, PRODUCERS):
        return rule.units
    return "units" if isinstance(layer, _L.Dense) else "filters"


def kernel_of(layer):
    """A producer's kernel (the pointwise one of a separable convolution)."""
    rule = rule_of(layer)
    if rule is not None and not isinstance(layer, PRODUCERS):
        return getattr(layer, rule.kernel)
    return layer.pointwise_kernel if isinstance(layer, SEPARABLE) else layer.kernel


def _bias_of(layer):
    rule = rule_of(layer)
    if rule is not None and not isinstance(layer, PRODUCERS):
        return getattr(layer, rule.bias, None) if rule.bias else None
    return layer.bias if layer.use_bias else None


def _describe(layer):
    return f"{layer.name!r} ({type(layer).__name__})"


def _units(layer):
    return int(kernel_of(layer).shape[-2 if isinstance(layer, TRANSPOSED) else -1])


def _activation_zero(activation, values):
    """Whether `activation(values)` is exactly zero, per value."""
    out = activation(keras.ops.convert_to_tensor(np.asarray(values, "float32")[None]))
    return as_array(out)[0] == 0


def _zero_response(layer):
    """Per output channel, whether `layer` maps an all-zero input to zeros."""
    shape = [1 if d is None else int(d) for d in layer.input.shape]
    shape[0] = 1
    out = as_array(layer(keras.ops.zeros(shape, dtype=layer.input.dtype)))
    return np.all(out.reshape(-1, out.shape[-1]) == 0, axis=0)


def producer_weights(layer, channels, positions=1):
    """`(inputs, outputs)`: the weight slices of a producer's input channels
    and of its units, as `(variable, axis, slots, kind)` lists."""
    units = np.arange(_units(layer))
    bias = _bias_of(layer)
    bias = [(bias, 0, units, "bias")] if bias is not None else []
    if isinstance(layer, SEPARABLE):
        multiplier = int(layer.depth_multiplier)
        inputs = [
            (layer.depthwise_kernel, -2, np.arange(channels), "kernel"),
            (layer.pointwise_kernel, -2, np.repeat(np.arange(channels), multiplier), "kernel"),
        ]
        return inputs, [(layer.pointwise_kernel, -1, units, "kernel")] + bias
    kernel = kernel_of(layer)
    in_axis, out_axis = (-1, -2) if isinstance(layer, TRANSPOSED) else (-2, -1)
    inputs = [(kernel, in_axis, np.tile(np.arange(channels), positions), "kernel")]
    return inputs, [(kernel, out_axis, units, "kernel")] + bias


def _producer(graph, layer, nodes, positions, zero):
    dense_like = isinstance(layer, _L.Dense) or not isinstance(layer, PRODUCERS)
    if getattr(layer, "groups", 1) != 1 or (positions > 1 and not dense_like):
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
    if not isinstance(layer, PRODUCERS):  # registered: measured on zeros
        return out, 1, (incoming == 0) & _zero_response(layer)
    bias = as_array(layer.bias) if layer.use_bias else np.zeros(units)
    return out, 1, (incoming == 0) & _activation_zero(layer.activation, bias)


def _registered(graph, layer, rule, nodes, positions, zero):
    if rule.kind == "producer":
        return _producer(graph, layer, nodes, positions, zero)
    if rule.kind == "channelwise":
        if positions > 1:
            return None
        weights = [
            (w, -1, np.arange(nodes.size), "scale")
            for w in layer.weights
            if len(w.shape) and w.shape[-1] == nodes.size
        ]
        graph.add(layer, "channel", nodes, weights)
    if not graph.values:
        return nodes, positions, np.zeros(nodes.size, dtype=bool)
    return nodes, positions, zero & _zero_response(layer)


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
    if getattr(layer, "data_format", None) == "channels_first":
        return None  # channels on axis 1: unknown here, its channels stay
    rule = rule_of(layer)
    if rule is not None:
        return _registered(graph, layer, rule, nodes, positions, zero)
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


def _channels(tensor):
    return int(tensor.shape[-1] or 0) if len(tensor.shape) else 1


def build(model, wiring, exclude=frozenset(), values=True):
    """The channel dependency graph of a Sequential or functional model.

    `ModelGraph.channels` calls this and keeps the result; call that.

    Args:
        model: a built Keras 3 model (not modified).
        wiring: `ModelGraph.wiring`: `(steps, input keys, output keys)`.
        exclude: names of producer layers whose units stay.
        values: read the weights to find the channels every producer reads
            as exactly zero (`silent`, what `shrink` needs); `False` builds
            the structure only.

    Returns:
        A finished `ChannelGraph`.
    """
    graph = ChannelGraph(values)
    steps, input_keys, output_keys = wiring
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
        if layer.name in exclude and is_producer(layer):
            graph.freeze(result[0], f"excluded {layer.name!r}")
        if is_producer(layer):  # the one place a channel's value is read
            graph.see(ins[0][0], ins[0][2])
        graph.tensors[out_keys[0]] = result
    for key in output_keys:
        graph.freeze(graph.tensors[key][0], OUTPUT_REASON)
    return graph.finish()
