"""Loss gradients of a Keras 3 model's weights, on every backend.

Keras 3 has no backend-neutral gradient call, so this is the one place that
asks TensorFlow, JAX or PyTorch for one; the first-order Taylor criterion
(`importance`, `"taylor"`) uses it.
"""

import keras
import numpy as np


def _batches(data, batches):
    for i, batch in enumerate(data):
        if i >= batches:
            return
        x, y = batch[0], batch[1]
        yield keras.ops.convert_to_tensor(np.asarray(x)), keras.ops.convert_to_tensor(
            np.asarray(y)
        )


def _gradient_tensorflow(model, loss_fn, x, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value = loss_fn(y, model(x, training=False))
    return tape.gradient(value, model.trainable_variables)


def _gradient_jax(model, loss_fn, x, y):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def value(trainable):
        out, _ = model.stateless_call(trainable, frozen, x, training=False)
        return loss_fn(y, out)

    return jax.grad(value)(trainable)


def _gradient_torch(model, loss_fn, x, y):
    model.zero_grad()
    value = loss_fn(y, model(x, training=False))
    value.backward()
    return [v.value.grad for v in model.trainable_variables]


def accumulated_gradients(model, data, loss, batches=8):
    """`{variable path: sum over batches of dL/dw}` as float64 arrays.

    Args:
        model: a Keras 3 model.
        data: an iterable of `(x, y)` batches.
        loss: a Keras loss (object or name).
        batches: how many batches to use. Defaults to `8`.

    Returns:
        A dict keyed by `variable.path`.
    """
    loss_fn = keras.losses.get(loss)
    step = {
        "tensorflow": _gradient_tensorflow,
        "jax": _gradient_jax,
        "torch": _gradient_torch,
    }.get(keras.backend.backend())
    if step is None:
        raise ValueError(
            "Gradients need the TensorFlow, JAX or PyTorch backend. Received: "
            f"backend={keras.backend.backend()!r}"
        )
    totals = {v.path: np.zeros(v.shape, "float64") for v in model.trainable_variables}
    seen = 0
    for x, y in _batches(data, batches):
        grads = step(model, loss_fn, x, y)
        for variable, grad in zip(model.trainable_variables, grads):
            if grad is not None:
                totals[variable.path] += keras.ops.convert_to_numpy(grad)
        seen += 1
    if not seen:
        raise ValueError("`data` gave no batch: the Taylor criterion needs at least one.")
    return totals
