"""LiteRT export of Keras 3 models, checked in the interpreter.

- `export_tflite`: float32, dynamic, float16 or calibrated full-int8 files,
  optionally with sparse storage.
- `predict_tflite`, `evaluate_tflite`, `benchmark_tflite`: the interpreter,
  as an edge device runs it (one thread by default); `format_latency` (no
  TensorFlow needed) writes a time with 3 significant figures and its unit.
- `model_card`: a JSON card beside each exported file.
- `export_variants`: the four edge variants of a model, with their cards.

Every name here loads TensorFlow on first use. Export works on the TensorFlow
backend and on JAX (Keras writes the SavedModel through jax2tf); on PyTorch,
and without TensorFlow installed, the first use says what to do.
"""

from typing import TYPE_CHECKING

from keras_heavytail import lazy

_WHERE = {
    "ExportReport": "litert",
    "benchmark_tflite": "litert",
    "evaluate_tflite": "litert",
    "export_tflite": "litert",
    "export_variants": "deploy",
    "format_latency": "cards",
    "library_versions": "cards",
    "load_interpreter": "litert",
    "model_card": "cards",
    "predict_tflite": "litert",
}
__getattr__, __dir__ = lazy.attach(
    __name__, _WHERE, tensorflow_only=("deploy", "litert"),
)

if TYPE_CHECKING:
    from keras_heavytail.export.cards import format_latency
    from keras_heavytail.export.cards import library_versions
    from keras_heavytail.export.cards import model_card
    from keras_heavytail.export.deploy import export_variants
    from keras_heavytail.export.litert import ExportReport
    from keras_heavytail.export.litert import benchmark_tflite
    from keras_heavytail.export.litert import evaluate_tflite
    from keras_heavytail.export.litert import export_tflite
    from keras_heavytail.export.litert import load_interpreter
    from keras_heavytail.export.litert import predict_tflite

__all__ = [
    "ExportReport",
    "benchmark_tflite",
    "evaluate_tflite",
    "export_tflite",
    "export_variants",
    "format_latency",
    "library_versions",
    "load_interpreter",
    "model_card",
    "predict_tflite",
]
