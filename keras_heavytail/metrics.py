"""Classifier metrics on numpy outputs: the one accuracy and cross-entropy.

Used by pruning (`compress` validates on them), export (accuracy measured in
the LiteRT interpreter) and the research harness alike.
"""

import keras
import numpy as np

from keras_heavytail import checks


def predict(model, x, batch_size=1024):
    """`model`'s outputs on `x` as one numpy array, from eager calls in chunks.

    Unlike `model.predict`, nothing is traced: many models (a pruning curve,
    a bisection) in one process do not make TensorFlow warn about
    retracing, and the calls work inside a running `fit` (in a callback).
    """
    chunks = [
        keras.ops.convert_to_numpy(model(x[start : start + batch_size]))
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks)


def accuracy(model, x, y, batch_size=1024):
    """Accuracy of a classifier on `(x, y)`, predicted in eager chunks (`predict`)."""
    if len(y) == 0:
        raise ValueError("Accuracy needs at least one example. Received: 0")
    outputs = predict(model, x, batch_size)
    if outputs.ndim != 2 or outputs.shape[-1] < 2:
        raise ValueError(
            "Accuracy here is the argmax over one output per class: give a "
            f"model with two or more outputs. Received: outputs of shape "
            f"{outputs.shape}"
        )
    return float(np.mean(np.argmax(outputs, -1) == np.asarray(y)))


def log_probabilities(outputs, from_logits):
    """Log-probabilities of a classifier's outputs (logits or probabilities).

    Args:
        outputs: array `(n, classes)`.
        from_logits: whether `outputs` are logits (as Keras losses take it).

    Returns:
        A float64 array of log-probabilities.
    """
    from_logits = checks.check_bool(from_logits, "from_logits")
    outputs = np.asarray(outputs, dtype="float64")
    if from_logits and np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1.0, atol=1e-6):
        raise ValueError(
            "`from_logits=True` expects logits, but the model's outputs are "
            "probabilities (>= 0, summing to 1 per example; a softmax output): "
            "pass `from_logits=False`, or the loss would be of a second softmax."
        )
    if from_logits:
        shifted = outputs - outputs.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    if np.any(outputs < 0) or not np.allclose(outputs.sum(-1), 1.0, atol=1e-3):
        raise ValueError(
            "`from_logits=False` expects probabilities (>= 0, summing to 1 per "
            "example), but the model's outputs are not: pass `from_logits=True` "
            "for a model that outputs logits."
        )
    return np.log(np.clip(outputs, 1e-12, 1.0))


def loss_and_accuracy(outputs, y, from_logits):
    """Mean cross-entropy and accuracy of classifier `outputs` on labels `y`."""
    y = np.asarray(y).astype("int64").ravel()
    classes = np.shape(outputs)[-1]
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"Labels must be class ids in [0, {classes}) for a model with {classes} "
            f"outputs. Received: labels from {y.min()} to {y.max()}"
        )
    log_p = log_probabilities(outputs, from_logits)
    loss = float(-np.mean(log_p[np.arange(y.size), y]))
    accuracy = float(np.mean(np.argmax(outputs, -1) == y))
    return loss, accuracy
