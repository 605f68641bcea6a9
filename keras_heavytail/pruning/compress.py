"""`compress`: prune a Keras 3 model to a budget and keep its accuracy.

The loop Torch-Pruning's `MetaPruner` and Sony MCT's resource-driven pruning
run, for Keras 3 on every backend:

    target_i = cost(dense) * (budget / cost(dense)) ** (i / steps)
    for i in 1..steps:
        scores = importance(channel groups of the current model)
        model  = shrink(prune(model, the ratio whose cost meets target_i))
        recalibrate BatchNormalization statistics on training batches
        fine-tune (cross-entropy, or distillation from the dense model)

Each step removes channels physically, so later steps train a smaller model.
The cost is MACs or parameters (`count_macs`), or the int8 LiteRT file's
bytes or 1-thread latency, measured at the end (TensorFlow backend): those
two are steered by a proxy (parameters, MACs) and tightened until measured.
"""

import time
import warnings

import keras
import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults
from keras_heavytail import metrics
from keras_heavytail.pruning import importance as importance_lib
from keras_heavytail.pruning import search
from keras_heavytail.pruning.batch_norm import recalibrate_batch_norm
from keras_heavytail.pruning.budget import Budget
from keras_heavytail.pruning.budget import CompressResult
from keras_heavytail.pruning.checkpoints import RoundBackup
from keras_heavytail.pruning.checkpoints import array_digest
from keras_heavytail.pruning.checkpoints import fingerprint
from keras_heavytail.pruning.checkpoints import weights_digest
from keras_heavytail.pruning.distillation import DistillationLoss
from keras_heavytail.pruning.distillation import as_logits
from keras_heavytail.pruning.inputs import check_data


def _hand_back(small, dense):
    """`small` compiled as `dense` was (loss, metrics, a fresh optimizer), or
    uncompiled if `dense` was: never with the fine-tuning's packed-label loss."""
    if getattr(dense, "compiled", False):
        try:
            small.compile_from_config(dense.get_compile_config())
            return small
        except Exception:  # a custom loss or metric Keras cannot rebuild
            pass
    bare = keras.models.clone_model(small)
    bare.set_weights(small.get_weights())
    return bare


def _fine_tune(model, train, teacher_logits, config):
    x, y = train
    loss = DistillationLoss(
        temperature=config["temperature"],
        weight=config["distill"],
        from_logits=config["from_logits"],
    )
    optimizer = _fresh_optimizer(config["optimizer"], config["learning_rate"])
    model.compile(optimizer=optimizer, loss=loss)
    targets = np.concatenate([y.reshape(-1, 1).astype("float32"), teacher_logits], 1)
    model.fit(
        x, targets, batch_size=config["batch_size"], epochs=config["fine_tune_epochs"],
        verbose=0, shuffle=True,
    )  # fmt: skip


def _fresh_optimizer(optimizer, learning_rate):
    """A new optimizer for one round: from a callable, a name or an instance."""
    if optimizer is None:
        return keras.optimizers.Adam(learning_rate)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config(optimizer.get_config())
    if isinstance(optimizer, str):
        return keras.optimizers.get(optimizer)
    if callable(optimizer):
        return optimizer()
    raise ValueError(
        "`optimizer` must be None, an optimizer, its name or a callable returning "
        f"one. Received: optimizer={optimizer!r}"
    )


def _measure(model, kinds, x_calibration):
    """Bytes and latency of the int8 LiteRT file (TensorFlow backend only)."""
    measured = {}
    if not {"bytes", "latency_ms"} & set(kinds):
        return measured
    import os
    import tempfile

    from keras_heavytail.export import litert

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.tflite")
        litert.export_tflite(model, path, quantize="int8", sparse=False,
                             representative_data=x_calibration[:200])  # fmt: skip
        measured["bytes"] = os.path.getsize(path)
        if "latency_ms" in kinds:
            measured["latency_ms"] = litert.benchmark_tflite(path)["median_ms"]
    return measured


def compress(
    model,
    train_data,
    validation_data,
    budget,
    importance=defaults.COMPRESS_IMPORTANCE,
    scope="layer",
    round_to=1,
    min_channels=1,
    steps=defaults.COMPRESS_STEPS,
    fine_tune_epochs=defaults.COMPRESS_FINE_TUNE_EPOCHS,
    distill=defaults.COMPRESS_DISTILL,
    temperature=4.0,
    learning_rate=1e-3,
    optimizer=None,
    batch_size=defaults.BATCH_SIZE,
    exclude=None,
    from_logits=None,
    verbose=True,
    backup_dir=None,
):
    """Prunes channel groups until `budget` holds, fine-tuning as it goes.

    Args:
        model: a Sequential or functional Keras 3 classifier (not modified).
        train_data: `(x, y)` arrays for fine-tuning, BatchNormalization
            recalibration and (`importance="taylor"`) gradients, or a finite
            dataset of `(x, y)` batches (`tf.data.Dataset`,
            `keras.utils.PyDataset`, any iterable), read once into memory.
        validation_data: the same kinds; the accuracy reported.
        budget: a `Budget`, e.g. `Budget(macs=0.25)`.
        importance: `"bn_scale"` (a group's BatchNormalization scales, its
            magnitude where it has none), `"magnitude"`, `"l1"`, `"path"` or
            `"taylor"` (`keras_heavytail.pruning.importance`). Defaults to
            `"bn_scale"`: on MobileNetV2 (Fashion-MNIST, 1/4 of the MACs, 2
            seeds) it kept 3.6 points more than magnitude
            (`benchmarks/RESULTS.md` §10); without BatchNormalization the two
            are the same.
        scope: `"layer"` (each group loses the same fraction) or `"global"`
            (groups ranked together, scores normalised per group).
            Defaults to `"layer"`.
        round_to: channels kept per group are a multiple of this (8 suits
            XNNPACK and int8 kernels). Defaults to `1`.
        min_channels: channels every group keeps. Defaults to `1`.
        steps: prune-and-fine-tune rounds. Defaults to `3`
            (`defaults.COMPRESS_STEPS`).
        fine_tune_epochs: epochs of fine-tuning after each round (0 for
            none). Defaults to `2` (`defaults.COMPRESS_FINE_TUNE_EPOCHS`:
            one epoch cost MobileNetV2 2.3 points more, `benchmarks/RESULTS.md`
            §10.1).
        distill: weight of the distillation loss from the dense model (0 for
            plain cross-entropy; `benchmarks/RESULTS.md` §10 says why that is
            the default). Defaults to `0.0`.
        temperature: the distillation temperature. Defaults to `4.0`.
        learning_rate: Adam's learning rate when `optimizer` is `None`.
            Defaults to `1e-3`.
        optimizer: the optimizer of each round's fine-tuning: a Keras
            optimizer (copied fresh each round), its name, or a callable
            returning one. Defaults to `None` (Adam at `learning_rate`).
        batch_size: for fine-tuning and recalibration. Defaults to `64`
            (`defaults.BATCH_SIZE`).
        exclude: names of producer layers whose channels stay.
            Defaults to `None`.
        from_logits: whether the model outputs logits; `None` looks at its
            outputs on a batch. Defaults to `None`.
        verbose: print one line per round. Defaults to `True`.
        backup_dir: a folder where each finished round is saved; a rerun
            with the same model, data and arguments resumes after the last
            finished round, as `keras.callbacks.BackupAndRestore` does for
            epochs. Its files are deleted when `compress` returns. Defaults
            to `None` (no backups).

    Returns:
        A `CompressResult` (`model`, `cost`, `accuracy`, `summary()`, ...).

    Raises:
        ValueError: the budget cannot be met (the smallest model the graph
            allows is named) or an argument is out of range.

    Example:

    >>> result = compress(model, (x, y), (x_val, y_val), Budget(macs=0.25))  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    _check_arguments(budget, scope, distill, temperature, learning_rate,
                     {"round_to": round_to, "min_channels": min_channels, "steps": steps,
                      "fine_tune_epochs": fine_tune_epochs, "batch_size": batch_size})  # fmt: skip
    importance = importance_lib.check_importance(importance)
    if from_logits is not None:
        from_logits = checks.check_bool(from_logits, "from_logits")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "compress takes a classifier with one input and one output (logits or "
            f"probabilities). Received: {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs"
        )
    classes = int(model.outputs[0].shape[-1])
    x, y = check_data(train_data, "train_data", classes)
    x_val, y_val = check_data(validation_data, "validation_data", classes)
    start = time.perf_counter()
    dense_cost, dense, targets = _dense_and_targets(model, budget, x)
    options = {"score": importance, "scope": scope, "normalized": True,
               "round_to": round_to, "min_channels": min_channels,
               "exclude": exclude}  # fmt: skip
    proxy = _proxy_targets(targets, dense)
    search.check_reachable(model, proxy, options, asked=targets)
    outputs = keras.ops.convert_to_numpy(model(x[:batch_size]))
    if from_logits is None:
        from_logits = not (np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1, atol=1e-3))
    teacher = as_logits(metrics.predict(model, x, 256), from_logits)
    dense_accuracy = metrics.accuracy(model, x_val, y_val)
    if dense_accuracy <= 1 / classes + 0.05:
        warnings.warn(
            f"The model to compress scores {dense_accuracy:.4f} on the validation "
            f"data, about chance for {classes} classes: compressing an untrained "
            "model (or one whose BatchNormalization statistics lag: momentum 0.99 "
            "needs thousands of steps) measures nothing, and the fine-tuning "
            "rounds would train it. Train it first, or check the validation data.",
            stacklevel=2,
        )
    config = {"temperature": temperature, "distill": distill, "from_logits": from_logits,
              "optimizer": optimizer, "learning_rate": learning_rate,
              "batch_size": batch_size, "fine_tune_epochs": fine_tune_epochs}  # fmt: skip
    backup, current, points = _resume(backup_dir, model, (x, y, x_val, y_val), verbose, dict(
        budget=budget.get_config(), options=options, steps=steps,
        config={k: v for k, v in config.items() if k != "optimizer"},
        optimizer=optimizer if optimizer is None or isinstance(optimizer, str) else
        type(optimizer).__name__))  # fmt: skip
    run = {"options": options, "config": config, "train": (x, y), "backup": backup,
           "validation": (x_val, y_val), "teacher": teacher, "verbose": verbose}  # fmt: skip
    current, cost, values, points = _until_measured(
        current, targets, proxy, dense, max(steps - len(points), 0), run, points
    )
    if backup is not None:
        backup.delete()
    current = _hand_back(current, model)
    accuracy = metrics.accuracy(current, x_val, y_val)
    _warn_if_far(values, targets, round_to, accuracy, dense_accuracy)
    if verbose:
        print(f"compress: done in {time.perf_counter() - start:.0f} s", flush=True)
    return CompressResult(
        model=current, cost=cost, dense_cost=dense_cost, accuracy=accuracy,
        dense_accuracy=dense_accuracy,
        measured={"targets": targets, **values, "seconds": time.perf_counter() - start},
        points=points,
    )  # fmt: skip


def _dense_and_targets(model, budget, x):
    """The dense model's `ModelCost`, its costs (counted and measured) and the
    budget's absolute targets; warns when the model already meets them."""
    dense_cost, dense = search.costs(model)
    dense.update(_measure(model, budget.measured(), x))
    targets = budget.targets(dense)
    if all(dense[k] <= t for k, t in targets.items()):
        warnings.warn(
            f"The model already meets the budget ({ {k: dense[k] for k in targets} } <= "
            f"{targets}): nothing is pruned, the result is a fine-tuned copy. An "
            "absolute budget counts MACs, parameters, bytes or ms; a fraction is in "
            "(0, 1).",
            UserWarning,
            stacklevel=3,
        )
    return dense_cost, dense, targets


def _proxy_targets(targets, dense):
    """`{macs or params: absolute target}`: the counted costs that steer the
    budget, tightened where bytes or latency are steered by them."""
    proxy = {}
    for kind, target in targets.items():
        key = search.proxy_kind(kind)
        value = target if key == kind else dense[key] * target / dense[kind]
        proxy[key] = min(proxy.get(key, value), value)
    return proxy


def _warn_if_far(values, targets, round_to, accuracy, dense_accuracy):
    """Warns when the result lands far under its budget or far below the
    dense model's accuracy: both are worth a second call."""
    under = {k: values[k] / t for k, t in targets.items() if k in values and t > 0}
    if under and max(under.values()) < 0.8:
        warnings.warn(
            f"The compressed model uses only {max(under.values()):.2f}x of its budget "
            f"{ {k: round(t, 3) for k, t in targets.items()} }"
            + (
                f": with round_to={round_to} channel counts move in steps of "
                f"{round_to}, too coarse for this model. round_to=1 (or a smaller one) "
                "gets closer."
                if round_to > 1
                else ": the channel groups gave no finer step."
            ),
            stacklevel=3,
        )
    if dense_accuracy - accuracy > 0.05:
        warnings.warn(
            f"Validation accuracy fell from {dense_accuracy:.4f} to {accuracy:.4f}: "
            "more fine-tuning (`fine_tune_epochs`, `steps`), a larger budget or "
            "another `importance` may keep more. (`keras.utils.set_random_seed` "
            "makes a rerun repeat the fine-tuning.)",
            stacklevel=3,
        )


def _resume(backup_dir, model, data, verbose, settings):
    """`(backup, model, points)`: the round backup of this job (`None` without
    `backup_dir`), and the model and points to start from."""
    if backup_dir is None:
        return None, model, []
    key = fingerprint(**settings, weights=weights_digest(model), data=array_digest(*data))
    backup = RoundBackup(backup_dir, key)
    saved = backup.load()
    if saved is None:
        return backup, model, []
    if verbose:
        print(f"compress: resuming after round {len(saved[1])} from {backup_dir}", flush=True)
    return (backup, *saved)


INT32_MAX = 2**31 - 1


def _check_arguments(budget, scope, distill, temperature, learning_rate, counts):
    if not isinstance(budget, Budget):
        raise ValueError(f"`budget` must be a Budget. Received: budget={budget!r}")
    checks.check_choice(scope, "scope", defaults.PRUNE_SCOPES)
    for name, value in counts.items():
        low = 0 if name == "fine_tune_epochs" else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}. Received: {name}={value!r}")
        if value > INT32_MAX:  # a tensor shape or loop count beyond int32
            raise ValueError(
                f"`{name}` must be at most {INT32_MAX}. Received: {name}={value!r}"
            )
    checks.check_fraction(distill, "distill")
    checks.check_positive(temperature, "temperature")
    checks.check_positive(learning_rate, "learning_rate")
    if {"bytes", "latency_ms"} & set(budget.measured()):
        from keras_heavytail import lazy

        lazy.check_tensorflow("A bytes or latency_ms budget (measured in LiteRT)")


def _until_measured(model, targets, proxy, dense, steps, run, points):
    """Rounds until the measured costs meet `targets`; the proxy tightens
    (and one more round runs) while a measured bytes or latency misses."""
    current = model
    for _attempt in range(4):
        current, points = _rounds(current, proxy, dense, steps, run, points)
        cost, values = search.costs(current)
        values.update(_measure(current, list(targets), run["train"][0]))
        missed = {k: t for k, t in targets.items() if values[k] > t}
        if not missed:
            return current, cost, values, points
        for kind, target in missed.items():
            key = search.proxy_kind(kind)
            proxy[key] = min(proxy.get(key, values[key]),
                             search.proxy_target(kind, target, dense, values))  # fmt: skip
        steps = 1
    raise ValueError(
        f"compress could not meet the budget {targets} after 4 attempts; the "
        f"model reached {values}. A LiteRT file and its latency carry a fixed "
        "overhead that pruning channels cannot remove: ask for more bytes or time."
    )


def _rounds(current, proxy, dense, steps, run, points):
    """`steps` rounds of prune, shrink, recalibrate and fine-tune."""
    options, config, train = run["options"], run["config"], run["train"]
    validation, teacher, verbose = run["validation"], run["teacher"], run["verbose"]
    x, y = train
    now = search.costs(current)[1]
    total = len(points) + steps
    for i in range(1, steps + 1):
        start = time.perf_counter()
        step_target = {
            k: now[k] * (t / now[k]) ** (i / steps) for k, t in proxy.items()
        }
        if options["score"] == "taylor":
            options = dict(options, gradients=importance_lib.taylor_gradients(
                current, [(x[j:j + 64], y[j:j + 64]) for j in range(0, min(len(x), 512), 64)],
                keras.losses.SparseCategoricalCrossentropy(from_logits=config["from_logits"]),
            ))  # fmt: skip
        small = search.prune_to(current, step_target, options)
        if small is None:
            search.check_reachable(current, step_target, options)
        recalibrate_batch_norm(small, x, config["batch_size"])
        if config["fine_tune_epochs"]:
            _fine_tune(small, train, teacher, config)
        current = small
        cost = search.costs(current)[1]
        accuracy = metrics.accuracy(current, *validation)
        points.append({"step": len(points) + 1, **cost, "val_accuracy": accuracy,
                       "seconds": time.perf_counter() - start})  # fmt: skip
        if run["backup"] is not None:
            run["backup"].save(current, points)
        if verbose:
            print(
                f"compress: round {len(points)}/{total}: MACs {cost['macs']:,} "
                f"({cost['macs'] / dense['macs']:.2f}x), params {cost['params']:,}, "
                f"val accuracy {accuracy:.4f} ({points[-1]['seconds']:.0f} s)",
                flush=True,
            )
    return current, points
