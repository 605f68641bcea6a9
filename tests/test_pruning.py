"""Tests of one-shot pruning, pruning curves and shrink (Keras 3)."""

import os
import re
import warnings

import keras
import numpy as np
import pytest
from helpers import tiny_data

import keras_heavytail as kht


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(20, activation="relu", name="h1"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="tanh", name="h2"),
            keras.layers.Dense(3, name="out"),
        ]
    )


def cnn(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(6, 3, padding="same", name="c2"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(12, activation="relu", name="fc"),
            keras.layers.Dense(4, name="out"),
        ]
    )
    # Non-trivial batch-norm statistics, so removal must really respect them.
    rng = np.random.default_rng(1)
    bn = model.get_layer("bn")
    for weight in bn.weights:
        weight.assign(rng.uniform(0.5, 1.5, size=weight.shape))
    return model


def linspace_model():
    """hidden kernel (2, 4) = [[1, -2, 3, -4], [5, -6, 7, -8]]: column norms
    sqrt(26), sqrt(40), sqrt(58), sqrt(80)."""
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(4, name="h"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.get_layer("h").kernel.assign(
        np.array([[1.0, -2.0, 3.0, -4.0], [5.0, -6.0, 7.0, -8.0]])
    )
    model.get_layer("h").bias.assign(np.ones(4))
    return model


def test_entry_pruning_zeroes_the_smallest_magnitudes():
    pruned = kht.prune(linspace_model(), 0.5)
    np.testing.assert_array_equal(
        pruned.get_layer("h").kernel.numpy(), [[0, 0, 0, 0], [5, -6, 7, -8]]
    )
    np.testing.assert_array_equal(pruned.get_layer("h").bias.numpy(), np.ones(4))


def test_neuron_pruning_zeroes_the_weakest_units_and_their_biases():
    model = linspace_model()
    pruned = kht.prune(model, 0.5, structure="neuron")
    kernel = pruned.get_layer("h").kernel.numpy()
    np.testing.assert_array_equal(kernel[:, :2], 0.0)
    np.testing.assert_array_equal(kernel[:, 2:], [[3, -4], [7, -8]])
    np.testing.assert_array_equal(pruned.get_layer("h").bias.numpy(), [0, 0, 1, 1])
    # The input model is untouched and the output layer is never pruned.
    assert model.get_layer("h").kernel.numpy()[0, 0] == 1.0
    np.testing.assert_array_equal(
        pruned.get_layer("out").kernel.numpy(), model.get_layer("out").kernel.numpy()
    )


def test_paper_criterion_prunes_within_the_error_budget():
    # squared norms 26, 40, 58, 80 (total 204): 10% is 20.4, nothing fits;
    # 40% is 81.6: the first two (66) fit.
    model = linspace_model()
    kernel = (
        kht.prune(model, criterion="paper", max_rel_sq_error=0.4).get_layer("h").kernel
    )
    np.testing.assert_array_equal(
        np.linalg.norm(kernel.numpy(), axis=0) == 0, [1, 1, 0, 0]
    )
    unpruned = kht.prune(model, criterion="paper").get_layer("h").kernel.numpy()
    np.testing.assert_array_equal(unpruned, model.get_layer("h").kernel.numpy())


def test_include_output_prunes_output_entries_only():
    model = mlp()
    pruned = kht.prune(model, 0.5, include_output=True)
    assert np.mean(pruned.get_layer("out").kernel.numpy() == 0) == pytest.approx(0.5)
    assert np.mean(pruned.get_layer("h1").kernel.numpy() == 0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="Received: structure='neuron'"):
        kht.prune(model, 0.5, structure="neuron", include_output=True)


def test_global_scope_ranks_all_layers_together():
    model = mlp()
    model.get_layer("h2").kernel.assign(model.get_layer("h2").kernel.numpy() * 100)
    pruned = kht.prune(model, 0.5, scope="global")
    h1 = pruned.get_layer("h1").kernel.numpy()
    h2 = pruned.get_layer("h2").kernel.numpy()
    assert np.all(h1 == 0) and np.mean(h2 == 0) < 0.5


def test_path_score_multiplies_outgoing_norms():
    model = linspace_model()
    model.get_layer("out").kernel.assign(np.array([[100.0, 0], [1, 0], [1, 0], [1, 0]]))
    scores = kht.pruning.neuron_scores(model, model.get_layer("h"), "path")
    np.testing.assert_allclose(scores, np.sqrt([26, 40, 58, 80]) * [100, 1, 1, 1])
    pruned = kht.prune(model, 0.25, structure="neuron", score="path")
    assert np.all(pruned.get_layer("h").kernel.numpy()[:, 1] == 0)


def test_exclude_and_bad_arguments():
    model = mlp()
    pruned = kht.prune(model, 0.9, exclude=["h1"])
    np.testing.assert_array_equal(
        pruned.get_layer("h1").kernel.numpy(), model.get_layer("h1").kernel.numpy()
    )
    with pytest.raises(ValueError, match="Received: ratio=1.5"):
        kht.prune(model, 1.5)
    with pytest.raises(ValueError, match="Received: ratio=-0.1"):
        kht.prune(model, -0.1)
    with pytest.raises(ValueError, match="Received: structure='row'"):
        kht.prune(model, 0.5, structure="row")
    with pytest.raises(ValueError, match="no prunable layer"):
        kht.prune(model, 0.5, exclude=["h1", "h2"])
    with pytest.raises(ValueError, match=r"names no layer of the model. Received: \['nope'\]"):
        kht.prune(model, 0.5, exclude=["nope"])
    one_layer = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no prunable layer"):
        kht.prune(one_layer, 0.5)


def test_pruning_curve_rows():
    model = mlp()
    x, y = tiny_data(inputs=8, classes=3)
    rows = kht.experiments.pruning_curve(
        model, x, y, ratios=[0.0, 0.5, 1.0], structure="entry", from_logits=True
    )
    assert [r["ratio"] for r in rows] == [0.0, 0.5, 1.0]
    total = model.count_params()
    assert rows[0]["remaining_parameters"] == total
    prunable = 8 * 20 + 20 * 10
    assert rows[1]["remaining_parameters"] == total - prunable // 2
    logits = model.predict(x, verbose=0)
    assert rows[0]["accuracy"] == np.mean(np.argmax(logits, -1) == y)
    expected_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y, logits
    )
    assert rows[0]["loss"] == pytest.approx(float(expected_loss), rel=1e-5)


def check_shrink(model, x, ratio, tmp_path):
    pruned = kht.prune(model, ratio, structure="neuron")
    small = kht.shrink(pruned)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5
    )
    assert small.count_params() < model.count_params()
    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    reloaded = keras.saving.load_model(path)  # a plain Keras model
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-6
    )
    return small


def test_shrink_mlp_removes_units_and_keeps_outputs(tmp_path):
    x, _ = tiny_data(inputs=8)
    small = check_shrink(mlp(), x, 0.5, tmp_path)
    assert small.get_layer("h1").units == 10 and small.get_layer("h2").units == 5
    assert small.get_layer("out").units == 3
    assert small.count_params() == 8 * 10 + 10 + 10 * 5 + 5 + 5 * 3 + 3


def test_shrink_cnn_removes_filters_through_batchnorm_and_flatten(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 10, 10, 3)).astype("float32")
    small = check_shrink(cnn(), x, 0.5, tmp_path)
    assert small.get_layer("c1").filters == 4 and small.get_layer("c2").filters == 3
    assert small.get_layer("fc").kernel.shape == (4 * 4 * 3, 6)


def test_shrink_functional_chain(tmp_path):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(12, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    x, _ = tiny_data(inputs=6)
    check_shrink(model, x, 0.75, tmp_path)


def test_shrink_keeps_units_whose_output_is_not_zero():
    # Zero incoming weights but a bias through sigmoid: the unit emits 0.73,
    # so removing it would change the outputs.
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(3, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )
    model.layers[0].kernel.assign(np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
    model.layers[0].bias.assign(np.ones(3))
    assert kht.shrink(model).layers[0].units == 3


def test_shrink_keeps_what_unknown_layers_touch_and_shrinks_branches():
    model = keras.Sequential(
        [keras.Input((4, 3)), keras.layers.LSTM(5, name="rnn"), keras.layers.Dense(2)]
    )
    assert kht.shrink(model).count_params() == model.count_params()
    assert "'rnn' (LSTM)" in kht.channel_groups(model)[0].frozen_by
    inputs = keras.Input((3,))
    a, b = keras.layers.Dense(4)(inputs), keras.layers.Dense(4)(inputs)
    branched = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Add()([a, b])))
    x, _ = tiny_data(inputs=3)
    pruned = kht.prune(branched, 0.5, structure="neuron")
    small = kht.shrink(pruned)
    assert small.count_params() == 2 * (3 * 2 + 2) + 2 * 2 + 2
    np.testing.assert_allclose(
        small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5
    )


def test_pruning_curve_takes_from_logits_explicitly():
    # Probabilities: the loss is -log p of the label, no second softmax.
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, name="h"),
         keras.layers.Dense(3, activation="softmax", name="out")]
    )  # fmt: skip
    x, y = tiny_data(inputs=8, classes=3)
    rows = kht.experiments.pruning_curve(model, x, y, ratios=[0.0], from_logits=False)
    p = model.predict(x, verbose=0)
    assert rows[0]["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(len(y)), y])), rel=1e-5)
    # Logits called probabilities: a clear error, not a silently wrong loss.
    with pytest.raises(ValueError, match="pass `from_logits=True`"):
        kht.experiments.pruning_curve(mlp(), x, y, ratios=[0.0])


def _bn_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


def test_neuron_pruning_of_batch_norm_models_recalibrates_or_warns():
    model = _bn_cnn()
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(24, 6, 6, 2)).astype("float32")
    with pytest.warns(UserWarning, match="batch_norm_data="):
        stale = kht.prune(model, 0.5, structure="neuron")
    bn = stale.get_layer("bn")
    np.testing.assert_array_equal(bn.moving_mean.numpy(), model.get_layer("bn").moving_mean.numpy())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruned = kht.prune(model, 0.5, structure="neuron", batch_norm_data=x)
    # One batch (24 <= 32 examples): the moving statistics are that batch's.
    before_bn = keras.Model(pruned.inputs[0], pruned.get_layer("conv").output)(x).numpy()
    bn = pruned.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), before_bn.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), before_bn.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    kept = np.any(pruned.get_layer("conv").kernel.numpy() != 0, axis=(0, 1, 2))
    assert 0 < kept.sum() < 8  # channels were pruned, and they stay zero
    assert np.all(bn.moving_mean.numpy()[~kept] == 0)
    assert kht.shrink(pruned).get_layer("conv").filters == kept.sum()

    # Bad data is refused by name, never turned into NaN statistics.
    for bad, message in ((np.full((8, 6, 6, 2), np.nan, "float32"), "NaN or inf"),
                         (x[:, :3], r"shape \(n, 6, 6, 2\)"), ("x", "Received: str"),
                         (x[:1], "at least 2 examples")):  # fmt: skip
        with pytest.raises(ValueError, match=f"`batch_norm_data` .*{message}"):
            kht.prune(model, 0.5, structure="neuron", batch_norm_data=bad)
    # A short last batch is left out: one more example than a batch (64)
    # estimates like the batch alone.
    many = np.concatenate([x, x * 2, x - 1])[:65]
    a = kht.prune(model, 0.5, structure="neuron", batch_norm_data=many[:64])
    b = kht.prune(model, 0.5, structure="neuron", batch_norm_data=many)
    np.testing.assert_allclose(a.get_layer("bn").moving_variance.numpy(),
                               b.get_layer("bn").moving_variance.numpy(), rtol=1e-6)  # fmt: skip

    with warnings.catch_warnings():  # entry pruning leaves channels alive: no warning
        warnings.simplefilter("error")
        kht.prune(model, 0.5)


def test_filter_is_neuron_for_prune_as_for_gradual_pruning():
    model = _bn_cnn()
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype("float32")
    by_filter = kht.prune(model, 0.5, structure="filter", batch_norm_data=x)
    by_neuron = kht.prune(model, 0.5, structure="neuron", batch_norm_data=x)
    for a, b in zip(by_filter.get_weights(), by_neuron.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs,message", [
    ({"ratio": -0.2}, "Received: ratio=-0.2"),
    ({"ratio": 1.5}, "Received: ratio=1.5"),
    ({"ratio": True}, "Received: ratio=True"),
    ({"ratio": 0.5, "scope": "glob"}, "Received: scope='glob'"),
    ({"ratio": 0.5, "round_to": 0}, "Received: round_to=0"),
    ({"ratio": 0.5, "min_channels": -1}, "Received: min_channels=-1"),
    ({"ratio": [0.5]}, "one ratio per prunable group"),
])  # fmt: skip
def test_group_masks_refuse_what_they_cannot_mean(kwargs, message):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8),
                              keras.layers.Dense(6), keras.layers.Dense(3)])  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)):
        kht.pruning.one_shot.group_masks(model, **kwargs)


def test_a_model_nested_in_a_functional_model_is_named_not_a_key_error():
    inner_in = keras.Input((6, 6, 8))
    inner = keras.Model(inner_in, keras.layers.Conv2D(7, 3, padding="same")(inner_in),
                        name="inner")  # fmt: skip
    x = keras.Input((8, 8, 3))
    h = inner(keras.layers.Conv2D(8, 3)(x))
    model = keras.Model(x, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    with pytest.raises(ValueError, match="cannot rewire layer 'inner'"):
        kht.shrink(model)


def test_channels_first_layers_keep_their_channels():
    # Their channels are on axis 1, which the graph does not follow: frozen,
    # so a shrink can never cut the wrong axis.
    x = keras.Input((3, 6, 3))
    h = keras.layers.Conv2D(3, (3, 1), data_format="channels_first", name="cf")(x)
    h = keras.layers.Dense(6, name="fc")(keras.layers.Flatten()(h))
    model = keras.Model(x, keras.layers.Dense(3)(h))
    prunable = [g.layers for g in kht.channel_groups(model) if g.prunable]
    assert prunable == [("fc",)], kht.channel_groups(model)
    with pytest.warns(UserWarning, match="leaves 'cf' .Conv2D. dense"):
        pruned = kht.prune(model, 0.5, structure="neuron")
    x = np.random.default_rng(0).normal(size=(4, 3, 6, 3)).astype("float32")
    np.testing.assert_allclose(kht.shrink(pruned).predict(x, verbose=0),
                               pruned.predict(x, verbose=0), atol=1e-5)  # fmt: skip
