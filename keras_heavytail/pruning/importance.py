"""Importance criteria: one score per channel of a model graph.

A criterion takes a `ChannelGraph` (from `ModelGraph.channels`) and returns
one score per channel component (a channel and every layer slice tied to
it); the pruner removes the lowest. Built in:

- `"magnitude"`: the l2 norm of each producer's incoming weights for the
  unit, summed over the component's producers (the paper's criterion on a
  chain);
- `"l1"`: the same with the l1 norm;
- `"path"`: the magnitude times the l2 norm of the component's outgoing
  weights in every consumer (a unit's scale in a ReLU network);
- `"bn_scale"`: |gamma| of the BatchNormalization layers the channel passes,
  summed (Liu et al., 2017, network slimming); components without one fall
  back to their magnitude, rescaled to the BN scores' range;
- `"taylor"`: first-order Taylor, |sum of w * dL/dw| over the component's
  weights, accumulated over batches (Molchanov et al., 2019); needs
  `gradients` from `taylor_gradients`.

`normalize` divides each group's scores by their mean, so groups of
different sizes and scales compare in a global ranking.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    - [Liu et al., 2017](https://arxiv.org/abs/1708.06519)
    - [Molchanov et al., 2019](https://arxiv.org/abs/1906.10771)
"""

import warnings

import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail.arrays import as_array
from keras_heavytail.pruning.components import slot_sums
from keras_heavytail.pruning.graph import model_graph


def check_importance(importance):
    """Validates a criterion name (release 0.2's `"norm"` is `"magnitude"`)."""
    if importance == "norm":
        warnings.warn(
            "The score 'norm' is called 'magnitude' since keras-heavytail 0.3; "
            "'norm' goes in the next release.",
            DeprecationWarning,
            stacklevel=3,
        )
        return "magnitude"
    return checks.check_choice(importance, "importance", defaults.IMPORTANCES)


def _producer_sums(graph, member, p):
    total = 0.0
    for variable, axis, slots, kind in member.weights:
        if kind == "kernel":
            total = total + slot_sums(as_array(variable), axis, slots,
                                      member.nodes.size, power=p)  # fmt: skip
    return np.sqrt(total) if p == 2 else total


def _magnitude(graph, p=2, path=False):
    count = graph.frozen.size
    outgoing = np.zeros(count)
    if path:
        for member in graph.members:
            if member.role == "in":
                for variable, axis, slots, _ in member.weights:
                    sums = slot_sums(as_array(variable), axis, slots, member.nodes.size)
                    np.add.at(outgoing, graph.component[member.nodes], sums)
    scores = np.zeros(count)
    for member in graph.members:
        if member.role != "out":
            continue
        components = graph.component[member.nodes]
        unit = _producer_sums(graph, member, p)
        if path:
            unit = unit * np.sqrt(outgoing[components])
        np.add.at(scores, components, unit)
    return scores


def _bn_scale(graph):
    scores = np.zeros(graph.frozen.size)
    has_bn = np.zeros(graph.frozen.size, dtype=bool)
    for member in graph.members:
        if member.role != "channel" or type(member.layer).__name__ != "BatchNormalization":
            continue
        gamma = getattr(member.layer, "gamma", None)
        if gamma is None:
            continue
        components = graph.component[member.nodes]
        np.add.at(scores, components, np.abs(as_array(gamma, "float64")))
        has_bn[components] = True
    if not has_bn.all():
        fallback = _magnitude(graph)
        if has_bn.any() and fallback[~has_bn].max(initial=0) > 0:
            fallback = fallback * scores[has_bn].mean() / fallback[~has_bn].mean()
        scores[~has_bn] = fallback[~has_bn]
    return scores


def _taylor(graph, gradients):
    if gradients is None:
        raise ValueError(
            "`importance='taylor'` needs `gradients` (from `taylor_gradients`): the "
            "loss gradient of every weight, accumulated over batches."
        )
    if not isinstance(gradients, dict):
        raise ValueError(
            "`gradients` must be a dict {variable path: array} from "
            f"`taylor_gradients`. Received: {type(gradients).__name__}"
        )
    paths = {v.path for m in graph.members for v, *_ in m.weights}
    if not paths & set(gradients):
        raise ValueError(
            "`gradients` holds no weight of this model (keys are variable paths, "
            f"e.g. {sorted(paths)[:2]}). Received keys: {sorted(gradients)[:4]}"
        )
    scores = np.zeros(graph.frozen.size)
    for member in graph.members:
        if member.role == "in":
            continue  # a consumer's rows count for the channel it reads, below
        for variable, axis, slots, _ in member.weights:
            grad = gradients.get(variable.path)
            if grad is None:
                continue
            product = as_array(variable, "float64") * grad
            moved = np.moveaxis(product, axis, 0).reshape(product.shape[axis], -1)
            per_slot = np.bincount(slots, moved.sum(1), minlength=member.nodes.size)
            np.add.at(scores, graph.component[member.nodes], np.abs(per_slot))
    return scores


def group_scores(graph, importance="magnitude", gradients=None):
    """One score per channel component of a `ChannelGraph`.

    Args:
        graph: a `ChannelGraph` (from `ModelGraph.channels`).
        importance: `"magnitude"`, `"l1"`, `"path"`, `"bn_scale"` or
            `"taylor"`. Defaults to `"magnitude"`.
        gradients: for `"taylor"`, `{variable path: accumulated w * grad}`
            from `taylor_gradients`. Defaults to `None`.

    Returns:
        A float64 array indexed by component id.
    """
    importance = check_importance(importance)
    if importance == "magnitude":
        return _magnitude(graph)
    if importance == "l1":
        return _magnitude(graph, p=1)
    if importance == "path":
        return _magnitude(graph, path=True)
    if importance == "bn_scale":
        return _bn_scale(graph)
    return _taylor(graph, gradients)


def normalize(scores, groups):
    """Scores divided by their group's mean, so groups compare globally."""
    out = np.array(scores, dtype="float64")
    for group in groups:
        mean = out[group.components].mean() if group.components.size else 0.0
        if mean > 0:
            out[group.components] /= mean
    return out


def taylor_gradients(model, data, loss, batches=8):
    """`{variable path: sum over batches of dL/dw}`, for `importance="taylor"`.

    The gradient is taken on each batch with the model in inference mode; the
    criterion multiplies it by the weights and sums per channel.

    Args:
        model: a Keras 3 model.
        data: an iterable of `(x, y)` batches (a `tf.data.Dataset`, a list).
        loss: a Keras loss (object or name).
        batches: how many batches to use. Defaults to `8`.

    Returns:
        A dict of float64 arrays, one per trainable variable.
    """
    from keras_heavytail.pruning import gradients as gradients_lib

    return gradients_lib.accumulated_gradients(model, data, loss, batches)


def neuron_scores(model, layer, score="magnitude"):
    """Per-unit importance of one producer layer, from the channel graph.

    The scores `group_scores` gives the layer's channel components: on a
    chain, the l2 norm of each unit's incoming weights (`"magnitude"`, the
    paper's) or that times the l2 norm of its outgoing weights (`"path"`, a
    unit's scale in a ReLU network); where layers share channels (a residual
    addition), the group's summed score.

    Args:
        model: the Keras model `layer` belongs to (or its `ModelGraph`).
        layer: a producer layer (Dense, Conv, ...) of `model`.
        score: an importance criterion other than `"taylor"`.
            Defaults to `"magnitude"`.

    Returns:
        A float64 array with one score per unit.
    """
    score = check_importance(score)
    if score == "taylor":
        raise ValueError("`neuron_scores` takes no gradients: use `group_scores`.")
    structure = model_graph(model).channels()
    member = next(
        (m for m in structure.members if m.layer is layer and m.role == "out"), None
    )
    if member is None:
        raise ValueError(
            f"Layer {layer.name!r} makes no channels of the model (a Dense or Conv "
            "layer of it is needed)."
        )
    return group_scores(structure, score)[structure.component[member.nodes]]
