"""The public surface: every name in `__all__` imports and is documented."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_python

import keras_heavytail

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", keras_heavytail.__all__)
def test_public_name_imports_and_has_a_docstring(name):
    obj = getattr(keras_heavytail, name)
    assert obj.__doc__ and len(obj.__doc__.strip()) > 40, name


def test_importing_the_package_leaves_tf_keras_alone():
    # tfmot sets TF_USE_LEGACY_KERAS=1 for the whole process; the Keras 3
    # path must never import it.
    code = (
        "import os, sys, keras_heavytail; "
        "assert 'tensorflow_model_optimization' not in sys.modules; "
        "assert os.environ.get('TF_USE_LEGACY_KERAS') is None; print('ok')"
    )
    # Forked from a process that imported only TensorFlow and Keras (`warm`).
    out = run_python(code, warm=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_test_process_itself_stays_on_keras_3():
    # Collecting every test module must not have imported tfmot here.
    assert os.environ.get("TF_USE_LEGACY_KERAS") is None
    assert "tensorflow_model_optimization" not in sys.modules


def test_ruff_lint_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run(
        [ruff, "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:]


MOVED_MODULES = ["channels", "noise", "training", "datasets", "topology", "shrinking"]


def test_release_0_2_module_paths_still_import_with_a_warning():
    code = (
        "import warnings, importlib\n"
        "import keras_heavytail\n"
        f"for old in {MOVED_MODULES!r}:\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module('keras_heavytail.' + old)\n"
        "    print(old, '->', module.__name__, '|', *[w.message for w in caught])\n"
    )
    out = run_python(code, warm=True, check=False)  # nothing of ours imported yet
    lines = out.stdout.splitlines()
    assert len(lines) == len(MOVED_MODULES), out.stdout + out.stderr[-2000:]
    for old, line in zip(MOVED_MODULES, lines):
        moved, message = line.split(" | ")
        assert moved.startswith(f"{old} -> keras_heavytail.") and moved.count(".") == 2
        assert f"`keras_heavytail.{old}` moved to `keras_heavytail." in message, line


def test_release_0_2_flat_names_still_work_with_a_warning():
    with pytest.warns(DeprecationWarning, match="moved to `keras_heavytail.experiments"):
        load = keras_heavytail.load_dataset
    assert load is keras_heavytail.experiments.load_dataset
    with pytest.warns(DeprecationWarning, match="'norm' is called 'magnitude'"):
        keras_heavytail.pruning.importance.check_importance("norm")


def test_names_that_left_noise_update_still_resolve_with_a_warning():
    from keras_heavytail.optimizers import divergence
    from keras_heavytail.optimizers import exclusions
    from keras_heavytail.optimizers import noise_args
    from keras_heavytail.optimizers import noise_update

    for name, home in [("fan_in", noise_args), ("check_sigma", noise_args),
                       ("paper_exclusions", exclusions), ("DIVERGENCE_ADVICE", divergence),
                       ("DivergenceWarning", divergence)]:  # fmt: skip
        with pytest.warns(DeprecationWarning, match=f"moved to `{home.__name__}.{name}`"):
            assert getattr(noise_update, name) is getattr(home, name)
    with pytest.raises(AttributeError):
        noise_update.no_such_name  # noqa: B018
