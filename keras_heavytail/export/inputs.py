"""What export and evaluation accept: models, calibration data, examples.

Each check refuses, with the bad value repeated, what the LiteRT converter
would fail on obscurely or convert into a wrong file, and what an
evaluation would score wrongly (labels that index from the end, NaN inputs
an int8 model quantises silently). No TensorFlow here.
"""

import warnings

import numpy as np

from keras_heavytail import checks

QUANTIZATIONS = (None, "dynamic", "float16", "int8")


def check_export(model, quantize, representative_data):
    """Refuses what the converter would fail on, or convert into a wrong file."""

    def name(dtype):  # Keras 3 gives "float16", tf_keras a tf.DType
        return str(getattr(dtype, "name", dtype))

    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"`quantize` must be one of {QUANTIZATIONS}. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "`quantize='int8'` is full-integer quantisation and needs "
            "`representative_data`: a few hundred typical inputs to calibrate "
            "activation ranges. Received: representative_data=None"
        )
    compute = {
        name(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32"))
        for layer in getattr(model, "layers", [])
    } | {name(getattr(v, "dtype", "float32")) for v in model.weights}
    compute |= {name(getattr(t, "dtype", "float32")) for t in getattr(model, "inputs", None) or []}
    if compute - {"float32", "int32", "int64", "bool"}:
        raise ValueError(
            f"`export_tflite` converts float32 models; this one computes or stores "
            f"{sorted(compute - {'float32', 'int32', 'int64', 'bool'})} (a float16 or "
            "mixed-precision model). Rebuild it in float32 "
            "(`keras.mixed_precision.set_global_policy('float32')`), copy the "
            "weights with `set_weights`, and export that; `quantize='float16'` "
            "stores float16 weights."
        )
    if representative_data is not None:
        try:
            samples = np.asarray(representative_data)
        except ValueError as error:  # ragged lists
            raise ValueError(
                "`representative_data` must be an array of model inputs of one shape "
                f"(e.g. `x_train[:500]`). Received: {type(representative_data).__name__} "
                f"that numpy cannot stack ({str(error).splitlines()[0][:120]})"
            ) from None
        if samples.dtype.kind == "b":  # converted to float32 as every input
            samples = samples.astype("float32")
        if samples.dtype.kind not in "fiu" or samples.ndim == 0:
            raise ValueError(
                "`representative_data` must be an array of model inputs (a few hundred, "
                "e.g. `x_train[:500]`), not a number, a dataset, a generator or text. "
                f"Received: {type(representative_data).__name__} of dtype={samples.dtype}"
                + (f" ({repr(representative_data)[:80]})" if samples.ndim == 0 else "")
            )
        if len(samples) == 0 or not np.all(np.isfinite(samples)):
            raise ValueError(
                "`representative_data` must hold at least one input, all finite "
                f"(NaN or inf calibrate nothing). Received: {samples.size} values, "
                f"{int(np.sum(~np.isfinite(samples)))} not finite"
            )
        inputs = getattr(model, "inputs", None) or []
        if len(inputs) == 1:
            expected = tuple(inputs[0].shape[1:])
            got = samples.shape[1:]
            if len(got) != len(expected) or any(
                e is not None and e != g for e, g in zip(expected, got)
            ):
                raise ValueError(
                    "`representative_data` must be a batch of the model's inputs, "
                    f"shape (n, {', '.join(str(e) for e in expected)}). Received: "
                    f"shape {samples.shape}"
                )
        if quantize == "int8" and (len(samples) < 2 or np.ptp(samples) == 0):
            warnings.warn(
                "int8 calibration on one input, or on inputs that are all the same "
                f"value ({samples.size} values): the activation ranges it measures "
                "will not hold for real inputs, and the int8 model can lose most of "
                "its accuracy. Pass a few hundred typical inputs as "
                "`representative_data`.",
                UserWarning,
                stacklevel=3,
            )
    from keras_heavytail.optimizers.divergence import BLOWN_UP

    for variable in model.weights:
        values = np.asarray(variable.numpy())
        finite = np.all(np.isfinite(values))
        if not finite or (values.size and np.max(np.abs(values)) > BLOWN_UP):
            raise ValueError(
                "The model has NaN or inf weights (it diverged); nothing was "
                f"exported. Received: {getattr(variable, 'path', variable.name)!r} "
                + ("is not finite" if not finite else f"holds values beyond {BLOWN_UP:g}")
            )


def check_examples(x, y, batch_size):
    """`(x, y)` as arrays, checked for an evaluation: integer class ids >= 0,
    as many labels as inputs, finite inputs, a batch size >= 1."""
    if not checks.is_integer(batch_size) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1. Received: batch_size={batch_size!r}")
    y = np.asarray(y)
    whole = y.dtype.kind in "iu" or (
        y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    )
    if not whole:
        raise ValueError(
            "`y` must hold integer class ids (not fractions, not one-hot). "
            f"Received: dtype={y.dtype}, shape={y.shape}"
        )
    if y.size and y.dtype.kind == "f" and np.max(np.abs(y)) >= 2**31:
        raise ValueError(
            f"`y` must hold class ids. Received: a label {np.max(np.abs(y)):g}"
        )
    y = y.astype("int64").ravel()
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(
            "`x` and `y` must hold the same number (> 0) of examples. "
            f"Received: {len(x)} and {len(y)}"
        )
    if y.min() < 0:
        raise ValueError(f"`y` must hold class ids >= 0. Received: a label {y.min()}")
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(
            f"`x` holds NaN or inf in {int(np.sum(~np.isfinite(x)))} values: the "
            "scores would be of garbage inputs (an int8 model quantises NaN silently)."
        )
    return x, y
