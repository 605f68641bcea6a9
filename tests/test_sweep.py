"""`run_sweep`: a killed sweep resumes without retraining; another grid is refused."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import HANG_GUARD_S

from keras_heavytail import files
from keras_heavytail.experiments import sweep
from keras_heavytail.experiments.datasets import load_dataset

SCRIPT = """
import sys
import keras_heavytail as kht
from keras_heavytail.experiments import sweep
data = kht.experiments.load_dataset("digits", limit=200)
grid = sweep.Grid(sigma=[{sigma}], alpha=[1.5, 1.75], seeds=[0], width=[24], epochs=2,
                  fine_tune_epochs=0)
sweep.run_sweep(data, grid, sys.argv[1], progress=False)
print("sweep done")
"""


def _rows(path):
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


def _start(output, sigma=0.01):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(sigma=sigma), str(output)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_another_grid_is_refused(tmp_path):
    output = tmp_path / "sweep"
    log = output / "default_w24" / "runs.jsonl"
    first = _start(output)
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and first.poll() is None:
        if log.exists() and len(_rows(log)) >= 1:
            first.send_signal(signal.SIGKILL)  # mid-sweep, as a crash would
            break
        time.sleep(0.05)
    first.wait(timeout=HANG_GUARD_S)
    before = _rows(log)
    assert len(before) >= 1
    # The rerun, in this process: what it reads is all on disk.
    data = load_dataset("digits", limit=200)
    grid = sweep.Grid(sigma=[0.01], alpha=[1.5, 1.75], seeds=[0], width=[24], epochs=2,
                      fine_tune_epochs=0)  # fmt: skip
    sweep.run_sweep(data, grid, str(output), progress=False)
    after = _rows(log)
    assert len(after) == 3  # SGD and two noisy settings
    # Finished runs were skipped, not retrained: their rows are unchanged,
    # training time included.
    assert after[: len(before)] == before
    table = (output / "sweep.md").read_text()
    assert table.count("| default | 24 |") == 3
    # One seed: the neuron counts are whole numbers, accuracies 3 decimals.
    cells = next(x for x in table.splitlines() if "| SGD |" in x).split(" | ")
    assert re.fullmatch(r"0\.\d{3}", cells[3]) and re.fullmatch(r"\d+", cells[4]), cells
    # Without fine-tuning, no fine-tuned columns (not columns of "nan").
    assert "fine-tuned" not in table and "nan" not in table, table
    assert not (output / "runs.jsonl.lock").exists()
    # Another grid into the same folder: refused before training, nothing changed.
    grid = sweep.Grid(sigma=[0.02], alpha=[1.5, 1.75], seeds=[0], width=[24], epochs=2,
                      fine_tune_epochs=0)  # fmt: skip
    with pytest.raises(files.RunLogError, match="different job"):
        sweep.run_sweep(data, grid, str(output), progress=False)
    assert _rows(log) == after


def test_a_live_lock_refuses_a_second_writer_and_a_dead_one_does_not(tmp_path):
    path = tmp_path / "runs.jsonl"
    with files.RunLog(path, {"a": 1}):
        with pytest.raises(files.RunLogError, match="being written by another job"):
            files.RunLog(path, {"a": 1}).__enter__()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (tmp_path / "runs.jsonl.lock").write_text(dead)  # a crashed job's lock
    with files.RunLog(path, {"a": 1}) as log:
        log.append({"run": 1})
    with files.RunLog(path, {"a": 1}) as log:
        assert log.find(run=1) == {"run": 1}


def test_grid_validation():
    with pytest.raises(ValueError, match="Received: 'maybe'"):
        sweep.Grid(anneal=["maybe"])
    with pytest.raises(ValueError, match="`sigma` needs at least one value"):
        sweep.Grid(sigma=[])
    # Protocol fields are checked when the grid is made, not when a run log
    # already exists (a bad value would then block the corrected rerun).
    with pytest.raises(ValueError, match="Received: fine_tune_epochs=-1"):
        sweep.Grid(fine_tune_epochs=-1)
    assert sweep.Grid(fine_tune_epochs=np.int64(0)).fine_tune_epochs == 0


def test_numpy_values_label_settings_as_python_numbers():
    grid = sweep.Grid(alpha=np.array([1.5, 1.75]), sigma=[np.float64(0.01)], width=[np.int64(8)])
    labels = [s.label for s in grid.settings()]
    assert labels[1:] == ["neuron, alpha=1.5, sigma=0.01", "neuron, alpha=1.75, sigma=0.01"]
    assert type(grid.width[0]) is int
