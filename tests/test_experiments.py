"""The protocol in a tiny configuration."""

import json

import keras
import numpy as np
import pytest

import keras_heavytail as kht
from keras_heavytail import experiments as ex


@pytest.fixture(scope="module")
def digits():
    return kht.load_dataset("digits", limit=300)


def test_protocol_rows_table_and_markdown(digits):
    settings = [
        kht.Setting("SGD"),
        kht.Setting("HT", "neuron", 1.5, 0.01),
        kht.Setting("HT annealed", "neuron", 1.5, 0.01, anneal=True),
    ]
    result = kht.run_protocol(
        digits,
        settings,
        width=32,
        epochs=2,
        batch_size=50,
        seeds=(0, 1),
        progress=False,
    )
    assert [(r["setting"], r["seed"]) for r in result.runs] == [
        (s.label, seed) for s in settings for seed in (0, 1)
    ]
    run = result.runs[0]
    for key in (
        "test_accuracy",
        "tail_index",
        "paper_prune_ratio",
        "accuracy@70%pruned",
    ):
        assert 0.0 <= run[key] <= 2.0, key
    row = result.table[1]
    values = [r["test_accuracy"] for r in result.runs if r["setting"] == "HT"]
    assert row["test_accuracy"] == pytest.approx(
        (np.mean(values), np.std(values, ddof=1))
    )
    assert len(result.markdown().splitlines()) == 2 + len(settings)
    json.dumps(result.to_dict())  # serialisable
    # The annealed run ends with less noise, so it differs from the constant one.
    a = result.models[("HT", 0)].get_layer("hidden1").kernel.numpy()
    b = result.models[("HT annealed", 0)].get_layer("hidden1").kernel.numpy()
    assert not np.allclose(a, b)


def test_annealed_sigma_reaches_zero_and_output_layer_is_noise_free():
    model = kht.build_model("cnn", (8, 8, 1), 10, width=16)
    opt = ex.make_optimizer(
        kht.Setting("x", "entry", 1.8, 0.1, anneal=True), 0.1, 0.0, 0, 10, model
    )
    assert float(opt.sigma(0)) == pytest.approx(0.1) and float(opt.sigma(10)) == 0.0
    variables = model.trainable_variables
    before = {v.path: v.numpy().copy() for v in variables}
    opt.build(variables)
    opt.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    changed = {
        v.path.split("/")[-2]
        for v in variables
        if not np.array_equal(v.numpy(), before[v.path])
    }
    assert changed == {"conv2", "hidden1"}  # not conv1 (first conv), not logits


@pytest.mark.parametrize(
    "architecture,kernels", [("mlp", 2), ("deep_mlp", 4), ("cnn", 4)]
)
def test_architectures(architecture, kernels):
    model = kht.build_model(architecture, (8, 8, 1), 10, width=16, depth=3)
    assert len(kht.compressibility.kernel_layers(model)) == kernels
    assert model.output_shape == (None, 10)


def test_bad_architecture():
    with pytest.raises(ValueError, match="Received: architecture='rnn'"):
        kht.build_model("rnn", (8, 8, 1), 10)
