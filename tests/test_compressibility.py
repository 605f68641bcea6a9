"""Exact tests of the compressibility numbers on inputs with known answers."""

import json
import math

import keras
import numpy as np
import pytest
from scipy import stats

from keras_heavytail import compressibility as cm


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_mmo2014_recovers_the_tail_index_within_0_1(alpha):
    # n = 100000 scipy samples with a fixed seed; the estimator's spread at
    # this n is about 0.01 (measured over seeds 0-2), so 0.1 is a wide margin.
    x = stats.levy_stable.rvs(alpha, 0.0, size=100_000, random_state=1)
    assert abs(cm.tail_index(x) - alpha) < 0.1


def test_mmo2014_on_gaussian_data_is_two_before_the_cap():
    # Gaussian data: the block-sum estimate itself is near 2 (1/alpha = 0.5),
    # so the cap at 2 hides no broken (infinite or huge) estimate.
    x = np.random.default_rng(0).normal(size=50_000)
    assert abs(cm.tail_index(x, cap=False) - 2.0) < 0.1
    assert cm.tail_index(x) == min(cm.tail_index(x, cap=False), 2.0)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_samples_have_no_tail_index(value):
    # All zeros used to give 2.0 and all ones 1.0: numbers with no meaning.
    with pytest.raises(ValueError, match="constant sample"):
        cm.tail_index(np.full(100, value))


def test_hill_on_a_pareto_sample():
    # |x| Pareto with index 1.5: Hill's estimate converges to 1.5.
    x = stats.pareto.rvs(1.5, size=100_000, random_state=0)
    assert abs(cm.tail_index(x, "hill", 0.05) - 1.5) < 0.05


def test_tail_index_rejects_bad_input():
    with pytest.raises(ValueError, match="must not be empty"):
        cm.tail_index([])
    with pytest.raises(ValueError, match="Received: method='moment'"):
        cm.tail_index(np.arange(100.0), method="moment")
    with pytest.raises(ValueError, match="tail_fraction=1.5"):
        cm.tail_index(np.arange(1, 100), "hill", tail_fraction=1.5)
    with pytest.raises(ValueError, match="finite"):
        cm.tail_index([1.0, np.nan] * 10)


def test_best_k_error_on_linspace():
    # w = 1..10; keeping the top 20% (9, 10) drops 1..8:
    # sqrt(sum_{i<=8} i^2 / sum_{i<=10} i^2) = sqrt(204 / 385).
    w = np.linspace(1, 10, 10)
    assert cm.best_k_error(w, 0.2) == pytest.approx(math.sqrt(204 / 385))
    assert cm.best_k_error(-w, 0.2, p=1) == pytest.approx(36 / 55)
    # p=inf: the largest dropped magnitude over the largest (8 of 10).
    assert cm.best_k_error(w, 0.2, p=math.inf) == pytest.approx(8 / 10)
    assert cm.best_k_error(w, 1.0) == 0.0
    assert cm.best_k_error(w, 0.0) == pytest.approx(1.0)


def test_best_k_error_rejects_bad_keep():
    with pytest.raises(ValueError, match="Received: keep=1.2"):
        cm.best_k_error(np.ones(3), 1.2)


def test_neuron_norms_and_the_paper_criterion_on_a_hand_built_kernel():
    # Columns with norms 1, 2, 3, 4 (squared 1, 4, 9, 16; total 30).
    kernel = np.array([[1.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 4.0]])
    np.testing.assert_allclose(cm.neuron_norms(kernel), [1, 2, 3, 4])
    # cumulative 1, 5, 14, 30: within 10% (3.0) only the first; within 20%
    # (6.0) the first two; within 50% (15.0) three.
    assert cm.neuron_prune_ratio(kernel, 0.1) == 0.25
    assert cm.neuron_prune_ratio(kernel, 0.2) == 0.5
    assert cm.neuron_prune_ratio(kernel, 0.5) == 0.75
    assert cm.neuron_prune_ratio(kernel, 0.0) == 0.0


def test_the_l1_criterion_on_the_same_kernel():
    # Plain norms 1, 2, 3, 4 (total 10; cumulative 1, 3, 6, 10): within 10%
    # (1.0) one unit, within 30% (3.0) two; the squared version prunes the
    # same two only at 20%. Fails if power=1 squares anyway.
    kernel = np.array([[1.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 4.0]])
    assert cm.neuron_prune_ratio(kernel, 0.1, power=1) == 0.25
    assert cm.neuron_prune_ratio(kernel, 0.3, power=1) == 0.5
    assert cm.neuron_prune_ratio(kernel, 0.2, power=1) == 0.25
    with pytest.raises(ValueError, match="Received: power=3"):
        cm.neuron_prune_ratio(kernel, power=3)


def test_parameter_weighted_ratio_on_a_hand_built_model():
    # Layer a: 4 units with 3 inputs each, norms 1, 1, 1, 10 -> the paper's
    # criterion (10%) prunes 3 units = 9 of 12 parameters. Layer b: 2 units
    # with 4 inputs, norms 1 and 1 -> prunes none (1 > 10% of 2) = 0 of 8.
    # Unit-weighted: 3 of 6 units = 0.5; parameter-weighted: 9 of 20 = 0.45.
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")]
    )
    a = np.zeros((3, 4))
    a[0, :3], a[0, 3] = 1.0, 10.0
    b = np.zeros((4, 2))
    b[0, 0], b[1, 1] = 1.0, 1.0
    model.get_layer("a").set_weights([a, np.zeros(4)])
    model.get_layer("b").set_weights([b, np.zeros(2)])
    whole = cm.compressibility_report(model)["(model)"]
    assert whole["neuron_prune_ratio"] == 0.5
    assert whole["parameter_prune_ratio"] == pytest.approx(9 / 20)
    assert whole["shape"] is None


def test_conv_kernels_are_scored_per_filter():
    kernel = np.zeros((3, 3, 2, 2))
    kernel[..., 1] = 1.0  # 18 ones: norm sqrt(18)
    np.testing.assert_allclose(cm.neuron_norms(kernel), [0.0, math.sqrt(18)])
    assert cm.neuron_prune_ratio(kernel) == 0.5


def test_neuron_norms_reject_vectors():
    with pytest.raises(ValueError, match=r"Received: shape=\(3,\)"):
        cm.neuron_norms(np.ones(3))


def make_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(40, name="hidden"),
            keras.layers.Dense(3, name="out"),
        ]
    )


def test_report_rows_table_and_json():
    model = make_model()
    report = cm.compressibility_report(model)
    assert [r["layer"] for r in report.rows] == ["hidden", "out", "(model)"]
    hidden = report["hidden"]
    kernel = model.get_layer("hidden").kernel.numpy()
    assert hidden["shape"] == [5, 40] and hidden["parameters"] == 200
    assert hidden["neuron_prune_ratio"] == cm.neuron_prune_ratio(kernel)
    assert hidden["best_k_error@0.2"] == pytest.approx(cm.best_k_error(kernel, 0.2))
    whole = report["(model)"]
    assert whole["parameters"] == 5 * 40 + 40 * 3
    assert whole["neurons"] == 43
    table = report.table()
    assert len({len(line) for line in table.splitlines()}) == 1  # aligned
    assert "hidden" in table and "neuron_prune_ratio" in table
    # print(report): the table, then which direction is more compressible.
    assert str(report).startswith(table) and cm.MORE_COMPRESSIBLE in str(report)
    assert len(report.legend().splitlines()) == len(cm.COLUMN_HELP)
    assert json.loads(report.to_json())["rows"][0]["layer"] == "hidden"


def test_report_rejects_a_model_without_kernels():
    model = keras.Sequential([keras.Input((3,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no layer with a kernel"):
        cm.compressibility_report(model)


def test_the_report_counts_output_channels_of_depthwise_and_transposed_convolutions():
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)
    x = keras.layers.Conv2DTranspose(5, 3, name="up")(x)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    report = cm.compressibility_report(model)
    assert report["dw"]["neurons"] == 8 and report["dw"]["shape"] == [3, 3, 4, 2]
    assert report["up"]["neurons"] == 5 and report["up"]["shape"] == [3, 3, 5, 8]
    # Each counted unit is one output channel, with that channel's weights.
    up, dw = model.get_layer("up"), model.get_layer("dw")
    norms = cm.neuron_norms(cm.units_last(up, up.kernel.numpy()))
    np.testing.assert_allclose(norms, np.sqrt((up.kernel.numpy() ** 2).sum(axis=(0, 1, 3))))
    norms = cm.neuron_norms(cm.units_last(dw, dw.kernel.numpy()))
    np.testing.assert_allclose(norms, np.sqrt((dw.kernel.numpy() ** 2).sum(axis=(0, 1))).ravel())
