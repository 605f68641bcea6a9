"""One-shot magnitude pruning of Keras 3 models, pruning curves, iso-accuracy.

tfmot cannot touch Keras 3 models; these functions work on Sequential and
functional Keras 3 models on every backend and never mutate their input.

The unit of structured pruning is the paper's: an output unit of a Dense
layer (a column of its kernel) or a filter of a convolution (the last axis of
its kernel), scored by the l2 norm of its incoming weights (or, with
`score="path"`, that norm times the norm of its outgoing weights).
"""

import keras
import numpy as np

from keras_heavytail import channels
from keras_heavytail import compressibility
from keras_heavytail import defaults
from keras_heavytail import group_pruning
from keras_heavytail import topology
from keras_heavytail.graph import copy_layer
from keras_heavytail.topology import as_array


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
    layers = topology.kernel_layers(model)
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


def outgoing_norms(model, layer):
    """l2 norm of each unit's outgoing weights in the next kernel layer."""
    consumer = topology.next_kernel_layer(model, layer)
    units = layer.kernel.shape[-1]
    if consumer is None:
        raise ValueError(
            f"`score='path'` needs a kernel layer after {layer.name!r} in a linear chain."
        )
    kernel = as_array(consumer.kernel, "float64")
    if kernel.ndim > 2:  # a convolution: input channels are axis -2
        return np.sqrt(
            np.sum(np.moveaxis(kernel, -2, 0).reshape(units, -1) ** 2, axis=1)
        )
    rows = kernel.reshape(-1, units, kernel.shape[-1])  # (positions, units, out)
    return np.sqrt(np.sum(rows**2, axis=(0, 2)))


def neuron_scores(model, layer, score="norm"):
    """Per-unit importance: incoming norm, or incoming times outgoing norm.

    Args:
        model: the Keras model `layer` belongs to.
        layer: a kernel layer of `model`.
        score: `"norm"` (incoming l2 norm, the paper's) or `"path"` (times
            the outgoing l2 norm: a unit's scale in a ReLU network).
            Defaults to `"norm"`.

    Returns:
        A float64 array with one score per unit.
    """
    _check_choice(score, "score", defaults.PRUNE_SCORES)
    norms = compressibility.neuron_norms(layer.kernel)
    if score == "path":
        norms = norms * outgoing_norms(model, layer)
    return norms


def _criterion_masks(layers, criterion, max_rel_sq_error):
    if criterion != "paper":
        raise ValueError(
            f"`criterion` must be 'paper' or None. Received: criterion={criterion!r}"
        )
    return {
        layer.name: ~group_pruning.lowest(
            compressibility.neuron_norms(layer.kernel),
            compressibility.prunable_neuron_count(layer.kernel, max_rel_sq_error),
        )
        for layer in layers
    }


def pruning_masks(
    model,
    ratio=None,
    structure="entry",
    scope="layer",
    exclude=None,
    criterion=None,
    max_rel_sq_error=defaults.MAX_REL_SQ_ERROR,
    score="norm",
    include_output=False,
):
    """Which weights `prune` zeroes: `{layer name: kept-mask}`.

    Entry masks have the kernel's shape; neuron masks are one boolean per unit.
    Arguments are those of `prune`.
    """
    _check_choice(structure, "structure", defaults.PRUNE_STRUCTURES)
    _check_choice(scope, "scope", defaults.PRUNE_SCOPES)
    if include_output and (structure != "entry" or criterion is not None):
        raise ValueError(
            "`include_output=True` prunes the output layer's entries only; its units "
            f"are the model's outputs. Received: structure={structure!r}, "
            f"criterion={criterion!r}"
        )
    layers = prunable_layers(model, exclude, include_output)
    if criterion is not None:
        return _criterion_masks(layers, criterion, max_rel_sq_error)
    if ratio is None:
        raise ValueError("Give `ratio` (a fraction in [0, 1]) or `criterion='paper'`.")
    ratio = compressibility.check_fraction(ratio, "ratio")
    if structure == "neuron":
        _check_choice(score, "score", defaults.PRUNE_SCORES)
        return group_pruning.group_masks(model, ratio, scope, exclude, score)
    scores = [np.abs(as_array(layer.kernel)).ravel() for layer in layers]
    if scope == "layer":
        masks = [~group_pruning.lowest(s, int(round(ratio * s.size))) for s in scores]
    else:
        pooled = np.concatenate(scores)
        kept = ~group_pruning.lowest(pooled, int(round(ratio * pooled.size)))
        masks = np.split(kept, np.cumsum([s.size for s in scores])[:-1])
    masks = [m.reshape(layer.kernel.shape) for m, layer in zip(masks, layers)]
    return {layer.name: mask for layer, mask in zip(layers, masks)}


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


def apply_masks(model, masks):
    """Zeroes, in place, what `masks` (from `pruning_masks`) says to drop.

    An entry mask has the kernel's shape. A unit mask drops units of a
    producer (Dense, Conv, ...): their incoming weights and biases; when
    every producer of a channel component (`channels.channel_graph`) drops
    it, the per-channel weights on its way (BatchNormalization scale and
    shift, depthwise kernels and biases) are zeroed too, so the channel is
    exactly zero everywhere and `shrink` can remove it.
    """
    by_name = {layer.name: layer for layer in topology.kernel_layers(model)}
    units = {}
    for name, mask in masks.items():
        layer = by_name.get(name) or model.get_layer(name)
        if isinstance(layer, channels.PRODUCERS) and np.ndim(mask) == 1:
            units[name] = np.asarray(mask, dtype=bool)
        else:  # an entry mask, or a unit mask of a kernel's last axis
            layer.kernel.assign(as_array(layer.kernel) * mask)
    if not units:
        return model
    return group_pruning.zero_units(model, units)


def prune(
    model,
    ratio=None,
    structure="entry",
    scope="layer",
    exclude=None,
    criterion=None,
    max_rel_sq_error=defaults.MAX_REL_SQ_ERROR,
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
        max_rel_sq_error: the paper criterion's budget.
            Defaults to `defaults.MAX_REL_SQ_ERROR`.
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
        structure=structure,
        scope=scope,
        exclude=exclude,
        criterion=criterion,
        max_rel_sq_error=max_rel_sq_error,
        score=score,
        include_output=include_output,
    )
    return apply_masks(copy_model(model), masks)


def pruning_curve(
    model,
    x,
    y,
    ratios=defaults.CURVE_RATIOS,
    structure="neuron",
    scope="layer",
    score="norm",
    exclude=None,
    batch_size=256,
    from_logits=False,
):
    """Loss and accuracy after one-shot pruning at each ratio (no fine-tuning).

    Args:
        model: a classifier. Defaults to none; required.
        x: inputs. Defaults to none; required.
        y: integer labels. Defaults to none; required.
        ratios: fractions to prune. Defaults to `defaults.CURVE_RATIOS`.
        structure, scope, score, exclude: as in `prune`.
        batch_size: for prediction. Defaults to `256`.
        from_logits: whether the model outputs logits (as in Keras losses);
            a model that outputs anything but probabilities needs `True`.
            Defaults to `False`.

    Returns:
        A list of dicts with `ratio`, `remaining_parameters`, `loss`,
        `accuracy`, one per ratio.
    """
    work = copy_model(model)
    original = model.get_weights()
    total = model.count_params()
    rows = []
    for ratio in ratios:
        masks = pruning_masks(
            model, ratio, structure, scope, exclude=exclude, score=score
        )
        work.set_weights(original)
        apply_masks(work, masks)
        zeroed = sum(
            int(np.sum(a == 0) - np.sum(b == 0))
            for a, b in zip(work.get_weights(), original)
        )
        outputs = work.predict(x, batch_size=batch_size, verbose=0)
        loss, accuracy = compressibility.loss_and_accuracy(outputs, y, from_logits)
        rows.append(
            {
                "ratio": float(ratio),
                "remaining_parameters": total - zeroed,
                "loss": loss,
                "accuracy": accuracy,
            }
        )
    return rows


def bisect_ratio(passes, steps=10):
    """The largest pruning ratio in [0, 1) at which `passes(ratio)` holds.

    Assumes `passes` holds up to some ratio and fails beyond it (accuracy
    falls as more is pruned): bisection keeps `lo` passing and `hi` failing
    (1.0, everything pruned, is taken to fail), and returns `lo` after
    `steps` halvings, within `2**-steps` of the threshold. Returns 0.0 if
    even a tiny ratio fails.

    Args:
        passes: callable `ratio -> bool`.
        steps: halvings. Defaults to `10`.

    Returns:
        A float in [0, 1).
    """
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return lo


def iso_accuracy_ratio(
    model,
    x,
    y,
    target_accuracy,
    structure="neuron",
    score="norm",
    scope="layer",
    steps=10,
    batch_size=256,
):
    """The largest one-shot pruning ratio whose accuracy stays >= a target.

    Bisects the pruning ratio (`bisect_ratio`) on `(x, y)`, which should be a
    validation split, never the test set. With a reference accuracy `a` and a
    tolerance `t`, `target_accuracy = a - t` gives the iso-accuracy point:
    the fewest units that keep the model within `t` of `a`.

    Args:
        model: a Keras 3 classifier (not modified). Defaults to none; required.
        x: validation inputs. Defaults to none; required.
        y: validation integer labels. Defaults to none; required.
        target_accuracy: the accuracy to keep, in [0, 1].
        structure, score, scope: as in `prune`. Default to `"neuron"`,
            `"norm"`, `"layer"`.
        steps: halvings of the bisection. Defaults to `10`.
        batch_size: for prediction. Defaults to `256`.

    Returns:
        A float in [0, 1): the ratio.
    """
    target_accuracy = compressibility.check_fraction(target_accuracy, "target_accuracy")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int. Received: steps={steps!r}")
    y = np.asarray(y).astype("int64").ravel()
    if len(y) == 0 or len(y) != len(x):
        raise ValueError(
            "`x` and `y` must hold the same number (> 0) of examples, one integer "
            f"label each. Received: {len(x)} inputs and {len(y)} labels"
        )
    work = copy_model(model)
    original = model.get_weights()

    def passes(ratio):
        work.set_weights(original)
        apply_masks(work, pruning_masks(model, ratio, structure, scope, score=score))
        outputs = work.predict(x, batch_size=batch_size, verbose=0)
        if outputs.ndim != 2 or outputs.shape[-1] < 2:
            raise ValueError(
                "The iso-accuracy point takes the argmax over one output per class: "
                "give a model with two or more outputs. Received: outputs of shape "
                f"{outputs.shape}"
            )
        return float(np.mean(np.argmax(outputs, -1) == y)) >= target_accuracy

    return bisect_ratio(passes, steps)
