"""Accuracy under pruning: pruning curves and the iso-accuracy point.

How much of a trained classifier one-shot pruning can remove: accuracy at
each ratio (`pruning_curve`), and the largest ratio that keeps a target
accuracy (`iso_accuracy_ratio`, a bisection on a validation split).
"""

import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail import metrics
from keras_heavytail.pruning.inputs import check_data
from keras_heavytail.pruning.one_shot import copy_model
from keras_heavytail.pruning.one_shot import pruning_masks
from keras_heavytail.pruning.zeroing import apply_masks


def _checked(model, x, y, from_logits=False):
    """`(x, y)` checked as `compress` checks its data (`inputs.check_data`)."""
    if not isinstance(from_logits, bool):
        raise ValueError(f"`from_logits` must be True or False. Received: {from_logits!r}")
    classes = int(model.outputs[0].shape[-1])
    if classes < 2:
        raise ValueError(
            "Accuracy here is the argmax over one output per class: give a model "
            f"with two or more outputs. Received: {classes} output(s)"
        )
    return check_data((x, y), "(x, y)", classes)


def pruning_curve(
    model,
    x,
    y,
    ratios=defaults.CURVE_RATIOS,
    structure="neuron",
    scope="layer",
    score="magnitude",
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
    x, y = _checked(model, x, y, from_logits)
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
        outputs = metrics.predict(work, x, batch_size)
        loss, accuracy = metrics.loss_and_accuracy(outputs, y, from_logits)
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
    score="magnitude",
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
            `"magnitude"`, `"layer"`.
        steps: halvings of the bisection. Defaults to `10`.
        batch_size: for prediction. Defaults to `256`.

    Returns:
        A float in [0, 1): the ratio.
    """
    target_accuracy = checks.check_fraction(target_accuracy, "target_accuracy")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int. Received: steps={steps!r}")
    x, y = _checked(model, x, y)
    work = copy_model(model)
    original = model.get_weights()

    def passes(ratio):
        work.set_weights(original)
        apply_masks(work, pruning_masks(model, ratio, structure, scope, score=score))
        outputs = metrics.predict(work, x, batch_size)
        if outputs.ndim != 2 or outputs.shape[-1] < 2:
            raise ValueError(
                "The iso-accuracy point takes the argmax over one output per class: "
                "give a model with two or more outputs. Received: outputs of shape "
                f"{outputs.shape}"
            )
        return float(np.mean(np.argmax(outputs, -1) == y)) >= target_accuracy

    return bisect_ratio(passes, steps)
