"""Test configuration: TensorFlow as the backend, its C++ logs off, fixtures.

Helpers live in `helpers.py`, a module the tests import.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Two workers (and the processes they start) share the cores: one TensorFlow
# op thread each spends less CPU spinning than a pool per process per core.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

# The package first: it imports Keras with TensorFlow's start-up lines hidden.
import keras_heavytail  # noqa: E402, F401, I001
import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


# The files that take longest (measured with `--durations`), handed to the
# two workers first: `--dist loadfile` deals whole files in collection
# order, and a long file dealt last leaves the other worker idle at the end.
# Order of session 8's per-file times (`--durations=0`, idle machine).
LONGEST_FIRST = (
    "test_examples.py", "test_sparsity.py", "test_optimizers.py", "test_distributed.py",
    "test_readme.py", "test_compress.py", "test_light_import.py", "test_export.py",
    "test_jax_backend.py", "test_gpu_benchmark.py", "test_cli.py", "test_hostile.py",
    "test_legacy.py", "test_channels.py", "test_torch_backend.py", "test_noise.py",
    "test_experiments.py", "test_sweep.py",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
