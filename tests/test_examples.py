"""Every example runs offline, in a tiny configuration."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = {
    "quickstart.py": [],
    "one_hidden_layer.py": ["--widths", "32", "64", "--epochs", "1", "--seeds", "0"],
    "cnn_filters.py": ["--epochs", "1", "--width", "32"],
    "keras_pipeline.py": ["--epochs", "2", "--width", "32", "--mixed-precision"],
    "deploy_edge.py": ["--epochs", "1", "--runs", "5"],
    "mobilenet_edge.py": [
        "--epochs", "1", "--fine-tune-epochs", "1", "--runs", "5", "--limit", "200",
        "--optimizers", "HeavyTailSGD",
    ],
}
EXPECT = {
    "quickstart.py": "HeavyTailSGD: test accuracy",
    "one_hidden_layer.py": "| 64 | HeavyTailSGD |",
    "cnn_filters.py": "max |shrunk - masked| = 0.0e+00",
    "keras_pipeline.py": "HeavyTailNoise(Adam): best checkpoint",
    "deploy_edge.py": "| shrunk_int8 |",
    "mobilenet_edge.py": "| HeavyTailSGD | shrunk int8 |",
}


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name, tmp_path):
    args = list(EXAMPLES[name])
    if name == "one_hidden_layer.py":
        args += ["--plot", str(tmp_path / "curves.png")]
    if name == "deploy_edge.py":
        args += ["--output", str(tmp_path / "edge")]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert EXPECT[name] in result.stdout, result.stdout[-2000:]
