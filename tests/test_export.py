"""TFLite export, checked in the LiteRT interpreter."""

import json

import keras
import numpy as np
import pytest

import keras_heavytail as kht
from keras_heavytail.experiments import datasets
from keras_heavytail.export import cards
from keras_heavytail.export import litert as export

pytest.importorskip("ai_edge_litert", reason="LiteRT checks need ai-edge-litert")


@pytest.fixture(scope="module")
def digits():
    return datasets.load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(digits.input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=kht.HeavyTailSGD(0.05, sigma=0.005, seed=0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(digits.x_train, digits.y_train, epochs=4, batch_size=32, verbose=0)
    return model


def test_float32_outputs_match_keras(trained, digits, tmp_path):
    report = export.export_tflite(trained, tmp_path / "m.tflite", sparse=False)
    assert report.quantization == "float32" and report.bytes > 4 * 64 * 128
    outputs, runtime = export.predict_tflite(report.path, digits.x_test)
    expected = trained.predict(digits.x_test, verbose=0)
    assert np.max(np.abs(outputs - expected)) < 1e-4
    assert runtime in ("xnnpack", "builtin")


def test_int8_accuracy_within_one_point(trained, digits, tmp_path):
    _, keras_accuracy = trained.evaluate(digits.x_test, digits.y_test, verbose=0)
    report = export.export_tflite(
        trained,
        tmp_path / "q.tflite",
        quantize="int8",
        representative_data=digits.x_train,
    )
    result = export.evaluate_tflite(report.path, digits.x_test, digits.y_test, from_logits=True)
    assert abs(result["accuracy"] - keras_accuracy) <= 0.01
    assert result["examples"] == len(digits.y_test)


def test_sparse_int8_falls_back_to_builtin_kernels_and_is_small(
    trained, digits, tmp_path
):
    pruned = kht.prune(trained, 0.9)
    dense = export.export_tflite(trained, tmp_path / "dense.tflite", sparse=False)
    small = export.export_tflite(
        pruned,
        tmp_path / "small.tflite",
        quantize="int8",
        representative_data=digits.x_train,
    )
    # 90% of the hidden kernel is zero, the output layer stays dense (77.8%
    # of all kernel weights are zero) and int8 stores a quarter of the bytes.
    assert small.weight_sparsity == pytest.approx(0.9 * 8192 / (8192 + 1280), abs=1e-3)
    assert small.bytes < dense.bytes / 3
    result = export.evaluate_tflite(small.path, digits.x_test, digits.y_test, from_logits=True)
    assert result["runtime"] == "builtin"  # XNNPACK refuses sparse int8
    latency = export.benchmark_tflite(small.path, runs=20, warmup=2)
    assert latency["median_ms"] > 0 and latency["p90_ms"] >= latency["median_ms"]


def test_per_tensor_int8_drops_per_unit_metadata(trained, digits, tmp_path):
    pruned = kht.prune(trained, 0.9)
    reports = {
        per_channel: export.export_tflite(
            pruned,
            tmp_path / f"pc{per_channel}.tflite",
            quantize="int8",
            representative_data=digits.x_train,
            per_channel=per_channel,
        )
        for per_channel in (True, False)
    }
    assert reports[True].per_channel and not reports[False].per_channel
    # 12 bytes (float32 scale, int64 zero point) per unit of the 128-unit
    # kernel and of its bias at least.
    assert reports[True].bytes - reports[False].bytes >= 2 * 12 * 128
    accuracies = [
        export.evaluate_tflite(r.path, digits.x_test, digits.y_test, from_logits=True)["accuracy"]
        for r in reports.values()
    ]
    assert abs(accuracies[0] - accuracies[1]) <= 0.01


@pytest.mark.parametrize("quantize", ["dynamic", "float16"])
def test_other_quantizations_run(trained, digits, tmp_path, quantize):
    report = export.export_tflite(
        trained, tmp_path / f"{quantize}.tflite", quantize=quantize
    )
    assert report.quantization == quantize
    result = export.evaluate_tflite(report.path, digits.x_test, digits.y_test, from_logits=True)
    assert result["accuracy"] > 0.8


def test_bad_arguments_and_files(trained, digits, tmp_path):
    with pytest.raises(ValueError, match="Received: quantize='int4'"):
        export.export_tflite(trained, tmp_path / "x.tflite", quantize="int4")
    with pytest.raises(ValueError, match="representative_data=None"):
        export.export_tflite(trained, tmp_path / "x.tflite", quantize="int8")
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        export.evaluate_tflite(
            tmp_path / "missing.tflite", digits.x_test, digits.y_test
        )
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ValueError, match="not a valid .tflite model"):
        export.evaluate_tflite(corrupt, digits.x_test, digits.y_test)
    good = export.export_tflite(trained, tmp_path / "good.tflite").path
    with pytest.raises(
        ValueError, match=r"do not fit the model, which takes \[8, 8, 1\]"
    ):
        export.predict_tflite(good, np.zeros((2, 64), "float32"))
    with pytest.raises(ValueError, match="Received: dtype=int64"):
        export.predict_tflite(good, np.zeros((2, 8, 8, 1), "int64"))


def test_model_card_is_written_next_to_the_model(trained, digits, tmp_path):
    report = export.export_tflite(trained, tmp_path / "card.tflite")
    evaluation = export.evaluate_tflite(report.path, digits.x_test, digits.y_test, from_logits=True)
    card = cards.model_card(
        report.path,
        source="test",
        training={"alpha": 1.75, "sigma": 0.005, "noise": "elliptical", "seed": 0},
        export=report,
        evaluation=evaluation,
        neurons_kept=128,
    )
    on_disk = json.loads((tmp_path / "card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert on_disk["litert_evaluation"]["accuracy"] == evaluation["accuracy"]
    assert on_disk["versions"]["tensorflow"] and on_disk["neurons_kept"] == 128
    assert on_disk["bytes"] == report.bytes


def test_deploy_variants_are_read_back_when_the_weights_did_not_change(trained, digits, tmp_path):
    from keras_heavytail.export import deploy

    args = (digits.x_train[:100], digits.x_test[:100], digits.y_test[:100])
    rows = deploy.export_variants(trained, tmp_path, *args, from_logits=True, runs=3)
    assert [r["variant"] for r in rows] == list(deploy.VARIANTS)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = deploy.export_variants(trained, tmp_path, *args, from_logits=True, runs=3)
    assert again == rows  # read from the cards: nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    # A file changed on disk: that variant alone is made again.
    dense = tmp_path / "dense_float32.tflite"
    dense.write_bytes(bytes(dense.stat().st_size))  # same size, zeros
    deploy.export_variants(trained, tmp_path, *args, from_logits=True, runs=3)
    assert dense.read_bytes() != bytes(dense.stat().st_size)
    remade = {p.name for p in tmp_path.iterdir() if p.stat().st_mtime_ns != stamps[p.name]}
    assert remade == {"dense_float32.tflite", "dense_float32.json"}
    # Other test labels of the same size: every variant is evaluated again.
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    args = (*args[:2], args[2][::-1])
    deploy.export_variants(trained, tmp_path, *args, from_logits=True, runs=3)
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in tmp_path.iterdir())
    # Other weights, the same data: every variant is made again, its card
    # says from what.
    keys = {json.loads(p.read_text())["variants_key"] for p in tmp_path.glob("*.json")}
    changed = keras.models.clone_model(trained)
    changed.set_weights([w * 0.5 for w in trained.get_weights()])
    deploy.export_variants(changed, tmp_path, *args, from_logits=True, runs=3)
    new_keys = [json.loads(p.read_text())["variants_key"] for p in tmp_path.glob("*.json")]
    assert len(keys) == 1 and len(new_keys) == 4 and not keys & set(new_keys)


@pytest.mark.parametrize(
    "ms,text",
    [(0.005379, "5.38 µs"), (0.0512, "51.2 µs"), (0.9996, "1.00 ms"), (12.345, "12.3 ms"),
     (123.4, "123 ms"), (2500.0, "2.50 s"), (0.0, "0.00 µs"), (None, "-"), (float("nan"), "-"),
     (-5.0, "-"), (1e300, "1e+297 s"), (np.float32(0.25), "250 µs"), (2, "2.00 ms")],
)  # fmt: skip
def test_latencies_are_written_with_three_significant_figures_and_a_unit(ms, text):
    from keras_heavytail.export import cards

    assert cards.format_latency(ms) == text
