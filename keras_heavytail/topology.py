"""Every walk over a Keras model, in one place.

Which layers hold a kernel, which layers follow a unit until the next
kernel, whether a model is a single chain, how sparse its kernels are, and
which layers the paper keeps noise-free. Works on Keras 3 models and on
tf_keras models (both expose `.layers`), on every backend. Kernels follow
Keras' layout: the last axis indexes output units (neurons, or filters).
"""

import keras
import numpy as np

# Layers that act on each channel alone, keeping its position.
ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Dropout,
    keras.layers.BatchNormalization,
)
# Layers that move over positions but keep channels apart.
SPATIAL = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling1D,
    keras.layers.AveragePooling1D,
)
# Layers that pool every position of a channel into one feature.
TO_FEATURES = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalMaxPooling1D,
)
# Layers whose kernel's last axis are units that `shrink` can remove.
WEIGHTED = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D)


def as_array(x, dtype=None):
    """A numpy copy of an array, tensor or (Keras 3 or tf_keras) variable."""
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def leaf_layers(model):
    """Every layer of `model` that is not itself a container, depth first.

    Nested models and layers with sub-layers are opened; input layers are
    skipped. A layer with its own kernel is a leaf even if it has sub-layers.
    """
    layers = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer":
            continue
        if getattr(layer, "layers", None) and getattr(layer, "kernel", None) is None:
            layers.extend(leaf_layers(layer))
        else:
            layers.append(layer)
    return layers


def has_kernel(layer):
    """Whether `layer` has a kernel of 2 or more axes (Dense, Conv, ...)."""
    kernel = getattr(layer, "kernel", None)
    return kernel is not None and len(kernel.shape) >= 2


def kernel_layers(model):
    """Layers of `model` with a kernel of 2 or more axes, in order."""
    return [layer for layer in leaf_layers(model) if has_kernel(layer)]


def noise_free_layers(model):
    """The layers the paper keeps noise-free: the output layer and the first conv.

    Wan et al. (2024) perturb every weight matrix except the classifier's and
    the first convolution's; the same layers are left out of pruning.
    """
    layers = kernel_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel.")
    chosen = [layers[-1]]
    convs = [layer for layer in layers if len(layer.kernel.shape) > 2]
    if convs and convs[0] is not layers[-1]:
        chosen.insert(0, convs[0])
    return chosen


def chain(model, strict=True, purpose="`shrink`"):
    """The layers of a Sequential or single-path functional model, in order.

    Args:
        model: a Keras 3 model.
        strict: raise a ValueError if `model` is not a single chain; else
            return `None`. Defaults to `True`.
        purpose: what needs the chain, for the error message.
            Defaults to `"`shrink`"`.

    Returns:
        A list of layers (input layers left out), or `None`.
    """
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    if isinstance(model, keras.Sequential):
        return layers
    try:
        linear = len(model.inputs) == 1 and len(model.outputs) == 1
        previous = model.inputs[0] if linear else None
        for layer in layers:
            if not linear or layer.input is not previous:
                linear = False
                break
            previous = layer.output
    except (AttributeError, ValueError):
        linear = False
    if linear:
        return layers
    if strict:
        raise ValueError(
            f"{purpose} supports Sequential models and single-path functional "
            f"models. Model {model.name!r} is not a single chain of layers."
        )
    return None


def following(model, layer):
    """The layers after `layer` up to and including the next kernel layer.

    Empty when `model` is not a single chain or `layer` is its last layer.
    """
    layers = chain(model, strict=False)
    if layers is None or layer not in layers:
        return []
    out = []
    for nxt in layers[layers.index(layer) + 1 :]:
        out.append(nxt)
        if has_kernel(nxt):
            break
    return out


def next_kernel_layer(model, layer):
    """The kernel layer that consumes `layer`'s units in a chain, or `None`."""
    after = following(model, layer)
    return after[-1] if after and has_kernel(after[-1]) else None


def weight_sparsity(model):
    """Fraction of zero entries over all kernels of `model` (0.0 without any)."""
    kernels = [as_array(layer.kernel) for layer in kernel_layers(model)]
    total = sum(k.size for k in kernels)
    return float(sum(np.sum(k == 0) for k in kernels) / total) if total else 0.0
