"""Every example runs offline in a copy of the checkout and leaves it clean.

One copy of the repository (a git clone with the working tree's files laid
over it and committed, so it holds exactly what is being tested) runs each
example in a tiny configuration; then `git status` there must show nothing:
committed artifacts are regenerated only by explicit commands, and
everything else goes under the ignored `results/`. The demo runs end to end
in `test_cli.py`; here its default output folder is checked to be ignored.
"""

import concurrent.futures
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import NOISE
from helpers import run_python

ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = {
    "quickstart.py": [],
    "one_hidden_layer.py": ["--widths", "32", "64", "--epochs", "1", "--seeds", "0"],
    "cnn_filters.py": ["--epochs", "1", "--width", "32"],
    "keras_pipeline.py": ["--epochs", "2", "--width", "32", "--mixed-precision"],
    "deploy_edge.py": ["--epochs", "1", "--runs", "5"],
    "gradual_pruning.py": ["--epochs", "2", "--width", "64"],
    "tfmot_pruning.py": ["--epochs", "2", "--qat-epochs", "1", "--width", "64"],
    "mobilenet_edge.py": [
        "--epochs", "0", "--steps", "1", "--fine-tune-epochs", "0", "--runs", "5",
        "--limit", "120",
    ],
}
# Examples that switch to tf_keras (`TF_USE_LEGACY_KERAS`).
USES_TF_KERAS = {"tfmot_pruning.py": {"TF_USE_LEGACY_KERAS": "1"}}
EXPECT = {
    "quickstart.py": "What to conclude:",
    "one_hidden_layer.py": "| 64 | HeavyTailSGD |",
    "cnn_filters.py": "shrunk = masked up to rounding: yes",
    "keras_pipeline.py": "HeavyTailNoise(Adam): best checkpoint",
    "deploy_edge.py": "| shrunk_int8 |",
    "gradual_pruning.py": "58 of 64 hidden neurons removed",
    "tfmot_pruning.py": "| pqat_int8_dense |",
    "mobilenet_edge.py": "| SGD | compressed int8 |",
}


def _git(*args, cwd):
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def _copy_of_the_checkout(target):
    """A clone whose HEAD is the working tree as it is now."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    _git("clone", "-q", "--no-hardlinks", str(ROOT), str(target), cwd=ROOT)
    files = _git("ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
        elif not source.exists() and (target / name).exists():
            (target / name).unlink()  # deleted in the working tree
    _git("add", "-A", cwd=target)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "wip",
         "--allow-empty", cwd=target)  # fmt: skip
    return target


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Runs every example in one copy; returns outputs and status."""
    copy = _copy_of_the_checkout(tmp_path_factory.mktemp("checkout") / "repo")
    env = {"PYTHONPATH": str(copy)}
    commands = {}
    for name, args in EXAMPLES.items():
        commands[name] = [str(copy / "examples" / name), *args]
    # Two at a time: each is mostly one core's work. Each is forked from a
    # process that imported TensorFlow and Keras (`warm`), or tf_keras for an
    # example that switches to it (it sets the variable itself too).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(run_python, args=args, cwd=copy, check=False, warm=True,
                              env={**env, **USES_TF_KERAS.get(name, {})})  # fmt: skip
            for name, args in commands.items()
        }
        outputs = {name: future.result() for name, future in futures.items()}
    return outputs, _git("status", "--porcelain", cwd=copy), copy


def first_imports(source):
    """Line numbers of the first import of keras_heavytail and of Keras or
    TensorFlow in `source` (its length when there is none)."""
    lines = source.splitlines()

    def first(test):
        return next((i for i, line in enumerate(lines) if test(line.split("#")[0].strip())),
                    len(lines))  # fmt: skip

    ours = first(lambda s: s.startswith(("import keras_heavytail", "from keras_heavytail")))
    theirs = first(lambda s: s in ("import keras", "import tf_keras", "import tensorflow")
                   or s.startswith(("import tensorflow as", "from keras ", "from keras.")))  # fmt: skip
    return ours, theirs


def test_every_example_imports_the_package_before_keras():
    # `import keras_heavytail` imports Keras with TensorFlow's start-up lines
    # hidden (test_light_import.py); a keras or tf_keras import before it
    # would print them.
    for path in sorted((ROOT / "examples").glob("*.py")):
        ours, theirs = first_imports(path.read_text())
        assert ours < theirs, path.name


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name, ran):
    result = ran[0][name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert EXPECT[name] in result.stdout, result.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_output_holds_no_tensorflow_log_lines(name, ran):
    result = ran[0][name]
    for stream in (result.stdout, result.stderr):
        found = NOISE.search(stream)
        assert found is None, stream[max(0, found.start() - 300) : found.end() + 300]


@pytest.mark.slow
def test_examples_leave_the_checkout_clean(ran):
    assert ran[1] == "", f"running them changed the checkout:\n{ran[1]}"


@pytest.mark.slow
def test_mobilenet_edge_writes_a_card_for_each_model(ran):
    folder = ran[2] / "results" / "mobilenet_edge"
    dense = json.loads((folder / "sgd_dense.json").read_text())
    small = json.loads((folder / "sgd_compressed_int8.json").read_text())
    assert small["compress"]["budget"] == {"macs": 0.4}
    assert small["macs"] <= 0.4 * dense["macs"]
    assert small["export"]["quantization"] == "int8"
    assert small["bytes"] == (folder / "sgd_compressed_int8.tflite").stat().st_size
    # The accuracy on the card is the one the table printed.
    line = next(x for x in ran[0]["mobilenet_edge.py"].stdout.splitlines()
                if x.startswith("| SGD | compressed int8 |"))  # fmt: skip
    assert f"{small['litert_evaluation']['accuracy']:.4f}" in line


def test_the_demos_default_output_is_ignored_by_git():
    from keras_heavytail.experiments import parser

    default = next(d for flags, d, _ in parser.options("demo") if "--output" in flags)
    for name in ("report.md", "models/sgd.keras", "sgd/shrunk_int8.tflite"):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", f"{default}/{name}"], cwd=ROOT
        )
        assert ignored.returncode == 0, f"{default}/{name} would show in git status"
