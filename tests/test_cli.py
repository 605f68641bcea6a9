"""The keras-heavytail command, end to end in tiny configurations."""

import json
import subprocess
import sys

import pytest

from keras_heavytail import cli

COMMANDS = ["demo", "reproduce", "train", "analyze", "prune", "export", "benchmark"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: keras-heavytail" in capsys.readouterr().out


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "keras_heavytail", "--help"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "demo" in result.stdout


@pytest.mark.slow
def test_demo_writes_report_models_and_cards(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(
        [
            "demo",
            "--output",
            str(out),
            "--epochs",
            "2",
            "--width",
            "64",
            "--seeds",
            "1",
            "--runs",
            "5",
        ]
    )
    assert code == 0
    report = (out / "report.md").read_text()
    assert "| SGD |" in report and "HeavyTailSGD(neuron" in report
    assert "## What it shows" in report and "shrunk_int8" in report
    payload = json.loads((out / "report.json").read_text())
    assert {r["setting"] for r in payload["runs"]} == {
        "SGD",
        payload["runs"][-1]["setting"],
    }
    for name in ("sgd", "heavytail"):
        for variant in ("dense_float32", "pruned_sparse_int8", "shrunk_int8"):
            card = json.loads((out / name / f"{variant}.json").read_text())
            assert 0.0 <= card["litert_evaluation"]["accuracy"] <= 1.0
    assert (out / "pruning_curves.png").stat().st_size > 1000
    logged = [
        json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()
    ]
    assert [r["setting"] for r in logged] == [r["setting"] for r in payload["runs"]]
    assert "Report:" in capsys.readouterr().out


@pytest.mark.slow
def test_train_analyze_prune_export_benchmark_chain(tmp_path, capsys):
    model = str(tmp_path / "m.keras")
    common = ["--width", "32", "--epochs", "1", "--limit", "200"]
    assert cli.main(["train", "--output", model, "--sigma", "0.01", *common]) == 0
    assert cli.main(["analyze", model, "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("{") :])["rows"]
    assert rows[-1]["layer"] == "(model)"
    small = str(tmp_path / "small.keras")
    assert (
        cli.main(["prune", model, "--ratio", "0.5", "--shrink", "--output", small]) == 0
    )
    assert "parameters" in capsys.readouterr().out
    tflite = str(tmp_path / "m.tflite")
    args = [
        "export",
        small,
        "--output",
        tflite,
        "--quantize",
        "int8",
        "--evaluate",
        "--limit",
        "200",
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert '"quantization": "int8"' in printed and '"accuracy"' in printed
    assert cli.main(["benchmark", tflite, "--runs", "5"]) == 0
    assert "median_ms" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["reproduce", "--dataset", "mnist", "--data", "/nonexistent"],
            "was not found",
        ),
        (["analyze", "/nonexistent.keras"], "no model file"),
        (["benchmark", "/nonexistent.tflite"], "No .tflite file"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    argv, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_ratio_is_a_one_line_error(tmp_path, capsys):
    import keras

    path = str(tmp_path / "m.keras")
    keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)]
    ).save(path)
    assert cli.main(["prune", path, "--ratio", "1.5"]) == 2
    assert "Received: ratio=1.5" in capsys.readouterr().err


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--width", "-3"])
    assert exit_info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
