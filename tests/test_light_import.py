"""The package is light and backend-neutral (each case in a fresh process).

On JAX, Keras itself imports TensorFlow when it is installed (its
`serialize_keras_object` asks `tf.available`), so the JAX case blocks the
TensorFlow import, as on a machine without it: any import of TensorFlow on
our path then fails the test, and the core must still train, measure,
prune and shrink.
"""

import importlib.util

import pytest
from helpers import run_python

BLOCK_TENSORFLOW = """
import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_probability", "tf_keras"):
            raise ImportError(f"{name} is not installed here (blocked by the test)")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
"""

JAX_CORE = (
    BLOCK_TENSORFLOW
    + """
import numpy as np, keras
import keras_heavytail as kht
assert keras.backend.backend() == "jax"
x = np.random.default_rng(0).normal(size=(128, 8)).astype("float32")
y = np.arange(128) % 3
model = kht.experiments.build_model("mlp", (8,), 3, width=32)
opt = kht.HeavyTailSGD(0.05, sigma=0.01, seed=0)
opt.exclude_from_noise(kht.paper_exclusions(model))
model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, epochs=2, batch_size=32, verbose=0)
kht.compressibility_report(model)
pruned = kht.prune(model, 0.5, structure="neuron")
small = kht.shrink(pruned)
assert small.get_layer("hidden1").units == 16
np.testing.assert_allclose(small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
kht.experiments.pruning_curve(model, x, y, ratios=[0.0, 0.5], from_logits=True)
# compress to a MACs budget, with Taylor gradients (JAX's grad) and distillation
dense = kht.count_macs(model).macs
result = kht.compress(model, (x, y), (x, y), kht.Budget(macs=0.5), importance="taylor",
                      steps=1, fine_tune_epochs=1, verbose=False)
assert result.cost.macs <= dense / 2, (result.cost.macs, dense)
try:
    kht.export_tflite
except ImportError as error:
    assert "needs TensorFlow installed" in str(error), error
else:
    raise AssertionError("export_tflite loaded on JAX")
heavy = [m for m in ("tensorflow", "tensorflow_probability", "tf_keras") if m in sys.modules]
print("loaded:", heavy)
"""
)

TF_LAZY = """
import sys
import keras  # on TensorFlow it loads matplotlib and sklearn itself, if installed
optional = ("tensorflow_probability", "tf_keras", "ai_edge_litert", "matplotlib",
            "tensorflow_model_optimization", "sklearn", "tqdm")
already = {m for m in optional if m in sys.modules}
import keras_heavytail as kht
print("after import:", [m for m in optional if m in sys.modules and m not in already])
kht.optimizers.SymmetricStable
print("after SymmetricStable:", "tensorflow_probability" in sys.modules)
kht.export_tflite
print("after export_tflite:", "ai_edge_litert" in sys.modules or "tensorflow.lite" in sys.modules)
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_jax_core_trains_prunes_and_shrinks_without_tensorflow():
    result = run_python(JAX_CORE, env={"KERAS_BACKEND": "jax"})
    assert "loaded: []" in result.stdout, result.stdout + result.stderr[-2000:]


def test_tensorflow_only_pieces_load_on_first_use():
    result = run_python(TF_LAZY)
    assert "after import: []" in result.stdout, result.stdout
    assert "after SymmetricStable: True" in result.stdout


def test_lazy_mode_imports_nothing_until_asked():
    result = run_python(
        "import sys, keras_heavytail as kht\n"
        "print('keras' in sys.modules)\n"
        "kht.HeavyTailSGD\n"
        "print('keras' in sys.modules)",
        env={"KERAS_HEAVYTAIL_LAZY": "1"},
    )
    assert result.stdout.split() == ["False", "True"]


def test_importing_the_package_first_hides_tensorflows_start_up_lines():
    # TensorFlow 2.21 prints them whatever TF_CPP_MIN_LOG_LEVEL says; the
    # README blocks and the examples import keras_heavytail before keras.
    from helpers import NOISE

    # TensorFlow's first look for devices (cuInit) prints one more line, at
    # the first operation: a user's first model and step.
    code = (
        "import keras_heavytail as kht\nimport keras, numpy as np\n"
        "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
        "m.compile(optimizer=kht.HeavyTailSGD(0.1, seed=0), loss='mse')\n"
        "m.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)\n"
        "print(keras.backend.backend())"
    )
    result = run_python(code, env={"TF_CPP_MIN_LOG_LEVEL": None})  # a user's shell
    assert result.stdout.strip() == "tensorflow"
    assert NOISE.search(result.stderr) is None, result.stderr[-2000:]
    # The same lines are there when keras comes first: the check can fail.
    result = run_python("import keras", env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert NOISE.search(result.stderr) is not None
