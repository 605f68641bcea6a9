"""The keras-heavytail command, end to end in tiny configurations."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import run_python

import keras_heavytail as kht
from keras_heavytail.experiments import cli
from keras_heavytail.experiments import parser

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "demo", "reproduce", "sweep", "train", "analyze", "prune", "compress", "export",
    "benchmark",
]  # fmt: skip


def test_every_subcommand_is_tested():
    parser.build_parser()
    assert sorted(parser.SUBCOMMANDS) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_option_and_shows_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: keras-heavytail " + command)
    parser.build_parser()
    assert len(parser.SUBCOMMANDS[command].description) > 20
    for flags, default, help_text in parser.options(command):
        assert help_text, (command, flags)
        if flags and default not in (None, False, "==SUPPRESS=="):
            assert f"(default: {default})" in text, (command, flags)


def test_help_imports_no_keras_and_the_module_entry_point_works():
    launcher = shutil.which("keras-heavytail") or str(
        Path(sys.executable).parent / "keras-heavytail"
    )
    code = (
        "import sys, runpy; sys.argv = ['keras-heavytail', '--help'];\n"
        "import keras_heavytail_cli\n"
        "try:\n    keras_heavytail_cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "print('heavy:', heavy)"
    )
    result = run_python(code)
    assert "heavy: []" in result.stdout and "demo" in result.stdout
    assert os.path.exists(launcher)
    result = run_python(args=["-m", "keras_heavytail", "--help"])
    assert "sweep" in result.stdout and result.stderr == ""
    # `python -m` loads lazily too: no Keras, no TensorFlow for --help.
    result = run_python(args=["-X", "importtime", "-m", "keras_heavytail", "--help"])
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "keras_heavytail.experiments.parser" in imported
    assert not imported & {"keras", "tensorflow"}, imported & {"keras", "tensorflow"}
    # `benchmark` runs LiteRT alone.
    tflite = ROOT / "saved_models" / "edge" / "shrunk_int8.tflite"
    code = code.replace("'--help']", f"'benchmark', {str(tflite)!r}, '--runs', '3']")
    result = run_python(code)
    assert "heavy: []" in result.stdout and "median_ms" in result.stdout
    # A line to read (3 significant figures and a unit), then the JSON.
    assert re.search(r"median \d\.\d\d µs|median \d+(\.\d+)? (µs|ms), p90 ", result.stdout)


def test_argument_and_path_mistakes_are_answered_before_keras_is_imported(tmp_path):
    (tmp_path / "m.keras").write_text("not a model")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("mine")
    cases = [
        (["train", "--output", "m.keras"], "--output 'm.keras' exists; pass --overwrite"),
        (["prune", "nope.keras", "--ratio", "0.5", "--output", "p.keras"], "no model file"),
        (["prune", "m.keras", "--output", "p.keras"], "give --ratio R or --criterion"),
        (["export", "m.keras", "--output", "m.tflite"], "not a .keras file"),
        (["compress", "m.keras", "--output", "c.keras"], "give a budget"),
        (["reproduce", "--output", "out"], "already holds 'report.md'"),
    ]
    code = (
        "import sys\nfrom keras_heavytail.experiments import cli\n"
        f"for argv in {[argv for argv, _ in cases]!r}:\n"
        "    print(cli.main(argv))\n"
        "print('heavy:', [m for m in ('tensorflow', 'keras') if m in sys.modules])"
    )
    result = run_python(code, env={"KERAS_HEAVYTAIL_LAZY": "1"}, cwd=tmp_path)
    assert result.stdout.split()[: len(cases)] == ["2"] * len(cases)
    assert "heavy: []" in result.stdout
    lines = result.stderr.strip().splitlines()
    for (argv, message), line in zip(cases, lines, strict=True):
        assert message in line, (argv, line)


@pytest.mark.slow
def test_demo_writes_report_models_and_cards_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    # No masked fine-tuning in the iso-accuracy search (test_experiments
    # covers it): the demo's own steps are what is checked here.
    argv = ["demo", "--output", str(out), "--epochs", "2", "--fine-tune-epochs", "0",
            "--width", "32", "--seeds", "1", "--runs", "5"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    first = lines[lines.index("Summary:") + 1]
    assert "neurons keep SGD's accuracy" in first and "ratio" in first
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("**HeavyTailSGD(neuron")
    assert "neurons_at_iso_accuracy`: fewest hidden units" in report
    assert "shrunk_int8" in report and "µs" in report
    payload = json.loads((out / "report.json").read_text())
    assert [r["setting"] for r in payload["runs"]][0] == "SGD"
    for run in payload["runs"]:
        for key in ("neurons_at_iso_accuracy", "params_at_iso_accuracy",
                    "test_accuracy_at_iso"):  # fmt: skip
            assert isinstance(run[key], (int, float)), key
    assert "iso_neuron_ratio_vs_sgd" in payload["table"][1]
    for name, run in zip(("sgd", "heavytail"), payload["runs"]):
        # The dense LiteRT model is the trained one: same test accuracy
        # within one example of 360 (float reassociation on a borderline one).
        card = json.loads((out / name / "dense_float32.json").read_text())
        dense = card["litert_evaluation"]["accuracy"]
        assert abs(dense - run["test_accuracy"]) <= 1 / 360 + 1e-9
        for variant in ("pruned_sparse_int8", "shrunk_int8"):
            card = json.loads((out / name / f"{variant}.json").read_text())
            assert 0.1 < card["litert_evaluation"]["accuracy"] <= 1.0
    assert (out / "pruning_curves.png").stat().st_size > 1000
    # A rerun resumes: both runs come from the log, none is trained again.
    log = (out / "runs.jsonl").read_text()
    assert cli.main(argv) == 0
    assert (out / "runs.jsonl").read_text() == log
    assert capsys.readouterr().out.count("(resumed: from the run log") == 2
    # Without a saved model (as in a fresh clone, where they are ignored) its
    # run is retrained for the model, and the log keeps one row each.
    saved = sorted((out / "models").glob("*.keras"))
    assert len(saved) == 2
    saved[0].unlink()
    assert cli.main(argv) == 0
    assert saved[0].is_file()
    assert (out / "runs.jsonl").read_text() == log
    # Other arguments into the same folder are refused, and nothing changes.
    assert cli.main([*argv[:-6], "--width", "16", *argv[-4:]]) == 2
    assert "different job" in capsys.readouterr().err
    assert (out / "runs.jsonl").read_text() == log


@pytest.mark.slow
def test_export_calibrates_on_the_dataset_the_model_was_trained_on(tmp_path, capsys):
    # teacher_student inputs are 30 numbers: digits (the default) would not
    # even fit; the data card beside the .keras file says what to use.
    model = str(tmp_path / "t.keras")
    assert cli.main(["train", "--dataset", "teacher_student", "--width", "8", "--epochs",
                     "1", "--limit", "120", "--output", model]) == 0  # fmt: skip
    data_card = (tmp_path / "t.json").read_bytes()
    tflite = tmp_path / "t_int8.tflite"
    assert cli.main(["export", model, "--output", str(tflite), "--quantize", "int8",
                     "--limit", "120"]) == 0  # fmt: skip
    assert "the dataset the model was trained on" in capsys.readouterr().out
    card = json.loads(tflite.with_suffix(".json").read_text())
    assert card["dataset"]["name"] == "teacher_student"
    assert card["bytes"] == tflite.stat().st_size
    assert card["training"]["dataset"]["name"] == "teacher_student"
    # t.keras -> t.tflite: t.json is t.keras's data card; the model card
    # written there keeps its fields, so it still tells how t.keras was trained.
    assert cli.main(["export", model, "--output", str(tmp_path / "t.tflite")]) == 0
    assert "Model card:" in capsys.readouterr().out
    merged = json.loads((tmp_path / "t.json").read_text())
    for key, value in json.loads(data_card).items():
        assert merged[key] == value, key
    assert merged["model"] == "t.tflite" and merged["export"]["quantization"] == "float32"
    assert cli.main(["export", model, "--output", str(tflite), "--quantize", "int8",
                     "--limit", "120", "--overwrite"]) == 0  # fmt: skip
    assert "the dataset the model was trained on" in capsys.readouterr().out


def test_train_says_when_batch_norm_statistics_are_stale(tmp_path, capsys):
    # Four steps leave BatchNorm's moving averages (momentum 0.99) far from
    # the batch statistics: re-estimated, the same weights score far higher.
    model = tmp_path / "r.keras"
    assert cli.main(["train", "--architecture", "resnet", "--epochs", "1", "--limit", "200",
                     "--output", str(model)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    match = re.search(r"test accuracy is (0\.\d+), not (0\.\d+)", printed)
    assert match and float(match[1]) > float(match[2]) + 0.02, printed
    assert f"test accuracy {match[2]};" in printed  # the model saved, as trained


def test_train_analyze_prune_export_benchmark_chain(tmp_path, capsys, monkeypatch):
    model = str(tmp_path / "m.keras")
    common = ["--width", "32", "--epochs", "1", "--limit", "200"]
    assert cli.main(["train", "--output", model, "--sigma", "0.01", *common]) == 0
    printed = trained = capsys.readouterr().out
    assert "BatchNormalization" not in printed  # none in an MLP
    # Off a terminal (no live bar) a line per epoch shows progress.
    assert re.search(r"HeavyTailSGD.* seed 0: epoch 1/1, loss \d\.\d{3} \(\d+ s\)", printed), printed
    card = json.loads(Path(model).with_suffix(".json").read_text())
    assert card["raw_pixels"] is False
    assert card["optimizer"]["class"] == "HeavyTailSGD" and card["optimizer"]["config"]["sigma"] == 0.01
    assert "Optimizer: HeavyTailSGD(learning_rate=0.05" in printed and "sigma=0.01" in printed
    assert cli.main(["analyze", model]) == 0
    legend = capsys.readouterr().out
    assert "More compressible: lower tail_index" in legend and "- neuron_prune_ratio: " in legend
    assert cli.main(["analyze", model, "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("{") :])["rows"]
    assert rows[-1]["layer"] == "(model)" and rows[-1]["neurons"] == 42
    entry = str(tmp_path / "entry.keras")
    assert cli.main(["prune", model, "--ratio", "0.5", "--structure", "entry",
                     "--output", entry]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    # Half of the hidden kernel (64 x 32); the output layer is left alone.
    assert "zeroed 1,024 of 2,410" in printed and "sparsity 0.432" in printed
    small = str(tmp_path / "small.keras")
    assert cli.main(["prune", model, "--ratio", "0.5", "--shrink", "--output", small]) == 0
    printed = capsys.readouterr().out
    assert "shrunk to" in printed and "hidden units 32 -> 16" in printed
    # Both models scored on the data train used (the card's): the dense
    # score is the one train printed.
    trained_score = re.search(r"test accuracy (0\.\d{4})", trained).group(1)
    assert f"Test accuracy on 200 digits examples: {trained_score} -> " in printed
    assert keras.saving.load_model(small).layers[1].units == 16
    # The pruned model carries the data card: export calibrates as trained.
    assert json.loads(Path(small).with_suffix(".json").read_text())["raw_pixels"] is False
    tflite = str(tmp_path / "m.tflite")
    args = ["export", small, "--output", tflite, "--quantize", "int8", "--evaluate",
            "--limit", "200"]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert '"quantization": "int8"' in printed and '"sparse": false' in printed
    assert re.search(r"int8 calibrated on \d+ digits training inputs", printed), printed
    assert re.search(r"Keras 0\.\d{4}, LiteRT 0\.\d{4} \([+-]\d+\.\d\d points\)", printed), printed
    evaluation = json.loads(printed[printed.rindex("{") : printed.rindex("}") + 1])
    # m.json is m.keras's data card: export leaves it and writes no card.
    assert "No model card" in printed
    assert "raw_pixels" in json.loads(Path(model).with_suffix(".json").read_text())
    # The int8 file in LiteRT agrees with the shrunk Keras model on the same
    # standardised test split (int8 rounding may flip a few of 200 examples).
    data = kht.experiments.load_dataset("digits", limit=200)
    keras_accuracy = np.mean(
        np.argmax(keras.saving.load_model(small).predict(data.x_test, verbose=0), -1)
        == data.y_test
    )
    assert evaluation["examples"] == 200
    assert abs(evaluation["accuracy"] - keras_accuracy) <= 0.05
    assert cli.main(args) == 2  # the file exists now
    assert "--overwrite" in capsys.readouterr().err
    # Another --dataset than the card's is taken as asked, and said (here
    # its inputs do not fit the model: refused before anything is written).
    other = ["export", small, "--output", str(tmp_path / "o.tflite"), "--dataset",
             "teacher_student", "--evaluate"]  # fmt: skip
    assert cli.main(other) == 2
    said = capsys.readouterr()
    assert "trained on digits" in said.out and "inputs have shape (30,)" in said.err
    assert not (tmp_path / "o.tflite").exists()
    assert cli.main(["benchmark", tflite, "--runs", "5"]) == 0
    assert "median_ms" in capsys.readouterr().out
    # compress to half the parameters: one line, a data card, no backup left.
    half = tmp_path / "half.keras"
    from keras_heavytail.pruning import compress as compress_lib

    seen, real = [], compress_lib.compress
    monkeypatch.setattr(compress_lib, "compress", lambda *a, **k: seen.append(a) or real(*a, **k))
    assert cli.main(["compress", model, "--params", "0.5", "--steps", "1",
                     "--fine-tune-epochs", "0", "--limit", "200", "--output", str(half)]) == 0  # fmt: skip
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("MACs ") and "test accuracy" in last, last
    card = json.loads(half.with_suffix(".json").read_text())["compress"]
    assert card["params"] <= 0.5 * keras.saving.load_model(model).count_params()
    assert card["params"] == keras.saving.load_model(half).count_params()
    assert sorted(p.name for p in tmp_path.glob(".*")) == []
    # It fine-tunes on what `train` fitted on and judges on what it held out.
    seed = json.loads(Path(model).with_suffix(".json").read_text())["seed"]
    x_fit, y_fit, x_val, y_val = kht.experiments.load_dataset(
        "digits", limit=200).validation_split(seed=seed)  # fmt: skip
    (_, (xf, yf), (xv, yv), _) = seen[0]
    np.testing.assert_array_equal(yv, y_val)
    np.testing.assert_array_equal(xv.reshape(x_val.shape), x_val)
    np.testing.assert_array_equal(yf, y_fit)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["reproduce", "--dataset", "mnist", "--data", "/nonexistent"], "was not found"),
        (["analyze", "/nonexistent.keras"], "no model file"),
        (["benchmark", "/nonexistent.tflite"], "no .tflite file"),
        (["prune", "M", "--ratio", "0.5", "--structure", "entry", "--shrink",
          "--output", "x.keras"], "--shrink removes whole neurons"),  # fmt: skip
        (["prune", "M", "--output", "x.keras"], "give --ratio R"),
        (["train", "--output", "x.keras", "--noise", "entry", "neuron"], "give one --noise"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    path = str(tmp_path / "m.keras")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)]).save(path)
    truncated = tmp_path / "cut.keras"
    truncated.write_bytes(Path(path).read_bytes()[:500])
    cases = [
        (["prune", path, "--ratio", "0.5", "--output", str(tmp_path)], "is a folder"),
        (["analyze", str(truncated)], "not a .keras file"),
        (["demo", "--output", path], "is a file"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--output", "m.keras", "--width", "-3"], "expected a value in [1"),
        (["train", "--output", "m.keras", "--sigma", "nan"], "got 'nan'"),
        (["train", "--output", "m.keras", "--lr", "-0.05"], "got '-0.05'"),
        (["train", "--output", "m.keras", "--target-train-accuracy", "95"], "got '95'"),
        (["train", "--output", "m.keras", "--seed", "2147483647"], "got '2147483647'"),
        (["train", "--output", "m.keras", "--seed", "1", "2"], "unrecognized"),
        (["train", "--sigma", "0.1"], "--output"),
        (["benchmark", "m.tflite", "--warmup", "-5"], "got '-5'"),
    ],
)
def test_argument_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-heavytail {kht.__version__}"


def test_quiet_mode_hides_keras_and_tensorflow_warnings_not_ours():
    import warnings

    from keras_heavytail.experiments import cli_io

    with pytest.warns(UserWarning, match="ours") as caught:
        with cli_io.quiet(False):
            for module in ("keras.src.trainers", "tensorflow.python", "keras_heavytail.pruning"):
                text = "ours" if module.startswith("keras_heavytail") else "theirs"
                warnings.warn_explicit(text, UserWarning, "f.py", 1, module=module)
    assert [str(w.message) for w in caught] == ["ours"]
