"""TFLite/LiteRT export, checked and timed in the LiteRT interpreter.

TensorFlow only: conversion goes through `tf.lite.TFLiteConverter` (Keras 3
models on the TensorFlow backend, and tf_keras models), and models run in
`ai_edge_litert.interpreter.Interpreter`, not the deprecated
`tf.lite.Interpreter`. Only the model's forward pass is exported: never the
optimizer or its noise.
"""

import contextlib
import dataclasses
import gzip
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_heavytail import checks
from keras_heavytail.export import inputs
from keras_heavytail.export.inputs import QUANTIZATIONS  # noqa: F401  public here too


@dataclasses.dataclass
class ExportReport:
    """What `export_tflite` wrote."""

    path: str
    bytes: int
    gzip_bytes: int
    weight_sparsity: float
    quantization: str
    sparse: bool
    per_channel: bool

    def to_dict(self):
        return dataclasses.asdict(self)


def _saved_model(model, directory):
    """Writes the model's inference function (weights frozen, no optimizer)."""
    import keras

    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"`export_tflite` needs a built model with one input. Received: model {model.name!r}"
        )
    if isinstance(model, keras.Model):
        model.export(directory, format="tf_saved_model", verbose=False)
    else:  # tf_keras, whose export prints its signatures and has no `verbose`
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(directory)


def export_tflite(
    model,
    path,
    *,
    sparse=True,
    quantize=None,
    representative_data=None,
    per_channel=True,
):
    """Converts a Keras model to a `.tflite` file.

    - `sparse=True` adds `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`: pruned
      weights are stored in a sparse format, so the file shrinks (latency
      does not: the runtime densifies them; `shrink` the model for speed).
    - `quantize="dynamic"`: int8 weights, float activations.
    - `quantize="float16"`: float16 weights.
    - `quantize="int8"`: full-integer post-training quantisation, int8 inputs
      and outputs; needs `representative_data` (a few hundred inputs).

    Args:
        model: a built Keras 3 model (TensorFlow backend) or tf_keras model
            with one float input. Defaults to none; required.
        path: the `.tflite` file to write.
        sparse: store pruned weights sparsely (the report says `sparse` only
            when there were zeros to store). Defaults to `True`.
        per_channel: with `"int8"` or `"dynamic"`, one quantisation scale per
            output unit (the converter's default, the most accurate); `False`
            uses one per tensor, which saves 12 bytes of scale and zero point
            per unit and tensor: 60 KB on a 2000-unit layer, a third of a
            90%-sparse int8 file. Defaults to `True`.
        quantize: `None`, `"dynamic"`, `"float16"` or `"int8"`.
            Defaults to `None` (float32).
        representative_data: array of inputs for `"int8"` calibration.
            Defaults to `None`.

    Returns:
        An `ExportReport` (path, bytes, gzip bytes, weight sparsity,
        quantisation).

    Example:

    >>> report = export_tflite(pruned, "model.tflite", quantize="int8",
    ...                        representative_data=x_train[:256])  # doctest: +SKIP
    """
    import tensorflow as tf

    from keras_heavytail.pruning.graph import ModelGraph

    sparse = checks.check_bool(sparse, "sparse")
    per_channel = checks.check_bool(per_channel, "per_channel")
    inputs.check_export(model, quantize, representative_data)
    from keras_heavytail import files

    with tempfile.TemporaryDirectory() as directory, files.captured_stderr():
        _saved_model(model, directory)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter._experimental_disable_per_channel = not per_channel
        flatbuffer = _convert(converter, sparse, quantize, representative_data)
    path = files.write_bytes(path, flatbuffer)
    sparsity = ModelGraph(model).weight_sparsity()
    return ExportReport(
        path=str(path),
        bytes=len(flatbuffer),
        gzip_bytes=len(gzip.compress(flatbuffer, compresslevel=9)),
        weight_sparsity=sparsity,
        quantization=quantize or "float32",
        per_channel=bool(per_channel) and quantize in ("int8", "dynamic"),
        sparse=bool(sparse) and sparsity > 0,
    )


def _convert(converter, sparse, quantize, representative_data):
    import tensorflow as tf

    optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        samples = np.asarray(representative_data, dtype="float32")

        def representative():
            for i in range(min(len(samples), 500)):
                yield [samples[i : i + 1]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    from keras_heavytail import files

    with files.captured_stderr() as log:  # the converter's C++ chatter
        try:
            return converter.convert()
        except Exception as error:
            failure = error
    raise RuntimeError(
        f"The LiteRT converter failed: {failure}. Its log:\n{''.join(log)[-3000:]}"
    ) from failure


def _interpreter(path, num_threads, delegates):
    from ai_edge_litert import interpreter as litert

    resolver = (
        litert.OpResolverType.AUTO
        if delegates
        else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return litert.Interpreter(
        model_path=str(path),
        num_threads=num_threads,
        experimental_op_resolver_type=resolver,
    )


def load_interpreter(path, num_threads=1, batch_size=None):
    """A ready LiteRT interpreter, and which runtime it is.

    Tries the default (XNNPACK-delegated) runtime first; when the delegate
    refuses the model (sparse + int8 does: "failed to delegate
    FULLY_CONNECTED"), falls back to the builtin kernels without default
    delegates.

    Returns:
        `(interpreter, runtime)`, runtime `"xnnpack"` or `"builtin"`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .tflite file at {str(path)!r}.")
    from keras_heavytail import files

    errors = []
    for delegates, runtime in ((True, "xnnpack"), (False, "builtin")):
        try:
            with files.captured_stderr():  # "INFO: Created ... XNNPACK delegate"
                interp = _ready_interpreter(path, num_threads, delegates, batch_size)
            return interp, runtime
        except (RuntimeError, ValueError) as error:
            errors.append(f"{runtime}: {error}")
    if any(
        "not a valid" in e
        or "Model provided has model identifier" in e
        or "Could not open" in e
        for e in errors
    ):
        raise ValueError(f"{str(path)!r} is not a valid .tflite model: {errors[-1]}")
    raise RuntimeError(f"LiteRT could not run {str(path)!r}: " + " | ".join(errors))


def _ready_interpreter(path, num_threads, delegates, batch_size):
    """An interpreter with its tensors allocated, invoked once on zeros."""
    interp = _interpreter(path, num_threads, delegates)
    if batch_size is not None:
        detail = interp.get_input_details()[0]
        interp.resize_tensor_input(detail["index"], [batch_size, *detail["shape"][1:]])
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interp.invoke()
    return interp


def _quantize_input(x, detail):
    if detail["dtype"] == np.float32:
        return x.astype("float32")
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(
        detail["dtype"]
    )


def _dequantize_output(y, detail):
    if detail["dtype"] == np.float32:
        return y.astype("float64")
    scale, zero = detail["quantization"]
    return (y.astype("float64") - zero) * scale


def predict_tflite(path, x, batch_size=64, num_threads=1):
    """Runs a `.tflite` classifier on `x` in LiteRT; returns float outputs and the runtime."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"`x` must hold floats (the model quantises itself). Received: dtype={x.dtype}"
        )
    interp, runtime = load_interpreter(path, num_threads)
    expected = [int(d) for d in interp.get_input_details()[0]["shape"][1:]]
    if list(x.shape[1:]) != expected:
        raise ValueError(
            f"Inputs of shape {list(x.shape[1:])} do not fit the model, which takes {expected} "
            f"per example. Received: x.shape={x.shape}"
        )
    try:
        interp, runtime = load_interpreter(path, num_threads, batch_size=batch_size)
        step = batch_size
    except RuntimeError:  # some models only run at their exported batch size
        step = 1
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        if len(chunk) != step:
            interp.resize_tensor_input(inp["index"], [len(chunk), *expected])
            interp.allocate_tensors()
            inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.set_tensor(inp["index"], _quantize_input(chunk, inp))
        interp.invoke()
        outputs.append(_dequantize_output(interp.get_tensor(out["index"]), out))
    return np.concatenate(outputs), runtime


def evaluate_tflite(path, x, y, batch_size=64, num_threads=1, from_logits=False):
    """Accuracy (and cross-entropy loss) of a `.tflite` classifier in LiteRT.

    Args:
        path: a `.tflite` file.
        x: float inputs (quantised by the model's own parameters when int8).
        y: integer labels.
        batch_size: examples per invocation. Defaults to `64`.
        num_threads: interpreter threads. Defaults to `1`.
        from_logits: whether the model outputs logits (as Keras losses take
            it); a model that outputs anything but probabilities needs
            `True`. Defaults to `False`.

    Returns:
        `{"accuracy", "loss", "examples", "runtime"}`; `runtime` says whether
        the default XNNPACK delegate or the builtin kernels ran the model.
    """
    from keras_heavytail.metrics import loss_and_accuracy

    x, y = inputs.check_examples(x, y, batch_size)
    outputs, runtime = predict_tflite(path, x, batch_size, num_threads)
    bad = int(np.sum(~np.all(np.isfinite(outputs.reshape(len(outputs), -1)), axis=1)))
    if bad:
        raise ValueError(
            f"{str(path)!r} outputs NaN or inf on {bad} of {len(y)} examples: "
            "its weights or inputs are not finite."
        )
    loss, accuracy = loss_and_accuracy(outputs, y, from_logits)
    return {
        "accuracy": accuracy,
        "loss": loss,
        "examples": int(y.size),
        "runtime": runtime,
    }


def benchmark_tflite(path, num_threads=1, warmup=20, runs=200, seed=0):
    """Single-example latency in LiteRT, as an edge device runs it.

    Args:
        path: a `.tflite` file.
        num_threads: interpreter threads. Defaults to `1`.
        warmup: untimed invocations first. Defaults to `20`.
        runs: timed invocations. Defaults to `200`.
        seed: of the random input. Defaults to `0`.

    Returns:
        `{"median_ms", "p90_ms", "runs", "num_threads", "runtime"}`: times in
        milliseconds (`cards.format_latency` writes them with a unit).
    """
    for name, value, low in (
        ("num_threads", num_threads, 1), ("warmup", warmup, 0), ("runs", runs, 1),
    ):  # fmt: skip
        if not checks.is_integer(value) or value < low:
            raise ValueError(
                f"`{name}` must be an int >= {low}. Received: {name}={value!r}"
            )
    num_threads, warmup, runs = int(num_threads), int(warmup), int(runs)
    interp, runtime = load_interpreter(path, num_threads, batch_size=1)
    detail = interp.get_input_details()[0]
    x = np.random.default_rng(seed).normal(size=detail["shape"]).astype("float32")
    interp.set_tensor(detail["index"], _quantize_input(x, detail))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": runs,
        "num_threads": num_threads,
        "runtime": runtime,
    }
