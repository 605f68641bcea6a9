"""Test configuration: TensorFlow as the backend, its C++ logs off, fixtures.

Helpers live in `helpers.py`, a module the tests import.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Two workers (and the processes they start) share the cores: one TensorFlow
# op thread each spends less CPU spinning than a pool per process per core.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")
