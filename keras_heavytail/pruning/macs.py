"""`count_macs`: multiply-adds, parameters and bytes of a Keras 3 model.

Keras 3 has no FLOPs counter. This one counts multiply-accumulates at batch
size 1 from each layer's built shapes, the way Torch-Pruning's
`count_ops_and_params` and most papers do (one MAC = one multiply and one
add; a FLOP count is about twice it):

    Dense, EinsumDense       output elements x contracted size
    ConvND                   output elements x kernel window x in / groups
    DepthwiseConvND          output elements x kernel window
    SeparableConvND          depthwise + pointwise (1x1) MACs
    ConvNDTranspose          input elements x kernel window x filters
    BatchNormalization       0 (folded into the preceding kernel on export)

Everything else (activations, pooling, additions) costs no MACs here: it is
memory-bound and small next to the kernels.
"""

import dataclasses
import re

import keras
import numpy as np

from keras_heavytail.pruning import channels
from keras_heavytail.pruning.graph import ModelGraph
from keras_heavytail.pruning.graph import model_graph

_L = keras.layers
# Item sizes numpy does not know.
_ITEMSIZE = {"bfloat16": 2}


@dataclasses.dataclass
class ModelCost:
    """What `count_macs` measured.

    Attributes:
        macs: multiply-accumulates for one example.
        params: number of weights (trainable and not).
        bytes: bytes of all weights in their dtypes.
        bytes_by_dtype: `{dtype name: bytes}`.
        layers: `(layer name, class name, macs, params)` per leaf layer.
    """

    macs: int
    params: int
    bytes: int
    bytes_by_dtype: dict
    layers: list

    def __str__(self):
        lines = [
            "| layer | type | MACs | params |",
            "| --- | --- | ---: | ---: |",
            *(f"| {n} | {t} | {m:,} | {p:,} |" for n, t, m, p in self.layers if m or p),
            f"| total | | {self.macs:,} | {self.params:,} |",
        ]
        return "\n".join(lines)


def _shape(layer, which):
    try:
        shape = getattr(layer, which).shape
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"count_macs needs built layers with known shapes; layer "
            f"{layer.name!r} has no single {which} ({error})."
        ) from error
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"count_macs needs fixed shapes: layer {layer.name!r} has {which} "
            f"shape {tuple(shape)}. Build the model on a fixed input shape."
        )
    return dims


def _einsum_macs(layer):
    equation = layer.equation.replace(" ", "")
    _, kernel_letters, out_letters = re.split(",|->", equation)
    contracted = [
        size
        for letter, size in zip(kernel_letters, layer.kernel.shape)
        if letter not in out_letters
    ]
    return int(np.prod(_shape(layer, "output"))) * int(np.prod(contracted or [1]))


def layer_macs(layer):
    """Multiply-accumulates of one layer at batch size 1 (0 if it has none).

    A layer registered as a producer (`register_layer`) counts as a Dense
    layer over its input positions.
    """
    if channels.is_producer(layer) and not isinstance(layer, channels.PRODUCERS):
        kernel = channels.kernel_of(layer)
        positions = int(np.prod(_shape(layer, "input")[:-1]))
        return positions * int(np.prod(kernel.shape))
    if isinstance(layer, _L.EinsumDense):
        return _einsum_macs(layer)
    if isinstance(layer, _L.Dense):
        positions = int(np.prod(_shape(layer, "input")[:-1]))
        return positions * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    transposed = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
    if isinstance(layer, transposed):
        window = int(np.prod(layer.kernel.shape[:-2]))
        return int(np.prod(_shape(layer, "input"))) * window * int(layer.filters)
    separable = (_L.SeparableConv1D, _L.SeparableConv2D)
    if isinstance(layer, separable):
        out = _shape(layer, "output")
        positions = int(np.prod(out[:-1]))
        depthwise = layer.depthwise_kernel.shape
        window = int(np.prod(depthwise[:-2]))
        mid = int(depthwise[-2]) * int(depthwise[-1])
        return positions * mid * (window + int(layer.filters))
    depthwise = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
    if isinstance(layer, depthwise):
        window = int(np.prod(layer.kernel.shape[:-2]))
        return int(np.prod(_shape(layer, "output"))) * window
    if isinstance(layer, (_L.Conv1D, _L.Conv2D, _L.Conv3D)):
        per_output = int(np.prod(layer.kernel.shape[:-1]))  # window x in / groups
        return int(np.prod(_shape(layer, "output"))) * per_output
    return 0


def mac_kernels(layer):
    """The kernels whose sizes a layer's MACs are proportional to.

    Every layer `layer_macs` counts costs its positions (output or input
    positions, which channel pruning leaves alone) times the summed size of
    these kernels; so a pruned layer's MACs follow from its new kernel shapes.
    """
    if not layer_macs(layer):
        return []
    if isinstance(layer, (_L.SeparableConv1D, _L.SeparableConv2D)):
        return [layer.depthwise_kernel, layer.pointwise_kernel]
    if channels.is_producer(layer) and not isinstance(layer, channels.PRODUCERS):
        return [channels.kernel_of(layer)]
    return [layer.kernel]


def count_macs(model):
    """Multiply-accumulates, parameters and weight bytes of a model at batch 1.

    Args:
        model: a built Keras 3 model with fixed input shapes, or its
            `ModelGraph`.

    Returns:
        A `ModelCost` (`macs`, `params`, `bytes`, `bytes_by_dtype`, per-layer
        `layers`); `print` it for a table.

    Example:

    >>> cost = count_macs(model)  # doctest: +SKIP
    >>> cost.macs, cost.params  # doctest: +SKIP
    """
    if not isinstance(model, (keras.Model, ModelGraph)):
        raise ValueError(
            f"count_macs takes a Keras model or its ModelGraph. Received: {model!r}"
        )
    graph = model_graph(model)
    if isinstance(graph.model, keras.Model) and not isinstance(graph.model, keras.Sequential):
        _ = graph.wiring  # refuses shared layers, which would be counted once
    rows = []
    for layer in graph.layers:
        params = sum(int(np.prod(w.shape)) for w in layer.weights)
        rows.append((layer.name, type(layer).__name__, layer_macs(layer), params))
    by_dtype = {}
    for weight in graph.model.weights:
        dtype = keras.backend.standardize_dtype(weight.dtype)
        itemsize = _ITEMSIZE.get(dtype) or np.dtype(dtype).itemsize
        size = int(np.prod(weight.shape)) * itemsize
        by_dtype[dtype] = by_dtype.get(dtype, 0) + size
    return ModelCost(
        macs=sum(r[2] for r in rows),
        params=int(sum(int(np.prod(w.shape)) for w in graph.model.weights)),
        bytes=sum(by_dtype.values()),
        bytes_by_dtype=by_dtype,
        layers=rows,
    )
