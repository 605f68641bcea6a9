"""The protocol: the stopping rule, iso-accuracy, presets, in tiny configurations."""

import json
import re

import keras
import numpy as np
import pytest
from helpers import tiny_data

import keras_heavytail as kht
from keras_heavytail.experiments import runner as ex
from keras_heavytail.pruning import one_shot as pruning


@pytest.fixture(scope="module")
def digits():
    return kht.experiments.load_dataset("digits", limit=400)


@pytest.fixture(scope="module")
def protocol_run(digits):
    settings = [
        kht.experiments.Setting("SGD"),
        kht.experiments.Setting("HT", "neuron", 1.5, 0.05),
        kht.experiments.Setting("HT annealed", "neuron", 1.5, 0.05, anneal=True),
    ]
    # Masked fine-tuning at iso-accuracy: `test_params_at_iso_counts_the_shrunk_model`.
    protocol = kht.experiments.Protocol(width=24, epochs=2, batch_size=50, iso_steps=5,
                                        fine_tune_epochs=0)  # fmt: skip
    return kht.experiments.run_protocol(digits, settings, protocol, seeds=(0, 1), progress=False)


def test_protocol_rows_and_table(protocol_run):
    result = protocol_run
    labels = ["SGD", "HT", "HT annealed"]
    assert [(r["setting"], r["seed"]) for r in result.runs] == [
        (label, seed) for label in labels for seed in (0, 1)
    ]
    row = result.table[1]
    values = [r["test_accuracy"] for r in result.runs if r["setting"] == "HT"]
    assert row["test_accuracy"] == pytest.approx(
        (np.mean(values), np.std(values, ddof=1))
    )
    # Each run's iso point: counts of real units, and the ratio is per seed.
    for run in result.runs:
        assert 1 <= run["neurons_at_iso_accuracy"] <= 24
        assert run["neurons_at_iso_accuracy"] == round(24 * (1 - run["ratio_at_iso"]))
    sgd = {r["seed"]: r for r in result.runs if r["setting"] == "SGD"}
    mine = [r for r in result.runs if r["setting"] == "HT"]
    ratios = [
        r["neurons_at_iso_accuracy"] / sgd[r["seed"]]["neurons_at_iso_accuracy"]
        for r in mine
    ]
    assert row["iso_neuron_ratio_vs_sgd"][0] == pytest.approx(np.mean(ratios))
    assert result.table[0]["iso_neuron_ratio_vs_sgd"] == (1.0, 0.0)
    assert len(result.markdown().splitlines()) == 2 + len(labels)
    # The demo's columns: none fine-tuned here (no column of "nan"), counts
    # with one decimal over two seeds.
    summary = result.markdown(kht.experiments.report.SUMMARY_COLUMNS)
    assert "nan" not in summary and "finetuned" not in summary, summary
    sgd_row = summary.splitlines()[2].split(" | ")
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d", sgd_row[2]), sgd_row
    # One line per noisy setting (one-shot; the README's protocol block
    # checks the fine-tuned line).
    assert len(result.headline()) == 2 and "ratio" in result.headline()[0]
    json.dumps(result.to_dict())  # serialisable


def test_noise_and_annealing_change_the_weights(protocol_run):
    # Against SGD (sigma=0): fails if the protocol's noise is switched off.
    models = protocol_run.models
    kernel = {
        label: models[(label, 0)].get_layer("hidden1").kernel.numpy()
        for label in ("SGD", "HT", "HT annealed")
    }
    assert np.abs(kernel["HT"] - kernel["SGD"]).max() > 1e-3
    assert not np.allclose(kernel["HT"], kernel["HT annealed"])


@pytest.mark.parametrize("fine_tune", [False, True])
def test_params_at_iso_counts_the_shrunk_model(digits, fine_tune):
    # With the masked fine-tuning too: the fine-tuned pruned model is the
    # one counted.
    protocol = kht.experiments.Protocol(width=20, epochs=1, iso_steps=4, fine_tune_epochs=1)
    split = ex.Split.of(digits, protocol)
    model, *_ = ex.train_one(digits, kht.experiments.Setting("SGD"), protocol, 0, split=split)
    point = ex.iso_accuracy(model, protocol, split, reference_accuracy=0.0, fine_tune=fine_tune)
    # Reference 0: everything may go but the one unit `shrink` always keeps.
    kept = point["neurons_at_iso_accuracy"]
    assert kept == round(20 * (1 - point["ratio_at_iso"]))
    assert point["params_at_iso_accuracy"] == 64 * kept + kept + kept * 10 + 10



def test_a_reused_fine_tuning_copy_gives_what_a_fresh_one_gives(digits):
    # The bisection fine-tunes every candidate in one compiled copy; nothing
    # (momentum, step count, the last candidate's weights or masks) may leak
    # from one candidate into the next.
    protocol = kht.experiments.Protocol(width=16, epochs=1, momentum=0.9, fine_tune_epochs=1)
    split = ex.Split.of(digits, protocol)
    model, *_ = ex.train_one(digits, kht.experiments.Setting("SGD"), protocol, 0, split=split)
    first, second = (pruning.pruning_masks(model, r, "neuron") for r in (0.25, 0.5))
    reused = ex._Candidates(model, protocol, split, 0, fine_tune=True)
    reused(first)
    after_another = [w.copy() for w in reused(second).get_weights()]
    fresh = ex._Candidates(model, protocol, split, 0, fine_tune=True)(second).get_weights()
    assert reused.tuned.optimizer.iterations.numpy() == fresh_steps(split, protocol)
    for a, b in zip(after_another, fresh):
        np.testing.assert_array_equal(a, b)
    kept = second["hidden1"]
    assert not np.any(after_another[0][:, ~kept]), "the masks held"
    assert np.any(after_another[0] != model.get_weights()[0]), "it trained"


def fresh_steps(split, protocol):
    return -(-len(split.x_fit) // protocol.batch_size) * protocol.fine_tune_epochs

def test_stop_at_train_accuracy_stops_at_the_first_check_above():
    x, y = tiny_data(n=96, inputs=8, classes=3)
    x = x + 3.0 * keras.ops.convert_to_numpy(keras.ops.one_hot(y, 8))  # separable
    model = ex.build_model("mlp", (8,), 3, width=16, seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    stop = kht.experiments.StopAtTrainAccuracy(x, y, threshold=0.9, every=2)
    model.fit(x, y, batch_size=16, epochs=50, verbose=0, callbacks=[stop])
    steps = [step for step, _ in stop.checks]
    assert steps == list(range(2, 2 * len(steps) + 1, 2))
    assert all(acc < 0.9 for _, acc in stop.checks[:-1])
    assert stop.checks[-1][1] >= 0.9 and stop.stopped_at == steps[-1]
    assert int(model.optimizer.iterations) == stop.stopped_at  # stopped at once
    # The check is on the whole training set, not the last minibatch.
    predicted = np.argmax(model.predict(x, verbose=0), -1)
    assert stop.checks[-1][1] == pytest.approx(np.mean(predicted == y))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"threshold": 95}, "Received: threshold=95"),
        ({"threshold": 0}, "Received: threshold=0"),
        ({"every": 0}, "Received: every=0"),
    ],
)
def test_stop_at_train_accuracy_rejects_bad_values(kwargs, message):
    x, y = tiny_data()
    with pytest.raises(ValueError, match=message):
        kht.experiments.StopAtTrainAccuracy(x, y, **kwargs)


def test_protocol_presets_and_validation():
    paper = kht.experiments.Protocol.preset("paper")
    assert (paper.use_bias, paper.width, paper.lr, paper.batch_size) == (
        False,
        5000,
        0.01,
        5000,
    )
    assert paper.target_train_accuracy == 0.95 and paper.check_every == 100
    assert kht.experiments.Protocol.preset("paper", width=500).width == 500
    with pytest.raises(ValueError, match="Received: target_train_accuracy=95"):
        kht.experiments.Protocol(target_train_accuracy=95)
    with pytest.raises(ValueError, match="Received: protocol='fast'"):
        kht.experiments.Protocol.preset("fast")
    with pytest.raises(ValueError, match="Received: lr=-0.05"):
        kht.experiments.Protocol(lr=-0.05)


def test_annealed_sigma_reaches_zero_and_output_layer_is_noise_free():
    model = kht.experiments.build_model("cnn", (8, 8, 1), 10, width=16)
    opt = ex.make_optimizer(
        kht.experiments.Setting("x", "entry", 1.8, 0.1, anneal=True),
        kht.experiments.Protocol(lr=0.1),
        0,
        10,
        model,
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
    "architecture,kernels", [("mlp", 2), ("deep_mlp", 4), ("cnn", 4), ("mean_field", 2)]
)
def test_architectures(architecture, kernels):
    model = kht.experiments.build_model(architecture, (8, 8, 1), 10, width=16, depth=3)
    assert len(kht.compressibility_report(model).rows) == kernels + 1
    assert model.output_shape == (None, 10)


def test_bias_free_and_mean_field_models():
    plain = kht.experiments.build_model("mlp", (8,), 3, width=16, use_bias=False)
    assert plain.get_layer("hidden1").bias is None
    field = kht.experiments.build_model("mean_field", (8,), 3, width=16)
    out = field.get_layer("logits")
    assert not out.trainable and field.get_layer("hidden1").bias is None
    np.testing.assert_allclose(np.abs(out.kernel.numpy()), 1 / 16)
    assert [v.path for v in field.trainable_variables] == [
        field.get_layer("hidden1").kernel.path
    ]
    # The mean-field learning rate is scaled by the width.
    assert kht.experiments.Protocol(architecture="mean_field", width=16, lr=0.1).effective_lr == 1.6


def test_bad_architecture():
    with pytest.raises(ValueError, match="Received: architecture='rnn'"):
        kht.experiments.build_model("rnn", (8, 8, 1), 10)


def test_bisection_on_a_model_whose_answer_is_known():
    # One-hot inputs of 10 classes; hidden unit j fires only for class j with
    # incoming norm 10 - j, and the logits copy the hidden units. Pruning the
    # k lowest-norm units kills classes 9, 8, ...: accuracy (10 - k) / 10.
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(10, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.get_layer("hidden").set_weights([np.diag(10.0 - np.arange(10)), np.zeros(10)])
    model.get_layer("logits").set_weights([np.eye(10), np.zeros(10)])
    x, y = np.eye(10, dtype="float32"), np.arange(10)
    ratio = kht.experiments.iso_accuracy_ratio(model, x, y, target_accuracy=0.7, steps=12)
    # 3 units may go (ratio rounds to 3 of 10 below 0.35), a 4th may not.
    assert 0.35 - 2**-12 <= ratio < 0.35
    kept = pruning.prune(model, ratio, structure="neuron")
    assert np.mean(np.argmax(kept.predict(x, verbose=0), -1) == y) == 0.7


def test_bisect_ratio_is_within_its_resolution():
    for threshold in (0.0, 0.123, 0.5, 0.999):
        found = kht.experiments.bisect_ratio(lambda r, t=threshold: r <= t, steps=10)
        assert found <= threshold < found + 2**-10 or threshold >= 1 - 2**-10


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda d: kht.experiments.run_protocol(d, None, kht.experiments.Protocol(width=8, epochs=1), seeds=(0, 0)),
         "Received repeats: 0"),
        (lambda d: kht.experiments.run_protocol(d, [kht.experiments.Setting("SGD"), kht.experiments.Setting("SGD")],
                                    kht.experiments.Protocol(width=8, epochs=1)), "Received repeats: SGD"),
        (lambda d: kht.experiments.run_protocol(d, [kht.experiments.Setting("SGD"), kht.experiments.Setting("sgd", "neuron", 1.5, 0.1)],
                                    kht.experiments.Protocol(width=8, epochs=1)), "'SGD' and 'sgd'"),
        (lambda d: kht.experiments.run_protocol(d, None, kht.experiments.Protocol(width=8, epochs=1), seeds=()),
         "at least one of the seeds"),
        (lambda d: kht.experiments.Protocol(validation_fraction=0.999), "validation_fraction=0.999"),
        (lambda d: kht.experiments.Protocol(iso_tolerance=float("nan")), "iso_tolerance=nan"),
        (lambda d: kht.experiments.Protocol(iso_tolerance=-0.5), "iso_tolerance=-0.5"),
        (lambda d: kht.experiments.Protocol(fine_tune_epochs=-1), "fine_tune_epochs=-1"),
        (lambda d: kht.experiments.Protocol(scores=()), "scores=()"),
    ],
)  # fmt: skip
def test_protocol_refuses_what_would_make_fake_statistics(call, message, digits):
    # Repeated seeds or labels used to be averaged as independent runs.
    with pytest.raises(ValueError, match=re.escape(message)):
        call(digits)


def test_iso_accuracy_refuses_single_output_models_and_bad_data():
    # A sigmoid's argmax over one column is always class 0: not an accuracy.
    binary = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="h"),
         keras.layers.Dense(1, activation="sigmoid")]
    )  # fmt: skip
    x, y = np.ones((10, 4), "float32"), np.zeros(10)
    with pytest.raises(ValueError, match="two or more outputs"):
        kht.experiments.iso_accuracy_ratio(binary, x, y, 0.5)
    two = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Received: 0 inputs and 0 labels"):
        kht.experiments.iso_accuracy_ratio(two, x[:0], y[:0], 0.5)
    with pytest.raises(ValueError, match="Received: steps=0"):
        kht.experiments.iso_accuracy_ratio(binary, x, y, 0.5, steps=0)


def test_wrapper_refuses_gradient_accumulation_in_the_inner_optimizer():
    # The noise would be added on every micro-batch, k times the same draw.
    inner = keras.optimizers.SGD(0.1, gradient_accumulation_steps=4)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=4"):
        kht.HeavyTailNoise(inner)


def test_headline_counts_are_whole_only_when_they_are():
    from keras_heavytail.experiments import results

    # A mean of 12.5 neurons is not "12" (round half to even) next to 13.5.
    assert [results._count(v) for v in (12.5, 13.5, 12.0, 989.6667)] == ["12.5", "13.5", "12", "989.7"]


def test_a_setting_card_gives_the_baseline_no_noise_parameters():
    sgd = kht.experiments.Setting("SGD").summary()
    assert sgd == {"label": "SGD", "noise": None, "optimizer": "SGD"}  # no alpha 1.75
    noisy = kht.experiments.Setting("HT", "neuron", 1.5, 0.05).summary()
    assert (noisy["optimizer"], noisy["alpha"], noisy["sigma"]) == ("HeavyTailSGD", 1.5, 0.05)


def test_the_headline_says_when_the_dense_model_already_misses():
    from keras_heavytail.experiments import results

    def run(setting, seed, neurons, reached, accuracy):
        return {"setting": setting, "seed": seed, "neurons": 2000, "test_accuracy": accuracy,
                "neurons_at_iso_accuracy": neurons, "iso_reached": reached}  # fmt: skip

    runs = [run("SGD", s, 1000 + s, 1.0, 0.88) for s in (0, 1, 2)]
    runs += [run("HT", 0, 2000, 0.0, 0.77), run("HT", 1, 2000, 0.0, 0.78),
             run("HT", 2, 1500, 1.0, 0.86)]  # fmt: skip
    table = results.aggregate(runs, ["SGD", "HT"])
    (line,) = results.ProtocolResult({}, runs, table, {}).headline()
    # The whole width is a cap, not "2000 neurons keep SGD's accuracy".
    assert "on 2 of 3 seeds not even all 2000 hidden neurons keep SGD's accuracy" in line
    assert "is a lower bound" in line
    runs[3]["iso_reached"] = runs[4]["iso_reached"] = 1.0
    (line,) = results.ProtocolResult({}, runs, results.aggregate(runs, ["SGD", "HT"]), {}).headline()
    assert "hidden neurons keep SGD's accuracy within tolerance" in line
