"""The data `compress` takes: `(x, y)` arrays or a finite stream of batches.

`compress` passes over its data several times (BatchNormalization
re-estimation, each round's fine-tuning, the distillation targets, the key of
its backups), so a `tf.data.Dataset`, a `keras.utils.PyDataset`, a PyTorch
`DataLoader` or any other finite iterable of `(x, y)` batches is read once
into arrays in memory: the whole split must fit there. A stream that fills
half the machine's memory without ending is refused, not read until the
machine runs out.
"""

import os

import numpy as np


def _plain(value):
    """A PyTorch tensor as numpy can read it: detached, on the CPU, bfloat16 as float32."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
    return value


def _pair(x, y, name):
    """`x` and `y` as numpy arrays; labels of shape (n, 1) as (n,)."""
    if isinstance(x, dict) or isinstance(y, dict):
        raise ValueError(
            f"`{name}`: inputs or labels given as a dict (named inputs) are not "
            "taken: `compress` takes a model with one input; pass its array."
        )
    x, y = _plain(x), _plain(y)
    try:
        x, y = np.asarray(x), np.asarray(y)
    except ValueError as error:  # ragged: e.g. a list of two batches as (x, y)
        raise ValueError(
            f"`{name}` must be a pair (x, y) of arrays (batches go in a dataset or an "
            f"iterator, e.g. `iter(batches)`). Reading it failed: {error}"
        ) from None
    except (TypeError, RuntimeError) as error:
        raise ValueError(
            f"`{name}` cannot be read as numpy arrays ({error}). Pass numpy arrays "
            "or tensors numpy can read."
        ) from None
    if y.ndim == 2 and y.shape[1] == 1:  # Keras' sparse labels may be (n, 1)
        y = y[:, 0]
    if x.dtype.kind == "b":
        raise ValueError(f"`{name}` inputs must be numbers, not booleans: cast them.")
    return x, y


def _batches(data, name):
    """The `(x, y)` batches of a dataset-like `data`, as numpy arrays."""
    if hasattr(data, "as_numpy_iterator"):  # tf.data.Dataset
        cardinality = int(data.cardinality())
        if cardinality == -1:  # tf.data.INFINITE_CARDINALITY
            raise ValueError(
                f"`{name}` is a tf.data.Dataset that never ends (`repeat()` without a "
                "count): `compress` reads its data once into memory. Pass "
                "`dataset.take(n_batches)` or the dataset without `repeat()`."
            )
        return data.as_numpy_iterator()
    if hasattr(data, "num_batches") and hasattr(data, "__getitem__"):  # PyDataset
        if data.num_batches is None:
            raise ValueError(
                f"`{name}` is a PyDataset without a length (`num_batches` is None): "
                "`compress` reads its data once into memory and needs an end."
            )
        if not isinstance(data.num_batches, int):
            raise ValueError(
                f"`{name}` is a PyDataset whose `num_batches` is not an int. "
                f"Received: {data.num_batches!r}"
            )
        return (data[i] for i in range(data.num_batches))
    return iter(data)


def memory_limit():
    """Bytes a stream may fill before it is taken for one that never ends:
    half the machine's memory (8 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, OSError, ValueError):
        return 8 * 2**30


def _read(data, name):
    """Concatenates the `(x, y)` batches of `data` into two arrays."""
    xs, ys = [], []
    size, limit = 0, memory_limit()
    for batch in _batches(data, name):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            kind = type(batch).__name__
            if isinstance(batch, (tuple, list)):
                kind = f"a {kind} of {len(batch)} items"
            raise ValueError(
                f"Each batch of `{name}` must be a pair (inputs, labels): sample "
                f"weights and unlabelled batches are not taken. Received: {kind}"
            )
        x, y = _pair(batch[0], batch[1], f"a batch of {name}")
        if y.ndim != 1 or x.ndim < 1 or len(x) != len(y):
            raise ValueError(
                f"Each batch of `{name}` must hold as many inputs as labels, the "
                "labels one integer class id per example (a dataset of single "
                "examples needs `.batch(n)`). Received: a batch of inputs shaped "
                f"{x.shape} and labels shaped {y.shape}"
            )
        xs.append(x)
        ys.append(y)
        size += x.nbytes + y.nbytes
        if size > limit:  # an endless stream (a generator, `cycle`, ...)
            raise ValueError(
                f"`{name}` has given {sum(map(len, ys)):,} examples ({size / 2**30:.1f} "
                "GiB, half this machine's memory) and not ended: `compress` reads its "
                "data once into memory. Pass a finite dataset (`dataset.take(n)`, "
                "`itertools.islice(batches, n)`) or arrays."
            )
    if not xs:
        raise ValueError(f"`{name}` yielded no batches.")
    if len({x.shape[1:] for x in xs}) > 1:
        raise ValueError(
            f"The batches of `{name}` have inputs of different shapes. Received: "
            f"{sorted({x.shape[1:] for x in xs})}"
        )
    return np.concatenate(xs), np.concatenate(ys)


def check_data(data, name, classes):
    """`data` as `(x, y)`: numeric inputs, int64 class ids in [0, classes).

    Args:
        data: `(x, y)` arrays, or a finite dataset of `(x, y)` batches
            (`tf.data.Dataset`, `keras.utils.PyDataset`, any iterable).
        name: the argument's name, for errors.
        classes: the model's number of outputs.

    Returns:
        `(x, y)` numpy arrays.
    """
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(
                f"`{name}` must be a pair (x, y): one input array and integer labels "
                "(batches go in a dataset or an iterator, e.g. `iter(batches)`). "
                f"Received: a {type(data).__name__} of {len(data)} items"
            )
        x, y = _pair(data[0], data[1], name)
    elif isinstance(data, (np.ndarray, dict, str, bytes)) or not (
        hasattr(data, "__iter__") or hasattr(data, "as_numpy_iterator")
    ):
        raise ValueError(
            f"`{name}` must be a tuple (x, y) of arrays or a finite dataset of "
            f"(x, y) batches. Received: {type(data).__name__}"
        )
    else:
        x, y = _read(data, name)
    if x.dtype.kind not in "fiub":
        raise ValueError(f"`{name}` inputs must be numbers. Received: dtype={x.dtype}")
    whole = y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    if y.ndim != 1 or not (y.dtype.kind in "iu" or whole):
        raise ValueError(
            f"`{name}` labels must be integer class ids, one per example (not "
            "one-hot, not fractions): compress fine-tunes and measures classifiers. "
            f"Received: shape={y.shape}, dtype={y.dtype}"
        )
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"`{name}` must hold the same number (> 0) of inputs and labels. "
            f"Received: {len(x)} inputs and {len(y)} labels"
        )
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` inputs hold NaN or inf: fine-tuning would diverge.")
    y = y.astype("int64")
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(
            f"`{name}` labels must be in [0, {classes}) for a model with {classes} "
            f"outputs. Received: labels from {y.min()} to {y.max()}"
        )
    return x, y
