"""`benchmarks/gpu_noise_overhead.py` runs, at a tiny size on the CPU.

It is written for a GPU; here it must start its engines (JAX and
TensorFlow, each in its own process), time every contender and print one
side-by-side table. The test checks that each cell is there, never a time.
"""

import importlib.util
import re
from pathlib import Path

import pytest
from helpers import HANG_GUARD_S
from helpers import run_python

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_noise_overhead.py"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_gpu_benchmark_runs_tiny_on_cpu():
    result = run_python(args=[str(SCRIPT), "--tiny"], timeout=HANG_GUARD_S)
    out = result.stdout
    assert "jax: cpu" in out and "tensorflow: cpu" in out, out
    rows = [
        line
        for line in out.splitlines()
        if line.startswith("| mlp") or line.startswith("| cnn")
    ]
    # 1 case x 4 optimizers, each with a time and a ratio for both engines.
    assert len(rows) == 4, out
    for row in rows:
        assert len(re.findall(r"\d+\.\d+ \(\d+\.\d+\)", row)) == 2, row
