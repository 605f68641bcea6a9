"""Datasets as arrays: the embedded default and the paper's image datasets.

- `"digits"`: scikit-learn's bundled handwritten digits (1,797 8x8 images,
  10 classes). It ships inside an installed package, so it works offline on
  a fresh machine; it is the default everywhere.
- `"mnist"`, `"fashion_mnist"`: the standard IDX files
  (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
  `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`) in `data_dir`,
  or (without `data_dir`) Keras' cache (`~/.keras/datasets/mnist.npz`,
  `~/.keras/datasets/fashion-mnist/`) where `keras.datasets` downloads them.
- `"cifar10"`: the python pickle batches (`data_batch_1` ... `data_batch_5`,
  `test_batch`) in `data_dir`, `data_dir/cifar-10-batches-py/` or (without
  `data_dir`) Keras' cache (`~/.keras/datasets/cifar-10-batches-py/`).

Inputs come back as float32 images `(n, height, width, channels)`; with
`standardize=True` each channel is shifted and scaled by the training split's
mean and standard deviation, as the paper's code does.
"""

import dataclasses
import gzip
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults

NAMES = defaults.DATASETS

_IDX = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_CIFAR = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@dataclasses.dataclass
class Dataset:
    """Train and test arrays with what was done to them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    preprocessing: str
    source: str
    # What turns a raw input into a model input, as numbers: `(raw /
    # divide_by - mean) / std` per channel (mean 0 and std 1 when not
    # standardised). `None` where the inputs are not pixels (teacher_student).
    input_transform: dict = None

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def validation_split(self, fraction=defaults.VALIDATION_FRACTION, seed=0):
        """`(x_fit, y_fit, x_val, y_val)`: a validation split carved from train.

        Choices made on the validation split (a pruning ratio, a setting)
        leave the test split untouched.

        Args:
            fraction: share of the training examples held out, in (0, 1).
                Defaults to `defaults.VALIDATION_FRACTION`.
            seed: the shuffle. Defaults to `0`.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(
                f"`fraction` must be in (0, 1). Received: fraction={fraction!r}"
            )
        order = np.random.default_rng(seed).permutation(len(self.y_train))
        n_val = max(1, int(round(fraction * len(order))))
        val, fit = np.sort(order[:n_val]), np.sort(order[n_val:])
        return (
            self.x_train[fit],
            self.y_train[fit],
            self.x_train[val],
            self.y_train[val],
        )

    def summary(self):
        return {
            "name": self.name,
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing,
            "input_transform": self.input_transform,
            "source": self.source,
        }


def keras_cache_dir():
    """Where `keras.datasets` keeps its downloads (`$KERAS_HOME` or ~/.keras)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return Path(home) / "datasets"


def read_idx(path):
    """Reads an IDX file (gzipped or not) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not an IDX file.") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(
            f"{path} is truncated or corrupt ({error}); download it again."
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header ends early; download it again.")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(
            f"{path} is truncated: expected {dims}, found {body.size} bytes."
        )
    return body.reshape(dims)


def _missing(name, places, files):
    partial = [
        (place, [f for f in files if not (Path(place) / f).exists()])
        for place in places
        if Path(place).is_dir() and any((Path(place) / f).exists() for f in files)
    ]
    if partial:
        place, lacking = partial[0]
        return FileNotFoundError(
            f"{str(place)!r} holds part of dataset {name!r}: {', '.join(lacking)} "
            f"{'is' if len(lacking) == 1 else 'are'} missing. Copy "
            f"{'it' if len(lacking) == 1 else 'them'} there (a download cut short "
            "leaves a folder like this)."
        )
    plain = [
        Path(place) / f[: -len(".gz")]
        for place in places for f in files
        if f.endswith(".gz") and (Path(place) / f[: -len(".gz")]).is_file()
    ]  # fmt: skip
    if plain:
        return FileNotFoundError(
            f"{str(plain[0].parent)!r} holds the uncompressed {plain[0].name}: "
            f"the loader reads the .gz files as distributed. Compress them "
            f"(`gzip {plain[0].parent}/*-ubyte`) or copy the .gz files there."
        )
    where = "\n  ".join(str(p) for p in places)
    return FileNotFoundError(
        f"Dataset {name!r} was not found, and it cannot be downloaded here. Put "
        f"{', '.join(files)} in a directory and pass it as `data_dir` "
        f"(`--data DIR` on the command line), or place them in one of:\n  {where}"
    )


# The first ten test labels of each: MNIST's and Fashion-MNIST's files look
# alike (same names, shapes and classes), and are easily put in each other's
# place.
_FIRST_TEST_LABELS = {"mnist": [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
                      "fashion_mnist": [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]}  # fmt: skip


def _load_mnist_family(name, data_dir):
    cache = keras_cache_dir()
    sub = "fashion-mnist" if name == "fashion_mnist" else "mnist"
    # A given folder is the one read: no quiet fallback to Keras' cache.
    places = [Path(data_dir), Path(data_dir) / sub] if data_dir else [cache / sub]
    for place in places:
        if all((place / f).exists() for f in _IDX.values()):
            arrays = {k: read_idx(place / f) for k, f in _IDX.items()}
            other = "mnist" if name == "fashion_mnist" else "fashion_mnist"
            if arrays["y_test"][:10].tolist() == _FIRST_TEST_LABELS[other]:
                raise ValueError(
                    f"{str(place)!r} holds {other}'s files (its test labels begin "
                    f"as {other}'s do), not {name}'s: pass --dataset {other}, or the "
                    f"folder of {name}'s files."
                )
            return arrays, str(place)
    npz = cache / "mnist.npz"
    if name == "mnist" and not data_dir and npz.exists():
        try:
            with np.load(npz) as f:
                return {k: f[k] for k in _IDX}, str(npz)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"{str(npz)!r} is not a readable mnist.npz (arrays {sorted(_IDX)}): "
                f"{error}. Delete it, or put the IDX files in --data."
            ) from None
    extra = [npz] if name == "mnist" and not data_dir else []
    raise _missing(name, places + extra, list(_IDX.values()))


def _load_cifar10(data_dir):
    cache = keras_cache_dir() / "cifar-10-batches-py"
    places = [Path(data_dir), Path(data_dir) / "cifar-10-batches-py"] if data_dir else [cache]
    for place in places:
        if all((place / f).exists() for f in _CIFAR):
            batches = []
            for f in _CIFAR:
                try:
                    with open(place / f, "rb") as handle:
                        batch = pickle.load(handle, encoding="bytes")
                    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                    labels = np.asarray(batch[b"labels"])
                except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
                    raise ValueError(
                        f"{str(place / f)!r} is not a readable CIFAR-10 batch (a pickled dict "
                        f"with b'data' and b'labels'): {error!r}. Download the batches again."
                    ) from None
                batches.append((x.transpose(0, 2, 3, 1), labels))
            x_train = np.concatenate([b[0] for b in batches[:-1]])
            y_train = np.concatenate([b[1] for b in batches[:-1]])
            arrays = {
                "x_train": x_train,
                "y_train": y_train,
                "x_test": batches[-1][0],
                "y_test": batches[-1][1],
            }
            return arrays, str(place)
    raise _missing("cifar10", places, _CIFAR)


def _load_digits(test_fraction, seed):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype("float32")[..., None]  # pixels 0..16
    y = digits.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    arrays = {
        "x_train": x[train],
        "y_train": y[train],
        "x_test": x[test],
        "y_test": y[test],
    }
    return arrays, "sklearn.datasets.load_digits (bundled with scikit-learn)"


def teacher_student(
    n_train=8000, n_test=4000, inputs=30, hidden=10, classes=10, teacher_seed=0, seed=0
):
    """A synthetic task: a fixed random ReLU teacher labels Gaussian inputs.

    ```python
    x ~ N(0, I_inputs);  y = argmax(relu(x @ W1 + b1) @ W2 - m)
    W1 ~ N(0, 1/inputs), b1 ~ N(0, 1/4), W2 ~ N(0, 1)
    ```

    The teacher (`teacher_seed`) is fixed; `seed` draws the inputs; `m`, the
    median of each class's teacher logit over a large reference sample,
    keeps the classes roughly balanced. A student much wider than the
    teacher is overparametrised for it, the setting of the theory
    (Wan et al., 2024); a width-2000 student trained with SGD reaches about
    0.86 test accuracy (`benchmarks/RESULTS.md`), so the task is far from
    trivial and far from saturated.

    Returns:
        `(x_train, y_train, x_test, y_test)` as float32 and int64 arrays.
    """
    teacher = np.random.default_rng(teacher_seed)
    w1 = teacher.normal(size=(inputs, hidden)) / np.sqrt(inputs)
    b1 = teacher.normal(size=hidden) * 0.5
    w2 = teacher.normal(size=(hidden, classes))

    def logits(x):
        return np.maximum(x @ w1 + b1, 0.0) @ w2

    shift = np.median(logits(teacher.normal(size=(20000, inputs))), axis=0)
    x = np.random.default_rng(seed + 1).normal(size=(n_train + n_test, inputs))
    y = np.argmax(logits(x) - shift, axis=1).astype("int64")
    x = x.astype("float32")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# The standard datasets' class counts: a subset (`limit`) keeps them all.
_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}


def _check_pairs(name, source, x_train, y_train, x_test, y_test):
    """The number of classes, once images and labels are checked to belong together."""
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{source}: training images are {x_train.shape[1:]} but test images "
            f"{x_test.shape[1:]}; the files do not belong together."
        )
    for split, x, y in (("training", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise ValueError(
                f"{source}: the {split} split has {len(x)} images but {len(y)} labels; "
                "its image and label files do not belong together."
            )
        if len(y) == 0:
            raise ValueError(
                f"{source}: the {split} split holds no images; its files are empty "
                "(a download cut short?). Copy them again."
            )
    classes = _CLASSES.get(name, int(max(y_train.max(), y_test.max()) + 1))
    low, high = min(y_train.min(), y_test.min()), max(y_train.max(), y_test.max())
    if low < 0 or high >= classes:
        raise ValueError(
            f"{source}: {name} labels are class ids in [0, {classes}), but these "
            f"files hold labels from {low} to {high}: they are not {name}'s label files."
        )
    return classes


def load_dataset(name="digits", data_dir=None, standardize=True, limit=None, seed=0):
    """Loads a dataset offline and standardises it.

    Args:
        name: one of `"digits"`, `"teacher_student"` (synthetic, see
            `teacher_student`), `"mnist"`, `"fashion_mnist"`, `"cifar10"`.
            Defaults to `"digits"`.
        data_dir: directory holding the standard files (mnist,
            fashion_mnist, cifar10), the only place looked at when given.
            Defaults to `None` (Keras' cache).
        standardize: per-channel z-scores from the training split; else
            pixels scaled to [0, 1]. Defaults to `True`.
        limit: keep at most this many training (and test) examples, for
            quick runs. Defaults to `None` (all).
        seed: the split of `"digits"` (20% test) and the subsample of
            `limit`. Defaults to `0`.

    Returns:
        A `Dataset`.
    """
    # Over 60 lines: the argument checks and one short branch per source
    # (synthetic, embedded, files), read best in one place.
    if name not in NAMES:
        raise ValueError(f"`name` must be one of {NAMES}. Received: name={name!r}")
    if limit is not None and (not checks.is_integer(limit) or limit < 1):
        raise ValueError(
            f"`limit` must be a positive int or None. Received: limit={limit!r}"
        )
    if not checks.is_integer(seed) or not 0 <= seed <= checks.SEED_LIMIT:
        raise ValueError(
            f"`seed` must be an int in [0, {checks.SEED_LIMIT}]. Received: seed={seed!r}"
        )
    if data_dir is not None and not str(data_dir).strip():
        raise ValueError(f"`data_dir` must name a folder. Received: data_dir={data_dir!r}")
    if data_dir is not None and name in ("digits", "teacher_student"):
        raise ValueError(
            f"{name!r} needs no files (it is {'embedded' if name == 'digits' else 'generated'}"
            f"): `data_dir` is for mnist, fashion_mnist and cifar10. Received: "
            f"data_dir={str(data_dir)!r}"
        )
    if name == "teacher_student":
        x_train, y_train, x_test, y_test = teacher_student(seed=seed)
        arrays = {
            "x_train": x_train,
            "y_train": y_train,
            "x_test": x_test,
            "y_test": y_test,
        }
        source = "keras_heavytail.experiments.datasets.teacher_student (synthetic, generated)"
        scale = 1.0
    elif name == "digits":
        arrays, source = _load_digits(0.2, seed)
        scale = 16.0
    elif name == "cifar10":
        arrays, source = _load_cifar10(data_dir)
        scale = 255.0
    else:
        arrays, source = _load_mnist_family(name, data_dir)
        scale = 255.0
    x_train = arrays["x_train"].astype("float32") / scale
    x_test = arrays["x_test"].astype("float32") / scale
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    y_train = arrays["y_train"].astype("int64").ravel()
    y_test = arrays["y_test"].astype("int64").ravel()
    classes = _check_pairs(name, source, x_train, y_train, x_test, y_test)
    if limit is not None:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.permutation(len(y_train))[:limit])
        x_train, y_train = x_train[keep], y_train[keep]
        keep = np.sort(rng.permutation(len(y_test))[:limit])
        x_test, y_test = x_test[keep], y_test[keep]
    channels = x_train.shape[-1]
    transform = {"divide_by": scale, "mean": [0.0] * channels, "std": [1.0] * channels}
    if name == "teacher_student":
        transform = None
    if standardize and name == "teacher_student":
        preprocessing = "none: inputs are already N(0, 1)"
    elif standardize:
        mean = x_train.mean(axis=(0, 1, 2))
        std = x_train.std(axis=(0, 1, 2)) + 1e-7
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        transform.update(mean=[float(m) for m in mean], std=[float(v) for v in std])
        preprocessing = (
            "pixels / max, then per-channel z-score with the training split's "
            f"mean {[round(float(m), 4) for m in mean]} and std {[round(float(v), 4) for v in std]}"
        )
    else:
        preprocessing = "pixels / max, in [0, 1]"
    return Dataset(
        name=name,
        x_train=x_train.astype("float32"),
        y_train=y_train,
        x_test=x_test.astype("float32"),
        y_test=y_test,
        num_classes=classes,
        preprocessing=preprocessing,
        source=source,
        input_transform=transform,
    )
