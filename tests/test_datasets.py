"""Loading the embedded default and the paper's file formats, offline."""

import gzip
import pickle

import numpy as np
import pytest

from keras_heavytail.experiments import datasets


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(directory, n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": np.arange(n_test) % 10,
    }
    for key, name in datasets._IDX.items():
        write_idx(directory / name, arrays[key])
    return arrays


def test_digits_is_embedded_split_and_standardised():
    data = datasets.load_dataset("digits")
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert len(data.y_train) + len(data.y_test) == 1797
    assert len(data.y_test) == round(0.2 * 1797)
    assert abs(float(data.x_train.mean())) < 1e-5
    assert abs(float(data.x_train.std()) - 1.0) < 1e-3
    assert "z-score" in data.preprocessing and "scikit-learn" in data.source


def test_digits_unstandardised_is_in_unit_range():
    data = datasets.load_dataset("digits", standardize=False)
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0


def test_idx_files_in_a_directory(tmp_path):
    arrays = fake_mnist(tmp_path)
    data = datasets.load_dataset("mnist", data_dir=tmp_path, standardize=False)
    assert data.x_train.shape == (12, 28, 28, 1)
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    np.testing.assert_allclose(
        data.x_train[..., 0], arrays["x_train"] / 255.0, rtol=1e-6
    )


def test_fashion_mnist_from_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cache = tmp_path / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    fake_mnist(cache)
    data = datasets.load_dataset("fashion_mnist", limit=5)
    assert data.x_train.shape == (5, 28, 28, 1) and str(cache) == data.source


def test_mnist_npz_from_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=rng.integers(0, 256, (4, 28, 28)).astype(np.uint8),
        y_train=np.array([0, 1, 2, 3]),
        x_test=rng.integers(0, 256, (2, 28, 28)).astype(np.uint8),
        y_test=np.array([4, 5]),
    )
    data = datasets.load_dataset("mnist")
    # MNIST has 10 classes, also when these files (or a `limit`) show 6.
    assert data.num_classes == 10 and data.source.endswith("mnist.npz")


@pytest.mark.parametrize(
    "y_train,message",
    [(np.arange(3), "the training split has 4 images but 3 labels"),
     (np.array([0, 1, 255, 3]), "files hold labels from 0 to 255: they are not mnist's")],
)  # fmt: skip
def test_images_and_labels_that_do_not_belong_together_are_refused(
    tmp_path, monkeypatch, y_train, message
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=rng.integers(0, 256, (4, 28, 28)).astype(np.uint8), y_train=y_train,
        x_test=rng.integers(0, 256, (2, 28, 28)).astype(np.uint8), y_test=np.array([4, 5]),
    )  # fmt: skip
    with pytest.raises(ValueError, match=message):
        datasets.load_dataset("mnist")


def test_cifar10_pickles(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in datasets._CIFAR:
        batch = {b"data": rng.integers(0, 256, (3, 3072)), b"labels": [0, 1, 9]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    data = datasets.load_dataset("cifar10", data_dir=tmp_path)
    assert data.x_train.shape == (15, 32, 32, 3) and data.x_test.shape == (3, 32, 32, 3)
    assert data.num_classes == 10


def test_a_given_folder_is_the_only_place_looked_at(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets" / "mnist").mkdir(parents=True)
    fake_mnist(tmp_path / "datasets" / "mnist")  # the cache has mnist
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="was not found"):
        datasets.load_dataset("mnist", data_dir=tmp_path / "empty")
    assert datasets.load_dataset("mnist").x_train.shape == (12, 28, 28, 1)  # no folder: the cache


def test_mnist_files_given_as_fashion_mnist_are_named(tmp_path):
    arrays = fake_mnist(tmp_path, n_test=10)
    arrays["y_test"] = np.array([7, 2, 1, 0, 4, 1, 4, 9, 5, 9])  # MNIST's test set begins so
    write_idx(tmp_path / datasets._IDX["y_test"], arrays["y_test"])
    with pytest.raises(ValueError, match="holds mnist's files .* pass --dataset mnist"):
        datasets.load_dataset("fashion_mnist", data_dir=tmp_path)
    assert datasets.load_dataset("mnist", data_dir=tmp_path, limit=np.int64(5)).num_classes == 10


def test_a_folder_missing_one_file_names_that_file(tmp_path):
    fake_mnist(tmp_path)
    (tmp_path / datasets._IDX["y_test"]).unlink()
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_dataset("mnist", data_dir=tmp_path)
    assert "t10k-labels-idx1-ubyte.gz is missing" in str(error.value)
    assert "train-images" not in str(error.value)


@pytest.mark.parametrize("n_train, n_test", [(0, 6), (12, 0)])
def test_an_empty_split_is_named(tmp_path, n_train, n_test):
    fake_mnist(tmp_path, n_train=n_train, n_test=n_test)
    split = "training" if n_train == 0 else "test"
    with pytest.raises(ValueError, match=f"the {split} split holds no images"):
        datasets.load_dataset("mnist", data_dir=tmp_path)


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        datasets.load_dataset("mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        datasets.load_dataset("cifar10")


def test_bad_name_and_corrupt_file(tmp_path):
    with pytest.raises(ValueError, match="Received: name='imagenet'"):
        datasets.load_dataset("imagenet")
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(bad)


def test_the_input_transform_turns_raw_pixels_into_model_inputs():
    data = datasets.load_dataset("digits")
    plain = datasets.load_dataset("digits", standardize=False)
    t = data.input_transform
    assert t["divide_by"] == 16.0 and plain.input_transform["mean"] == [0.0]
    raw = plain.x_test * plain.input_transform["divide_by"]  # the 0-16 pixels
    np.testing.assert_array_equal(raw, np.round(raw))
    made = (raw / t["divide_by"] - np.array(t["mean"])) / np.array(t["std"])
    np.testing.assert_allclose(made, data.x_test, rtol=1e-5, atol=1e-5)
    assert data.summary()["input_transform"] == t


def test_broken_cifar_batches_and_mismatched_test_images_are_named(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in datasets._CIFAR:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (3, 3072)), b"labels": [0, 1, 9]}, f)
    cut = folder / datasets._CIFAR[2]
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(ValueError, match="is not a readable CIFAR-10 batch"):
        datasets.load_dataset("cifar10", data_dir=tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=rng.integers(0, 256, (4, 28, 28)).astype(np.uint8), y_train=np.arange(4),
        x_test=rng.integers(0, 256, (2, 20, 20)).astype(np.uint8), y_test=np.arange(2),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"training images are \(28, 28, 1\) but test images"):
        datasets.load_dataset("mnist")


def test_a_cut_header_a_folder_in_a_files_place_and_unzipped_files_are_named(tmp_path):
    import gzip

    fake_mnist(tmp_path)
    with gzip.open(tmp_path / datasets._IDX["x_train"], "wb") as f:
        f.write(bytes([0, 0, 8, 1]))  # the header stops after its magic number
    with pytest.raises(ValueError, match="truncated: its header ends early"):
        datasets.load_dataset("mnist", data_dir=tmp_path)
    (tmp_path / datasets._IDX["x_train"]).unlink()
    (tmp_path / datasets._IDX["x_train"]).mkdir()
    with pytest.raises(ValueError, match="is a folder, not an IDX file"):
        datasets.load_dataset("mnist", data_dir=tmp_path)
    unzipped = tmp_path / "plain"
    unzipped.mkdir()
    for name in datasets._IDX.values():
        (unzipped / name.removesuffix(".gz")).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="holds the uncompressed"):
        datasets.load_dataset("mnist", data_dir=unzipped)
