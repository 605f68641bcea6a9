"""Every committed .tflite runs in LiteRT at the accuracy its card states."""

import inspect
import json
import re
import sys
from pathlib import Path

import pytest

from keras_heavytail.experiments import datasets
from keras_heavytail.export import litert as export

pytest.importorskip("ai_edge_litert", reason="LiteRT checks need ai-edge-litert")

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "saved_models").rglob("*.tflite"))


def test_there_are_committed_models():
    assert len(MODELS) >= 4


@pytest.mark.parametrize("path", MODELS, ids=[str(p.relative_to(ROOT)) for p in MODELS])
def test_card_accuracy_holds_in_litert(path):
    card = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size < 2 * 1024 * 1024
    assert card["bytes"] == path.stat().st_size
    for key in ("source", "training", "export", "litert_latency", "versions"):
        assert card.get(key), key
    info = card["dataset"]
    assert info["name"] == "digits", "committed models are checked on the embedded data"
    data = datasets.load_dataset("digits", seed=info["split_seed"])
    assert info["preprocessing"] == data.preprocessing
    # What a board applies to raw pixels (the README's Kotlin snippet reads it).
    assert info["input_transform"] == data.summary()["input_transform"]
    result = export.evaluate_tflite(path, data.x_test, data.y_test, from_logits=True)
    assert abs(result["accuracy"] - card["litert_evaluation"]["accuracy"]) <= 0.005


def test_readme_board_snippet_is_what_the_example_runs():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import deploy_edge
    finally:
        sys.path.pop(0)
    source = inspect.getsource(deploy_edge.litert_predict).strip()
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert any(source in block for block in blocks), (
        "README must show litert_predict as run"
    )
