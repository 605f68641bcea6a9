"""`ModelGraph`: the one walker of a Keras model, built once and kept.

Which layers a model holds (nested models opened), which of them have a
kernel, whether they form a single chain, how the layers connect (the
wiring), which layers produce the model's outputs, and the channel
dependency graph (`channels`), built on first use and cached. Everything
that visits a model's layers (noise exclusions, compressibility, pruning,
shrink, the pruning callback, MACs) asks a `ModelGraph`, so a layer type
learned here is learned everywhere; `channels.register_layer` teaches it a
custom layer. Works on Keras 3 models on every backend; the layer lists also
on tf_keras models (both expose `.layers`). Kernels follow Keras' layout:
the last axis indexes output units (neurons, or filters).
"""

import keras
import numpy as np

from keras_heavytail.arrays import as_array
from keras_heavytail.pruning import channels


def has_kernel(layer):
    """Whether `layer` has a kernel of 2 or more axes (Dense, Conv, ...)."""
    kernel = getattr(layer, "kernel", None)
    return kernel is not None and len(kernel.shape) >= 2


def unit_axes(layer):
    """`{weight name: axes}`: the axes that index each kernel's output units.

    Keras lays kernels out with the output units last (Dense `(in, out)`,
    Conv `(..., in, out)`: `(-1,)`), except a transposed convolution
    (`(..., out, in)`: `(-2,)`) and a depthwise kernel (`(..., channels,
    multiplier)`: every channel-multiplier pair is a unit, `(-2, -1)`),
    alone or inside a SeparableConv. Read by class name along the class's
    bases, so tf_keras layers and subclasses get the same answer. Weights not
    named here have their units last.
    """
    for cls in type(layer).__mro__:  # a user's subclass keeps its base's layout
        name = cls.__name__
        if name.startswith("DepthwiseConv") or name == "BaseDepthwiseConv":
            return {"kernel": (-2, -1), "depthwise_kernel": (-2, -1)}
        if name.startswith("SeparableConv") or name == "BaseSeparableConv":
            return {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)}
        if name.startswith("Conv") and name.endswith("Transpose") or name == "BaseConvTranspose":
            return {"kernel": (-2,)}
    return {"kernel": (-1,)}


def _leaf_layers(model, nested=None):
    """The leaf layers of `model`, depth first; `nested` collects each
    sub-model's leaves under its name."""
    layers = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer":
            continue
        if getattr(layer, "layers", None) and getattr(layer, "kernel", None) is None:
            inner = _leaf_layers(layer, nested)
            if nested is not None:
                nested[layer.name] = inner
            layers.extend(inner)
        else:
            layers.append(layer)
    return layers


def _io(layer):
    try:
        return keras.tree.flatten(layer.input), keras.tree.flatten(layer.output)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"The channel graph needs each layer called once. Layer {layer.name!r} "
            f"is shared or not connected ({error})."
        ) from error


class ModelGraph:
    """The layers, wiring, outputs and channel groups of one model.

    Build it once per model and pass it to `prune`, `shrink`, `count_macs`,
    `compress` and `sparsity.GradualPruning` (each builds one when given a
    bare model). The structure is read when the graph is built; weights are
    read by whoever asks for them, so one graph serves a model whose weights
    change (training, masking).

    Args:
        model: a built Keras 3 model (Sequential or functional; nested models
            are opened). tf_keras models give `layers` and `kernel_layers`.

    Attributes:
        model: the model.
        layers: every leaf layer (input layers left out), depth first.
        nested: `{sub-model name: its leaf layers}` for every nested model.
        kernel_layers: the layers with a kernel of 2 or more axes, in order.

    Example:

    >>> graph = ModelGraph(model)  # doctest: +SKIP
    >>> small = shrink(prune(graph, 0.5, structure="neuron"))  # doctest: +SKIP
    """

    def __init__(self, model):
        if isinstance(model, ModelGraph):
            model = model.model
        self.model = model
        self.nested = {}
        self.layers = _leaf_layers(model, self.nested)
        self.kernel_layers = [layer for layer in self.layers if has_kernel(layer)]
        self._wiring = None
        self._channels = {}

    def __repr__(self):
        return (
            f"ModelGraph({self.model.name!r}, {len(self.layers)} layers, "
            f"{len(self.kernel_layers)} with a kernel)"
        )

    def expand_names(self, names, argument="exclude"):
        """The leaf-layer names `names` stand for: a nested model's name stands
        for all its layers. Pruning's entry point, which finds layers by name:
        raises a ValueError naming the names that match nothing, or a name
        that two leaf layers share."""
        names = [names] if isinstance(names, str) else list(names or ())
        inside = {layer.name: owner for owner, leaves in self.nested.items() for layer in leaves}
        seen = set()
        for layer in self.layers:
            if layer.name in seen:  # masks and exclusions are keyed by name
                where = f"inside {inside[layer.name]!r}" if layer.name in inside else "at the top"
                raise ValueError(
                    f"Model {self.model.name!r} has two layers named {layer.name!r} (one "
                    f"{where}): pruning finds layers by name. Give them distinct names."
                )
            seen.add(layer.name)
        leaves = seen
        expanded, unknown = set(), []
        for name in names:
            if name in leaves and name in self.nested:
                raise ValueError(
                    f"`{argument}` name {name!r} is both a nested model and a layer of "
                    "another one. Give them distinct names."
                )
            if name in leaves:
                expanded.add(name)
            elif name in self.nested:
                expanded.update(layer.name for layer in self.nested[name])
            else:
                unknown.append(name)
        if unknown:
            raise ValueError(
                f"`{argument}` names no layer of the model. Received: {sorted(unknown)}"
            )
        return expanded

    def unit_axes(self):
        """`{id(variable): axes}` for every kernel whose units are not its last axis.

        See `unit_axes(layer)`; the optimizers' neuron noise reads it
        (keyed by the variable object: layer names may repeat in nested
        models).
        """
        axes = {}
        # Every layer the model tracks: wrapped (TimeDistributed) and inner
        # layers of a custom layer too, whose kernels the optimizer also sees.
        flatten = getattr(self.model, "_flatten_layers", None)
        layers = list(flatten()) if flatten is not None else self.layers
        for layer in layers:
            for attribute, unit in unit_axes(layer).items():
                variable = getattr(layer, attribute, None)
                if unit != (-1,) and variable is not None and len(variable.shape) >= 2:
                    axes[id(variable)] = unit
        return axes

    @property
    def chain(self):
        """The layers in order if the model is one chain, else `None`."""
        model = self.model
        layers = [
            layer
            for layer in getattr(model, "layers", [])
            if not isinstance(layer, keras.layers.InputLayer)
        ]
        if isinstance(model, keras.Sequential):
            return layers
        try:
            if len(model.inputs) != 1 or len(model.outputs) != 1:
                return None
            previous = model.inputs[0]
            for layer in layers:
                if layer.input is not previous:
                    return None
                previous = layer.output
        except (AttributeError, ValueError):
            return None
        return layers

    def following(self, layer):
        """The layers after `layer` up to and including the next kernel layer.

        Empty when the model is not a single chain or `layer` is its last.
        """
        layers = self.chain
        if layers is None or layer not in layers:
            return []
        out = []
        for nxt in layers[layers.index(layer) + 1 :]:
            out.append(nxt)
            if has_kernel(nxt):
                break
        return out

    def next_kernel_layer(self, layer):
        """The kernel layer that consumes `layer`'s units in a chain, or `None`."""
        after = self.following(layer)
        return after[-1] if after and has_kernel(after[-1]) else None

    @property
    def wiring(self):
        """How the layers connect: `(steps, input keys, output keys)`.

        Each step is `(layer, input keys, output tensors, output keys)`; a
        key names a tensor. A Sequential model is a chain by definition (a
        reloaded one may hold layers called more than once, so its tensors
        are not trusted); a functional model's keys are its tensors' ids.
        """
        if self._wiring is None:
            self._wiring = self._wire()
        return self._wiring

    def _wire(self):
        model = self.model
        if not isinstance(model, keras.Sequential) and getattr(model, "inputs", None) is None:
            raise ValueError(
                f"Model {model.name!r} is a subclassed model: how its layers connect "
                "lives in its Python `call`, which the channel graph cannot read. "
                "Build the same layers as a functional model (`keras.Model(inputs, "
                "outputs)`) or a `keras.Sequential` to prune channels or shrink it."
            )
        layers = [
            layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
        ]
        if isinstance(model, keras.Sequential):
            steps = [(layer, [i], [layer.output], [i + 1]) for i, layer in enumerate(layers)]
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

    def channels(self, exclude=None, values=False):
        """The channel dependency graph (`channels.ChannelGraph`).

        Args:
            exclude: names of producer layers whose units stay (a nested
                model's name: all its layers). Defaults to `None`.
            values: also read the weights to find the channels every producer
                reads as exactly zero (what `shrink` needs); such a graph
                reflects the weights now and is not cached. Defaults to
                `False`: the structure only, built once per `exclude`.

        Returns:
            A finished `ChannelGraph`.
        """
        exclude = frozenset(self.expand_names(exclude))
        if values:
            return channels.build(self.model, self.wiring, exclude, values=True)
        if exclude not in self._channels:
            self._channels[exclude] = channels.build(
                self.model, self.wiring, exclude, values=False
            )
        return self._channels[exclude]

    @property
    def groups(self):
        """The channel groups `prune(structure="neuron")` removes together."""
        return self.channels().groups

    @property
    def output_layers(self):
        """The kernel layers whose units are the model's outputs.

        On a Keras 3 model, the producers whose channels reach an output
        unchanged (through activations, BatchNormalization, ...): one per
        head of a multi-output model. Elsewhere, the last kernel layer.
        """
        if not self.kernel_layers:
            return []
        if not isinstance(self.model, keras.Model):
            return [self.kernel_layers[-1]]
        graph = self.channels()
        outputs = {
            member.layer.name
            for member in graph.members
            if member.role == "out"
            and any(
                channels.OUTPUT_REASON in graph.reasons[c]
                for c in np.unique(graph.component[member.nodes])
            )
        }
        return [layer for layer in self.kernel_layers if layer.name in outputs]

    def noise_free_layers(self):
        """The layers the paper keeps noise-free: the output layers and the first conv.

        Wan et al. (2024) perturb every weight matrix except the classifier's
        and the first convolution's; the same layers are left out of pruning.
        """
        if not self.kernel_layers:
            raise ValueError(f"Model {self.model.name!r} has no layer with a kernel.")
        chosen = list(self.output_layers) or [self.kernel_layers[-1]]
        convs = [layer for layer in self.kernel_layers if len(layer.kernel.shape) > 2]
        if convs and convs[0] not in chosen:
            chosen.insert(0, convs[0])
        return chosen

    def non_finite_layer(self):
        """The name of the first layer holding a NaN or inf weight, or `None`."""
        for layer in self.layers:
            for weight in layer.weights:
                if not np.all(np.isfinite(as_array(weight))):
                    return layer.name
        return None

    def weight_sparsity(self):
        """Fraction of zero entries over all kernels (0.0 without any)."""
        kernels = [as_array(layer.kernel) for layer in self.kernel_layers]
        total = sum(k.size for k in kernels)
        return float(sum(np.sum(k == 0) for k in kernels) / total) if total else 0.0


def model_graph(model):
    """`model` itself if it is a `ModelGraph`, else a new one built on it."""
    return model if isinstance(model, ModelGraph) else ModelGraph(model)


def channel_groups(model, exclude=None):
    """The groups of channels that `prune(structure="neuron")` removes together.

    Args:
        model: a built Keras 3 model (not modified), or its `ModelGraph`.
        exclude: names of producer layers whose units stay.
            Defaults to `None`.

    Returns:
        A list of `ChannelGroup`; frozen ones name the layer that froze them.

    Example:

    >>> for group in channel_groups(model):  # doctest: +SKIP
    ...     print(group)
    """
    return model_graph(model).channels(exclude).groups
