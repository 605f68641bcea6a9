"""`shrink`: turn a pruned Keras 3 model into a smaller dense one.

Removing pruned units is what makes a pruned model fast: sparse storage
shrinks the file, but runtimes densify the weights again.
"""

import keras
import numpy as np

from keras_heavytail import compressibility
from keras_heavytail import topology
from keras_heavytail.topology import ELEMENTWISE
from keras_heavytail.topology import SPATIAL
from keras_heavytail.topology import TO_FEATURES
from keras_heavytail.topology import WEIGHTED
from keras_heavytail.topology import as_array


def _supported(layer):
    return isinstance(
        layer,
        WEIGHTED + ELEMENTWISE + SPATIAL + TO_FEATURES + (keras.layers.Flatten,),
    )


def _constant_output(block, bias, activation):
    """What each unit emits when its incoming weights are all zero."""
    value = as_array(activation(keras.ops.convert_to_tensor(bias[None, :])))[0]
    for layer in block:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma = as_array(layer.gamma) if layer.gamma is not None else 1.0
            beta = as_array(layer.beta) if layer.beta is not None else 0.0
            std = np.sqrt(as_array(layer.moving_variance) + layer.epsilon)
            value = gamma * (value - as_array(layer.moving_mean)) / std + beta
        elif isinstance(
            layer, (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU)
        ):
            value = as_array(layer(keras.ops.convert_to_tensor(value[None, :])))[0]
    return value


def _rebuilt(layer, **overrides):
    return type(layer).from_config({**layer.get_config(), **overrides})


def _block_after(layers, i):
    """The layers between kernel layer `layers[i]` and the next one."""
    block = []
    for nxt in layers[i + 1 :]:
        if isinstance(nxt, WEIGHTED):
            break
        block.append(nxt)
    return block


def _shrink_weighted(layer, keep, block):
    """A Dense/Conv layer without its dropped inputs and silent units.

    `keep` marks the kept input channels (`None`: all); `block` is the layers
    up to the next kernel layer, or `None` for the output layer, which keeps
    every unit. Returns the new layer, its weights and the kept units.
    """
    kernel = as_array(layer.kernel)
    bias = as_array(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1])
    if keep is not None:
        kernel = np.take(kernel, np.flatnonzero(keep), axis=-2)
    if block is None:
        keep = np.ones(kernel.shape[-1], dtype=bool)
    else:
        silent = np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)
        silent &= _constant_output(block, bias, layer.activation) == 0
        keep = ~silent
        if not keep.any():
            keep[np.argmax(compressibility.neuron_norms(layer.kernel))] = True
    size_key = "units" if isinstance(layer, keras.layers.Dense) else "filters"
    new = _rebuilt(layer, **{size_key: int(keep.sum())})
    weights = [kernel[..., keep]] + ([bias[keep]] if layer.use_bias else [])
    return new, weights, keep


def _shrink_passthrough(layer, keep):
    """A weightless (or per-channel) layer, restricted to the kept channels."""
    if isinstance(layer, keras.layers.BatchNormalization):
        weights = layer.get_weights()
        if keep is not None:
            weights = [w[keep] for w in weights]
        return _rebuilt(layer), weights, keep
    if isinstance(layer, keras.layers.Flatten) and keep is not None:
        shape = layer.input.shape
        positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        keep = np.tile(keep, positions)
    return _rebuilt(layer), None, keep


def shrink(model):
    """A smaller dense model without the units that pruning switched off.

    A unit (Dense neuron, Conv filter) whose incoming weights are all zero
    and whose output is then exactly zero (zero bias, an activation with
    f(0) = 0, a BatchNormalization after it scaled to zero, as `prune` leaves
    it) is removed together with its bias, its BatchNormalization channel and
    the matching input rows (channels) of the next layer. Outputs equal the
    zero-masked model's; the parameter count drops with every unit. The output
    layer keeps all its units, and every layer keeps at least one.

    Supports Sequential and single-path functional chains of Dense, Conv1D,
    Conv2D, pooling, Flatten, Dropout, activations and BatchNormalization;
    any other layer raises a ValueError naming it.

    Args:
        model: a Keras 3 model (not modified).

    Returns:
        A plain `keras.Sequential` that saves and reloads without custom objects.

    Example:

    >>> small = shrink(prune(model, 0.7, structure="neuron"))  # doctest: +SKIP
    """
    layers = topology.chain(model)
    for layer in layers:
        if not _supported(layer):
            raise ValueError(
                f"`shrink` does not support layer {layer.name!r} of type "
                f"{type(layer).__name__}. Supported: Dense, Conv1D, Conv2D, pooling, "
                "Flatten, Dropout, activations and BatchNormalization."
            )
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, WEIGHTED)]
    if not weighted:
        raise ValueError(f"Model {model.name!r} has no Dense or Conv layer to shrink.")
    keep = None  # kept channels of the current tensor's last axis
    new_layers = []
    for i, layer in enumerate(layers):
        if isinstance(layer, WEIGHTED):
            block = None if i == weighted[-1] else _block_after(layers, i)
            new, weights, keep = _shrink_weighted(layer, keep, block)
        else:
            new, weights, keep = _shrink_passthrough(layer, keep)
        new_layers.append((new, weights))
    inputs = keras.Input(
        shape=model.inputs[0].shape[1:] if hasattr(model, "inputs") else None
    )
    small = keras.Sequential(
        [inputs] + [new for new, _ in new_layers], name=f"{model.name}_shrunk"
    )
    for new, weights in new_layers:
        if weights is not None:
            new.set_weights(weights)
    return small
