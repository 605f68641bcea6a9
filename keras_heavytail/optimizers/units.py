"""Which axes of each kernel index its output units, as the optimizers learn them.

Neuron and elliptical noise draw one value per output unit. The unit axes are
a property of the layer (`pruning.graph.unit_axes`: Dense and Conv kernels
keep their units last, a transposed convolution's are axis -2, a depthwise
kernel's its last two), and an optimizer sees variables only. Keras builds
the optimizer with the variables, not the model; the model is the caller
(`calling_model`), or a custom loop names it (`set_noise_units`). The axes
are kept per variable index, as the noise seed is.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import sys
import warnings

from keras_heavytail.pruning.graph import ModelGraph


def model_of(model):
    """The Keras model of a model or its `ModelGraph`."""
    return model.model if isinstance(model, ModelGraph) else model


def units_of(model):
    """`{id(variable): unit axes}` of a built model (or its `ModelGraph`)."""
    graph = model if isinstance(model, ModelGraph) else None
    if graph is None and not (hasattr(model, "layers") and hasattr(model, "weights")):
        raise ValueError(
            "`set_noise_units()` takes the model being trained (a Keras model "
            f"or its ModelGraph). Received: model={model!r}"
        )
    graph = graph or ModelGraph(model)
    if not graph.model.weights:
        raise ValueError(
            f"`set_noise_units()` needs a built model: {graph.model.name!r} has no "
            "weights yet. Call it on a batch (`model(x[:1])`) or give it an "
            "`Input` first."
        )
    return graph.unit_axes()


def by_index(units, var_list):
    """`{index in var_list: unit axes}` for the variables `units` names."""
    return {
        index: units[id(variable)]
        for index, variable in enumerate(var_list)
        if id(variable) in units
    }


def calling_model(optimizer, depth=16):
    """The model whose `fit`, `evaluate` or `compile_from_config` builds `optimizer`.

    The model is `self` in a frame of the trainer or of its `train_step`,
    holding this optimizer as an attribute (`optimizer`, or a GAN's
    `g_optimizer`), itself or through a `LossScaleOptimizer`. `None` outside
    such a call (a custom training loop).
    """
    frame = sys._getframe(1)
    for _ in range(depth):
        frame = frame.f_back
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if not (hasattr(owner, "layers") and hasattr(owner, "trainable_variables")):
            continue
        for held in vars(owner).values():
            if held is optimizer or getattr(held, "inner_optimizer", None) is optimizer:
                return owner
    return None


def warn_blind(optimizer):
    """Warns that `optimizer` was built without its model on kernels whose
    unit axes it cannot know."""
    warnings.warn(
        f"{type(optimizer).__name__} was built without its model (a custom "
        "training loop, or `optimizer.build` called directly): "
        f"{optimizer.noise} noise takes each kernel's last axis as its units, "
        "which is wrong for Conv*DTranspose and depthwise kernels. Call "
        "`optimizer.set_noise_units(model)` before the first step.",
        UserWarning,
        stacklevel=5,
    )
