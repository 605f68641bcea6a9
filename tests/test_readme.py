"""Every Python block of the README runs as written, and says what it should.

Each block runs in an empty folder (what it writes goes there) with fresh
globals, as a user would paste it: in this process (a Python start and the
TensorFlow import cost seconds each), except a block that switches to
tf_keras (`TF_USE_LEGACY_KERAS`), which gets a process of its own.
"""

import re
from pathlib import Path

import pytest
from helpers import HANG_GUARD_S
from helpers import NOISE
from helpers import run_python

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
# What each block must print (a phrase), in README order.
EXPECT = [
    "hidden units 154",
    "meets the budget: True",
    "(after a masked fine-tune): ",  # the protocol's headline, fine-tuned line included
    "'accuracy'",
    "hidden units 26",
    "kernel sparsity 0.9",
    "board accuracy matches the card: True",  # with BOARD_CHECK appended
]
# The board snippet defines `litert_predict`; run it on a committed model and
# compare with the accuracy its card states.
BOARD_CHECK = f"""
import json
from keras_heavytail.experiments import load_dataset
path = {str(ROOT / "saved_models" / "edge" / "pruned_sparse_int8.tflite")!r}
card = json.load(open(path[: -len(".tflite")] + ".json"))
data = load_dataset("digits")
accuracy = float(np.mean(litert_predict(path, data.x_test) == data.y_test))
stated = card["litert_evaluation"]["accuracy"]
print("board accuracy matches the card:", abs(accuracy - stated) <= 0.005)
"""


def test_every_block_has_an_expectation():
    assert len(BLOCKS) == len(EXPECT)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(EXPECT)))
def test_readme_block_runs(index, tmp_path, monkeypatch, capfd):
    code = BLOCKS[index] + (BOARD_CHECK if "def litert_predict" in BLOCKS[index] else "")
    if "TF_USE_LEGACY_KERAS" in code:
        # Forked from a process that imported tf_keras (`warm`): the block
        # sets the variable itself, as a user's script would.
        env = {"TF_USE_LEGACY_KERAS": "1"}
        result = run_python(code, env=env, cwd=tmp_path, timeout=HANG_GUARD_S, warm=True)
        stdout, stderr = result.stdout, result.stderr
    else:
        monkeypatch.chdir(tmp_path)
        exec(compile(code, f"README block {index}", "exec"), {"__name__": "__main__"})
        stdout, stderr = capfd.readouterr()  # file descriptors: C++ logs too
    assert EXPECT[index] in stdout, stdout[-2000:]
    # No TensorFlow or absl line, no export chatter, no retracing warning
    # (TensorFlow's start-up lines come before this process's first test).
    for stream in (stdout, stderr):
        found = NOISE.search(stream)
        assert found is None, stream[max(0, found.start() - 300) : found.end() + 300]


def test_readme_commands_are_the_ci_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if "pytest" in line).strip()
    assert test_command in README
    assert ".venv/bin/keras-heavytail demo" in README


def test_readme_commands_and_blocks_write_under_results():
    """Run in a checkout, nothing the README runs leaves a file git shows:
    every `--output` of the command-line section and every file a block
    saves is under the ignored `results/`."""
    commands = [line.split("#")[0].split() for line in README.splitlines()
                if line.strip().startswith("keras-heavytail ")]  # fmt: skip
    outputs = [c[c.index("--output") + 1] for c in commands if "--output" in c]
    assert len(outputs) >= 5, commands
    assert all(o.startswith("results/") for o in outputs), outputs
    saved = re.findall(r"""\.save\(\s*["']([^"']+)["']""", "\n".join(BLOCKS))
    saved += re.findall(r"""export_tflite\(\s*\w+,\s*["']([^"']+)["']""", "\n".join(BLOCKS))
    assert saved and all(path.startswith("results/") for path in saved), saved


def test_blocks_import_the_package_before_keras():
    from test_examples import first_imports

    for block in BLOCKS:
        ours, theirs = first_imports(block)
        if theirs < len(block.splitlines()):  # the block imports keras
            assert ours < theirs, block[:300]
