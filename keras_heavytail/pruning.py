"""Pruning Keras 3 models: one-shot magnitude pruning, pruning curves, shrink.

tfmot cannot touch Keras 3 models; these functions work on Sequential and
functional Keras 3 models and never mutate their input.

The unit of structured pruning is the paper's: an output unit of a Dense
layer (a column of its kernel) or a filter of a convolution (the last axis of
its kernel), scored by the l2 norm of its incoming weights.
"""

import keras
import numpy as np

from keras_heavytail import compressibility
from keras_heavytail.compressibility import as_array

STRUCTURES = ("entry", "neuron")
SCOPES = ("layer", "global")
SCORES = ("norm", "path")

_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Dropout,
    keras.layers.BatchNormalization,
)
_SPATIAL = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling1D,
    keras.layers.AveragePooling1D,
)
_TO_FEATURES = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalMaxPooling1D,
)
_WEIGHTED = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D)


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def prunable_layers(model, exclude=None, include_output=False):
    """Layers that pruning may touch: every kernel layer but the output layer.

    Args:
        model: a Keras model.
        exclude: names of more layers to leave alone. Defaults to `None`.
        include_output: prune the output layer too (entries only: its units
            are the model's outputs). Defaults to `False`, as in the paper.

    Returns:
        A list of layers.
    """
    layers = compressibility.kernel_layers(model)
    exclude = set(exclude or [])
    unknown = exclude - {layer.name for layer in layers}
    if unknown:
        raise ValueError(
            f"`exclude` names no kernel layer of the model. Received: {sorted(unknown)}"
        )
    candidates = layers if include_output else layers[:-1]
    chosen = [layer for layer in candidates if layer.name not in exclude]
    if not chosen:
        raise ValueError(
            f"Model {model.name!r} has no prunable layer: pruning leaves the output "
            f"layer alone, and the kernel layers are {[layer.name for layer in layers]}, "
            f"excluded {sorted(exclude)}."
        )
    return chosen


def _following(model, layer):
    """The layers after `layer` up to and including the next kernel layer."""
    layers = _chain(model, strict=False)
    if layers is None:
        return []
    start = layers.index(layer) + 1
    out = []
    for nxt in layers[start:]:
        out.append(nxt)
        if getattr(nxt, "kernel", None) is not None:
            break
    return out


def _outgoing_norms(model, layer):
    """l2 norm of each unit's outgoing weights in the next kernel layer."""
    following = _following(model, layer)
    units = layer.kernel.shape[-1]
    if not following or getattr(following[-1], "kernel", None) is None:
        raise ValueError(
            f"`score='path'` needs a kernel layer after {layer.name!r} in a linear chain."
        )
    kernel = as_array(following[-1].kernel, "float64")
    if kernel.ndim > 2:  # a convolution: input channels are axis -2
        return np.sqrt(
            np.sum(np.moveaxis(kernel, -2, 0).reshape(units, -1) ** 2, axis=1)
        )
    rows = kernel.reshape(-1, units, kernel.shape[-1])  # (positions, units, out)
    return np.sqrt(np.sum(rows**2, axis=(0, 2)))


def neuron_scores(model, layer, score="norm"):
    """Per-unit importance: incoming norm, or incoming times outgoing norm."""
    _check_choice(score, "score", SCORES)
    norms = compressibility.neuron_norms(layer.kernel)
    if score == "path":
        norms = norms * _outgoing_norms(model, layer)
    return norms


def _check_ratio(ratio):
    return compressibility._check_fraction(ratio, "ratio")


def _lowest(scores, count):
    """Boolean mask of the `count` lowest scores (stable order on ties)."""
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(scores, kind="stable")[:count]] = True
    return mask


def pruning_masks(
    model,
    ratio=None,
    structure="entry",
    scope="layer",
    exclude=None,
    criterion=None,
    max_rel_sq_error=0.1,
    score="norm",
    include_output=False,
):
    """Which weights `prune` zeroes: `{layer name: kept-mask}`.

    Entry masks have the kernel's shape; neuron masks are one boolean per unit.
    Arguments are those of `prune`.
    """
    _check_choice(structure, "structure", STRUCTURES)
    _check_choice(scope, "scope", SCOPES)
    if include_output and (structure != "entry" or criterion is not None):
        raise ValueError(
            "`include_output=True` prunes the output layer's entries only; its units "
            f"are the model's outputs. Received: structure={structure!r}, "
            f"criterion={criterion!r}"
        )
    layers = prunable_layers(model, exclude, include_output)
    if criterion is not None:
        if criterion != "paper":
            raise ValueError(
                f"`criterion` must be 'paper' or None. Received: criterion={criterion!r}"
            )
        return {
            layer.name: ~_lowest(
                compressibility.neuron_norms(layer.kernel),
                compressibility.prunable_neuron_count(layer.kernel, max_rel_sq_error),
            )
            for layer in layers
        }
    if ratio is None:
        raise ValueError("Give `ratio` (a fraction in [0, 1]) or `criterion='paper'`.")
    ratio = _check_ratio(ratio)
    if structure == "entry":
        scores = [np.abs(as_array(layer.kernel)).ravel() for layer in layers]
    else:
        scores = [neuron_scores(model, layer, score) for layer in layers]
    if scope == "layer":
        masks = [~_lowest(s, int(round(ratio * s.size))) for s in scores]
    else:
        pooled = np.concatenate(scores)
        kept = ~_lowest(pooled, int(round(ratio * pooled.size)))
        masks = np.split(kept, np.cumsum([s.size for s in scores])[:-1])
    if structure == "entry":
        masks = [m.reshape(layer.kernel.shape) for m, layer in zip(masks, layers)]
    return {layer.name: mask for layer, mask in zip(layers, masks)}


def _copy(model):
    try:
        clone = keras.models.clone_model(model)
    except Exception as error:  # subclassed models cannot be cloned
        raise ValueError(
            f"Cannot copy model {model.name!r} for pruning ({error}). "
            "Use a Sequential or functional model."
        ) from error
    clone.set_weights(model.get_weights())
    return clone


def apply_masks(model, masks):
    """Zeroes, in place, what `masks` (from `pruning_masks`) says to drop.

    A pruned unit loses its incoming weights, its bias and the scale and shift
    of a BatchNormalization that follows it, so its output is exactly zero
    and `shrink` can remove it.
    """
    by_name = {layer.name: layer for layer in compressibility.kernel_layers(model)}
    for name, mask in masks.items():
        layer = by_name[name]
        kernel = as_array(layer.kernel)
        if mask.shape == kernel.shape:
            layer.kernel.assign(kernel * mask)
            continue
        layer.kernel.assign(kernel * mask)  # broadcasts over the last axis
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(as_array(layer.bias) * mask)
        for nxt in _following(model, layer):
            if isinstance(nxt, keras.layers.BatchNormalization):
                for weight in (nxt.gamma, nxt.beta):
                    if weight is not None:
                        weight.assign(as_array(weight) * mask)
            if not isinstance(nxt, _ELEMENTWISE + _SPATIAL):
                break
    return model


def prune(
    model,
    ratio=None,
    structure="entry",
    scope="layer",
    exclude=None,
    criterion=None,
    max_rel_sq_error=0.1,
    score="norm",
    include_output=False,
):
    """One-shot magnitude pruning; returns a pruned copy of `model`.

    - `structure="entry"` zeroes the smallest-magnitude kernel entries.
    - `structure="neuron"` zeroes whole units (Dense columns, Conv filters)
      with the lowest scores: `score="norm"` is the l2 norm of the incoming
      weights (the paper's), `score="path"` that norm times the norm of the
      unit's outgoing weights (its scale in a ReLU network).
    - `scope="layer"` prunes `ratio` of every layer; `"global"` ranks the
      scores of all prunable layers together.
    - `criterion="paper"` prunes, per layer, the most units whose squared
      norms stay within `max_rel_sq_error` of the layer's (Wan et al., 2024).

    The output layer is left alone, as in the paper (`include_output=True`
    prunes its entries too, for the smallest file); `exclude` names more.

    Args:
        model: a Sequential or functional Keras 3 model (not modified).
        ratio: fraction in [0, 1] to prune. Defaults to `None`.
        structure: `"entry"` or `"neuron"`. Defaults to `"entry"`.
        scope: `"layer"` or `"global"`. Defaults to `"layer"`.
        exclude: layer names to leave alone. Defaults to `None`.
        criterion: `None` or `"paper"`. Defaults to `None`.
        max_rel_sq_error: the paper criterion's budget. Defaults to `0.1`.
        score: `"norm"` or `"path"`. Defaults to `"norm"`.
        include_output: also prune the output layer's entries (only with
            `structure="entry"`). Defaults to `False`.

    Returns:
        A new model with the same architecture and pruned weights.

    Example:

    >>> pruned = prune(model, 0.7, structure="neuron")  # doctest: +SKIP
    >>> small = shrink(pruned)  # doctest: +SKIP

    References:
        - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
    """
    masks = pruning_masks(
        model,
        ratio,
        structure,
        scope,
        exclude,
        criterion,
        max_rel_sq_error,
        score,
        include_output,
    )
    return apply_masks(_copy(model), masks)


def _scores_for_evaluation(model, x, y, batch_size):
    logits = np.asarray(
        model.predict(x, batch_size=batch_size, verbose=0), dtype="float64"
    )
    y = np.asarray(y).astype("int64").ravel()
    is_probability = np.all(logits >= 0) and np.allclose(logits.sum(-1), 1.0, atol=1e-3)
    if is_probability:
        log_p = np.log(np.clip(logits, 1e-12, 1.0))
    else:
        shifted = logits - logits.max(-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    loss = float(-np.mean(log_p[np.arange(y.size), y]))
    accuracy = float(np.mean(np.argmax(logits, -1) == y))
    return loss, accuracy


def pruning_curve(
    model,
    x,
    y,
    ratios=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    structure="neuron",
    scope="layer",
    score="norm",
    exclude=None,
    batch_size=256,
):
    """Loss and accuracy after one-shot pruning at each ratio (no fine-tuning).

    Args:
        model: a classifier whose outputs are logits or probabilities.
        x: inputs. Defaults to none; required.
        y: integer labels. Defaults to none; required.
        ratios: fractions to prune. Defaults to 0, 0.1, ..., 0.9.
        structure, scope, score, exclude: as in `prune`.
        batch_size: for prediction. Defaults to `256`.

    Returns:
        A list of dicts with `ratio`, `remaining_parameters`, `loss`,
        `accuracy`, one per ratio.
    """
    work = _copy(model)
    original = model.get_weights()
    total = model.count_params()
    rows = []
    for ratio in ratios:
        masks = pruning_masks(model, ratio, structure, scope, exclude, score=score)
        work.set_weights(original)
        apply_masks(work, masks)
        zeroed = sum(
            int(np.sum(a == 0) - np.sum(b == 0))
            for a, b in zip(work.get_weights(), original)
        )
        loss, accuracy = _scores_for_evaluation(work, x, y, batch_size)
        rows.append(
            {
                "ratio": float(ratio),
                "remaining_parameters": total - zeroed,
                "loss": loss,
                "accuracy": accuracy,
            }
        )
    return rows


def _chain(model, strict=True):
    """The layers of a Sequential or single-path functional model, in order."""
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
            f"`shrink` supports Sequential models and single-path functional models. "
            f"Model {model.name!r} is not a single chain of layers."
        )
    return None
