"""One-shot pruning of Keras 3 models: masks, zeroing, the pruned copy.

tfmot cannot touch Keras 3 models; these functions work on Sequential and
functional Keras 3 models on every backend and never mutate their input.

`structure="entry"` zeroes single kernel weights. `structure="neuron"`
zeroes channel groups (`ModelGraph.channels`): a Dense unit or a filter and
every layer slice tied to it (residual additions, concatenations, depthwise
and BatchNormalization channels), ranked by an importance criterion
(`importance`); on a chain every group is one layer and this is the paper's
per-unit pruning.
"""

import warnings

import keras
import numpy as np

from keras_heavytail import checks
from keras_heavytail import compressibility
from keras_heavytail import defaults
from keras_heavytail.arrays import as_array
from keras_heavytail.pruning import batch_norm
from keras_heavytail.pruning import importance as importance_lib
from keras_heavytail.pruning.components import copy_layer
from keras_heavytail.pruning.graph import has_kernel
from keras_heavytail.pruning.graph import model_graph
from keras_heavytail.pruning.zeroing import apply_masks  # noqa: F401  public here too


def prunable_layers(model, exclude=None, include_output=False):
    """Layers that pruning may touch: every kernel layer but the output layers.

    Args:
        model: a Keras model, or its `ModelGraph`.
        exclude: names of more layers to leave alone (a nested model's
            name: all its layers). Defaults to `None`.
        include_output: prune the output layers too (entries only: their
            units are the model's outputs). Defaults to `False`, as in the
            paper.

    Returns:
        A list of layers.
    """
    graph = model_graph(model)
    layers = graph.kernel_layers
    exclude = _excluded(graph, exclude)
    outputs = [] if include_output else graph.output_layers or layers[-1:]
    chosen = [
        layer for layer in layers if layer not in outputs and layer.name not in exclude
    ]
    others = [
        f"{layer.name!r} ({type(layer).__name__})"
        for layer in graph.layers
        if not has_kernel(layer) and layer.name not in exclude
        and any(len(w.shape) >= 2 for w in layer.trainable_weights)
    ]  # fmt: skip
    if not chosen:
        raise ValueError(
            f"Model {graph.model.name!r} has no prunable layer: pruning leaves the "
            f"output layers alone, and the kernel layers are "
            f"{[layer.name for layer in layers]}, excluded {sorted(exclude)}"
            + (f"; {', '.join(others)} hold several kernels, which it does not prune"
               if others else "")
            + ("; its layers are not built yet (a subclassed model gets its weights "
               "when first called): call it on a batch, `model(x[:1])`, first"
               if not layers and not all(la.built for la in graph.layers) else "")
            + "."
        )
    if others:
        warnings.warn(
            f"prune leaves {', '.join(others)} dense: it prunes layers with one "
            "kernel (Dense, convolutions), not separable convolutions, recurrent "
            "cells or embeddings. Pass them in `exclude` to silence this.",
            UserWarning,
            stacklevel=3,
        )
    return chosen


def _excluded(graph, exclude):
    """The leaf-layer names `exclude` stands for (a nested model: its layers);
    raises a ValueError if a name matches nothing."""
    return graph.expand_names(_names(exclude, "exclude"))


def _warn_left_dense(graph, structure, excluded):
    """Warns of layers with kernels that channel pruning cannot reach."""
    members = {member.layer.name for member in structure.members}
    inside = {layer.name: name for name, leaves in graph.nested.items() for layer in leaves}
    left = [
        f"{layer.name!r} ({type(layer).__name__}"
        + (f", inside {inside[layer.name]!r})" if layer.name in inside else ")")
        for layer in graph.layers
        if layer.name not in members and layer.name not in excluded
        and any(len(w.shape) >= 2 for w in layer.trainable_weights)
    ]  # fmt: skip
    if left:
        warnings.warn(
            f"prune leaves {', '.join(left)} dense: channel pruning follows the "
            "channels of the model's own Dense and convolution layers, not those "
            "of recurrent cells, embeddings, grouped or channels_first "
            "convolutions, or layers of a nested model (build it flat to prune "
            "those). Pass them in `exclude` to silence this.",
            UserWarning,
            stacklevel=4,
        )


def _names(value, name):
    """A list of layer names (a single string is one name, not characters)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"`{name}` must be layer names (strings). Received: {name}={value!r}"
        )
    return names


def _criterion_masks(layers, criterion, max_rel_sq_error):
    if criterion != "paper":
        raise ValueError(
            f"`criterion` must be 'paper' or None. Received: criterion={criterion!r}"
        )
    depthwise = [la.name for la in layers if type(la).__name__.startswith("DepthwiseConv")]
    if depthwise:
        raise ValueError(
            "criterion='paper' removes units of Dense and convolution layers; a "
            "depthwise convolution's channels are its input's, removed with them. "
            f"Pass exclude={depthwise!r}, or prune channels with a ratio."
        )
    masks = {}
    for layer in layers:  # units: output channels (transposed convolutions too)
        kernel = compressibility.units_last(layer, as_array(layer.kernel))
        masks[layer.name] = ~lowest(
            compressibility.neuron_norms(kernel),
            compressibility.prunable_neuron_count(kernel, max_rel_sq_error),
        )
    return masks


def pruning_masks(
    model,
    ratio=None,
    structure="entry",
    scope="layer",
    exclude=None,
    criterion=None,
    max_rel_sq_error=defaults.MAX_REL_SQ_ERROR,
    score="magnitude",
    include_output=False,
    gradients=None,
):
    """Which weights `prune` zeroes: `{layer name: kept-mask}`.

    Entry masks have the kernel's shape; neuron masks are one boolean per unit.
    Arguments are those of `prune`.
    """
    if structure == "filter":  # a convolution's units, as GradualPruning says
        structure = "neuron"
    checks.check_choice(structure, "structure", defaults.PRUNE_STRUCTURES)
    checks.check_choice(scope, "scope", defaults.PRUNE_SCOPES)
    score = importance_lib.check_importance(score)
    include_output = checks.check_bool(include_output, "include_output")
    if include_output and (structure != "entry" or criterion is not None):
        raise ValueError(
            "`include_output=True` prunes the output layer's entries only; its units "
            f"are the model's outputs. Received: structure={structure!r}, "
            f"criterion={criterion!r}"
        )
    graph = model_graph(model)
    diverged = graph.non_finite_layer()
    if diverged is not None:
        raise ValueError(
            f"Layer {diverged!r} has NaN or inf weights (the model diverged): "
            "pruning ranks weights by size and cannot rank those. Train again "
            "with a lower learning rate or sigma."
        )
    if structure == "neuron" and criterion is None:
        _excluded(graph, exclude)
        if ratio is None:
            raise ValueError("Give `ratio` (a fraction in [0, 1]) or `criterion='paper'`.")
        ratio = checks.check_fraction(ratio, "ratio")
        return group_masks(graph, ratio, scope, exclude, score, gradients)
    layers = prunable_layers(graph, exclude, include_output)
    if criterion is not None:
        if ratio is not None:
            raise ValueError(
                "Give `ratio` or `criterion='paper'`, not both: the criterion "
                f"chooses the ratio. Received: ratio={ratio!r}, criterion={criterion!r}"
            )
        return _criterion_masks(layers, criterion, max_rel_sq_error)
    if ratio is None:
        raise ValueError("Give `ratio` (a fraction in [0, 1]) or `criterion='paper'`.")
    ratio = checks.check_fraction(ratio, "ratio")
    if score != "magnitude":
        raise ValueError(
            "Entries are scored by magnitude; other scores rank channels "
            f"(`structure='neuron'`). Received: score={score!r}"
        )
    scores = [np.abs(as_array(layer.kernel)).ravel() for layer in layers]
    if scope == "layer":
        masks = [~lowest(s, int(round(ratio * s.size))) for s in scores]
    else:
        pooled = np.concatenate(scores)
        kept = ~lowest(pooled, int(round(ratio * pooled.size)))
        masks = np.split(kept, np.cumsum([s.size for s in scores])[:-1])
    masks = [m.reshape(layer.kernel.shape) for m, layer in zip(masks, layers)]
    return {layer.name: mask for layer, mask in zip(layers, masks)}


def prunable_groups(graph, exclude=None):
    """The channel groups of a `ModelGraph` that pruning may thin out."""
    excluded = _excluded(graph, exclude)
    structure = graph.channels(excluded)
    _warn_left_dense(graph, structure, excluded)
    groups = [group for group in structure.groups if group.prunable]
    if not groups:
        raise ValueError(
            f"Model {graph.model.name!r} has no prunable channel group: "
            f"{[repr(g) for g in structure.groups]}"
        )
    return structure, groups


def group_masks(model, ratio, scope="layer", exclude=None, score="magnitude",
                gradients=None, normalized=False, round_to=1,
                min_channels=0):  # fmt: skip
    """Unit masks `{producer name: kept}` that prune coupled channels together.

    Each prunable group loses `ratio` of its channels (`scope="layer"`; a
    sequence gives each prunable group its own ratio, in graph order), or
    all groups' channels are ranked together (`"global"`).

    Args:
        model: a Keras 3 model (not modified), or its `ModelGraph`.
        ratio: fraction in [0, 1] of channels to prune.
        scope: `"layer"` (per group) or `"global"`. Defaults to `"layer"`.
        exclude: producer names whose units stay. Defaults to `None`.
        score: an importance criterion (`importance`). Defaults to
            `"magnitude"`.
        gradients: for `score="taylor"`. Defaults to `None`.
        normalized: with `scope="global"`, divide each group's scores by
            their mean first, so groups of different scales compare.
            Defaults to `False` (the raw scores, as the paper ranks them).
        round_to: each group keeps a multiple of this many channels (8
            suits XNNPACK and int8 kernels), rounded up. Defaults to `1`.
        min_channels: each group keeps at least this many channels.
            Defaults to `0`.

    Returns:
        A dict of boolean arrays, one per unit of each producer.
    """
    checks.check_choice(scope, "scope", defaults.PRUNE_SCOPES)
    for name, value, low in (("round_to", round_to, 1), ("min_channels", min_channels, 0)):
        if not checks.is_integer(value) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}. Received: {name}={value!r}")
    structure, groups = prunable_groups(model_graph(model), exclude)
    if isinstance(ratio, (list, tuple, np.ndarray)) and scope == "layer":
        if len(ratio) != len(groups):
            raise ValueError(
                f"`ratio` as a list needs one ratio per prunable group ({len(groups)}). "
                f"Received: {len(ratio)} ratios"
            )
        ratio = [checks.check_fraction(r, "ratio") for r in ratio]
    else:
        ratio = checks.check_fraction(ratio, "ratio")
    scores = importance_lib.group_scores(structure, score, gradients)
    dropped = np.zeros(scores.size, dtype=bool)
    if scope == "layer":
        ratios = np.broadcast_to(np.asarray(ratio, dtype="float64"), (len(groups),))
        for group, group_ratio in zip(groups, ratios):
            s = scores[group.components]
            keep = _kept_count(s.size, s.size - int(round(group_ratio * s.size)),
                               round_to, min_channels)  # fmt: skip
            dropped[group.components] = lowest(s, s.size - keep)
    else:
        if normalized:
            scores = importance_lib.normalize(scores, groups)
        pooled = np.concatenate([group.components for group in groups])
        dropped[pooled] = lowest(scores[pooled], int(round(ratio * pooled.size)))
        if round_to > 1 or min_channels > 0:
            for group in groups:
                s = scores[group.components]
                kept = int(np.sum(~dropped[group.components]))
                keep = _kept_count(s.size, kept, round_to, min_channels)
                dropped[group.components] = lowest(s, s.size - keep)
    return unit_masks(structure, dropped)


def _kept_count(size, kept, round_to, min_channels):
    """`kept` rounded up to a multiple of `round_to`, at least `min_channels`."""
    kept = max(kept, min(min_channels, size))
    if round_to > 1 and kept % round_to:
        kept = min(size, kept + round_to - kept % round_to)
    return kept


def unit_masks(structure, dropped):
    """`{producer name: kept units}` from dropped channel components."""
    masks = {}
    for member in structure.members:
        components = structure.component[member.nodes]
        if member.role == "out" and not structure.frozen[components].all():
            masks[member.layer.name] = ~dropped[components]
    return masks


def lowest(scores, count):
    """Boolean mask of the `count` lowest scores (stable order on ties)."""
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(scores, kind="stable")[:count]] = True
    return mask


def copy_model(model):
    """A copy of a Sequential or functional Keras 3 model with its weights."""
    try:
        clone = keras.models.clone_model(model, clone_function=copy_layer)
    except Exception as error:  # subclassed models cannot be cloned
        raise ValueError(
            f"Cannot copy model {model.name!r} for pruning ({error}). "
            "Use a Sequential or functional model."
        ) from error
    clone.set_weights(model.get_weights())
    return clone


def prune(
    model,
    ratio=None,
    structure="entry",
    scope="layer",
    exclude=None,
    criterion=None,
    max_rel_sq_error=defaults.MAX_REL_SQ_ERROR,
    score="magnitude",
    include_output=False,
    gradients=None,
    batch_norm_data=None,
):
    """One-shot pruning; returns a pruned copy of `model`.

    - `structure="entry"` zeroes the smallest-magnitude kernel entries.
    - `structure="neuron"` zeroes whole channel groups (Dense units, Conv
      filters and every slice tied to them) with the lowest scores:
      `score="magnitude"` is the l2 norm of the incoming weights (the
      paper's), `"path"` that norm times the norm of the outgoing weights
      (a unit's scale in a ReLU network); `"l1"`, `"bn_scale"` and
      `"taylor"` are in `keras_heavytail.pruning.importance`.
    - `scope="layer"` prunes `ratio` of every group; `"global"` ranks the
      (normalised) scores of all prunable groups together.
    - `criterion="paper"` prunes, per layer, the most units whose squared
      norms stay within `max_rel_sq_error` of the layer's (Wan et al., 2024):
      whole units whatever `structure` says; `score` and `scope` do not apply.

    The output layer is left alone, as in the paper (`include_output=True`
    prunes its entries too, for the smallest file); `exclude` names more.

    One shot, without fine-tuning, channel pruning can cost most of a
    network's accuracy (a BatchNormalization CNN most: pass
    `batch_norm_data`): measure the pruned model, or use `compress`, which
    prunes in rounds and fine-tunes after each.

    Args:
        model: a Sequential or functional Keras 3 model (not modified), or
            its `ModelGraph`.
        ratio: fraction in [0, 1] to prune. Defaults to `None`.
        structure: `"entry"` or `"neuron"` (`"filter"` is the same: a
            convolution's units). Defaults to `"entry"`.
        scope: `"layer"` or `"global"`. Defaults to `"layer"`.
        exclude: layer names to leave alone (a nested model's name stands
            for all its layers). Defaults to `None`.
        criterion: `None` or `"paper"`. Defaults to `None`.
        max_rel_sq_error: the paper criterion's budget.
            Defaults to `defaults.MAX_REL_SQ_ERROR`.
        score: an importance criterion: `"magnitude"`, `"l1"`, `"path"`,
            `"bn_scale"` or `"taylor"` (release 0.2's `"norm"` is
            `"magnitude"`). Defaults to `"magnitude"`.
        include_output: also prune the output layer's entries (only with
            `structure="entry"`). Defaults to `False`.
        gradients: for `score="taylor"`, from
            `importance.taylor_gradients`. Defaults to `None`.
        batch_norm_data: training inputs on which every BatchNormalization
            re-estimates its moving statistics after pruning (20 batches
            are used). Defaults to `None`: with `structure="neuron"` on a
            model with BatchNormalization, a warning says the statistics
            are stale.

    Returns:
        A new model with the same architecture and pruned weights.

    Example:

    >>> pruned = prune(model, 0.7, structure="neuron")  # doctest: +SKIP
    >>> small = shrink(pruned)  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    copy = copy_model(model_graph(model).model)
    graph = model_graph(copy)  # one walk: scores and zeroing on the copy
    masks = pruning_masks(
        graph,
        ratio,
        structure=structure,
        scope=scope,
        exclude=exclude,
        criterion=criterion,
        max_rel_sq_error=max_rel_sq_error,
        score=score,
        include_output=include_output,
        gradients=gradients,
    )
    pruned = apply_masks(copy, masks, graph)
    if structure in ("neuron", "filter") or batch_norm_data is not None:
        batch_norm.after_pruning(graph, batch_norm_data)
    return pruned
