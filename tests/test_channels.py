"""Tests of the channel dependency graph, group pruning and `shrink` on graphs."""

import os

import keras
import numpy as np
import pytest

import keras_heavytail as kht
from keras_heavytail.pruning import importance
from keras_heavytail.pruning import one_shot as pruning

L = keras.layers

# These tests check exactness on untrained models; the warning that
# BatchNormalization statistics are stale after pruning is tested in
# test_pruning.py.
pytestmark = pytest.mark.filterwarnings("ignore:The model has .* BatchNormalization")


def lively(model, seed=0):
    """Batch-norm statistics away from the identity and non-zero biases, so
    outputs are O(1) and removing a channel must respect every statistic."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.uniform(-0.5, 0.5, n))
            layer.moving_mean.assign(rng.uniform(-0.1, 0.1, n))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n))
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.uniform(0.0, 0.3, layer.bias.shape))
    return model


def inputs_like(model, n=4, seed=0):
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def hand_built(seed=0):
    """Concatenate, SeparableConv2D, a residual Add, a depthwise multiplier,
    a squeeze-and-excite Multiply, padding, cropping, a transposed conv and
    Flatten into Dense."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((12, 12, 3))
    a = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(16, 3, padding="same", name="stem")(x)))
    b = L.BatchNormalization(name="sep_bn")(L.SeparableConv2D(16, 3, padding="same", name="sep")(a))
    r = L.Add(name="residual")([a, b])
    c = L.Conv2D(12, 1, activation="relu", name="side")(r)
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(r)
    cat = L.Concatenate(name="cat")([c, d])
    cat = L.MaxPooling2D()(L.ZeroPadding2D(1)(cat))
    e = L.Conv2D(16, 3, activation="relu", name="mix")(cat)
    s = L.Dense(16, activation="sigmoid", name="gate")(L.Dense(8, activation="relu", name="squeeze")(L.GlobalAveragePooling2D()(e)))
    e = L.Multiply(name="excite")([e, L.Reshape((1, 1, 16))(s)])
    t = L.Conv2DTranspose(12, 3, strides=2, activation="relu", name="up")(L.Cropping2D(1)(e))
    f = L.Dense(16, activation="relu", name="fc")(L.Flatten()(L.AveragePooling2D(2)(t)))
    model = keras.Model(x, L.Dense(5, name="out")(f), name="hand_built")
    return lively(model, seed)



@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
        classifier_activation=None,
    )  # fmt: skip
    pruned = kht.prune(lively(model), 0.5, structure="neuron")
    return model, pruned, kht.shrink(pruned)


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None
    )
    pruned = kht.prune(lively(model), 0.5, structure="neuron")
    return model, pruned, kht.shrink(pruned)


@pytest.fixture(scope="module")
def branchy():
    model = hand_built()
    pruned = kht.prune(model, 0.5, structure="neuron")
    return model, pruned, kht.shrink(pruned)


def zero_channels(tensor_values):
    """Channels exactly zero at every position of every example."""
    flat = tensor_values.reshape(-1, tensor_values.shape[-1])
    return frozenset(np.flatnonzero(np.all(flat == 0, axis=0)).tolist())


def assert_additions_consistent(pruned, x):
    """Every input of every Add loses the same (non-empty) channels.

    An input made by a BatchNormalization (with lively statistics) is zero
    exactly on its pruned channels; one made by a ReLU may be zero on more.
    """
    adds = [layer for layer in pruned.layers if isinstance(layer, L.Add)]
    made_by = {id(layer.output): layer for layer in pruned.layers}
    assert adds
    probe = keras.Model(pruned.inputs, [t for add in adds for t in add.input])
    values = iter(probe.predict(x, verbose=0))
    for add in adds:
        sets = [(zero_channels(next(values)), made_by[id(t)]) for t in add.input]
        exact = {z for z, layer in sets if isinstance(layer, L.BatchNormalization)}
        assert len(exact) == 1, add.name
        pruned_channels = exact.pop()
        assert pruned_channels, f"{add.name}: no channel pruned"
        assert all(pruned_channels <= z for z, _ in sets), add.name


@pytest.mark.parametrize("name", ["mobilenet", "resnet", "branchy"])
def test_shrink_of_group_pruned_graph_keeps_outputs(name, request):
    model, pruned, small = request.getfixturevalue(name)
    x = inputs_like(model)
    masked = pruned.predict(x, verbose=0)
    assert np.abs(masked).max() > 0.05  # a comparison of real signals, not zeros
    np.testing.assert_allclose(small.predict(x, verbose=0), masked, atol=1e-4)
    assert small.count_params() <= 0.6 * model.count_params()
    assert_additions_consistent(pruned, x)


def test_groups_follow_residuals_depthwise_and_concatenation(branchy):
    model, _, small = branchy
    groups = {g.layers: g for g in kht.channel_groups(model)}
    # stem and sep meet in the residual Add; its channels pass through `dw`
    # (multiplier 2: both copies of a channel go with it) into `cat`.
    tied = groups[("stem", "sep")]
    assert tied.prunable and tied.components.size == 16
    assert {"stem_bn", "sep_bn", "dw", "side"} <= set(tied.members)
    # the squeeze-and-excite Multiply ties `mix` to the gate's units.
    assert groups[("mix", "gate")].components.size == 16
    assert not groups[("out",)].prunable
    assert small.get_layer("stem").filters == small.get_layer("sep").filters == 8
    assert small.get_layer("dw").kernel.shape[-2:] == (8, 2)
    # concatenation offsets: `mix` reads side's 6 kept channels then dw's 16.
    assert small.get_layer("mix").kernel.shape[-2:] == (6 + 16, 8)
    assert small.get_layer("fc").kernel.shape[0] == 3 * 3 * 6


def test_shrunk_graph_saves_and_reloads(branchy, tmp_path):
    model, _, small = branchy
    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    x = inputs_like(model)
    np.testing.assert_allclose(
        keras.saving.load_model(path).predict(x, verbose=0),
        small.predict(x, verbose=0),
        atol=1e-6,
    )


def test_group_score_is_the_sum_of_its_members():
    # Branch a has unit norms 1, 2, 3 and branch b 3, 0.5, 0.5: alone, a
    # would lose unit 0 and b unit 1 or 2; together (4, 2.5, 3.5) both lose 1.
    x = keras.Input((2,))
    a = L.Dense(3, name="a")(x)
    b = L.Dense(3, name="b")(x)
    model = keras.Model(x, L.Dense(2, name="out")(L.Add()([a, b])))
    model.get_layer("a").kernel.assign([[1.0, 0, 3], [0, 2, 0]])
    model.get_layer("b").kernel.assign([[0.0, 0.5, 0], [3, 0, 0.5]])
    model.get_layer("out").kernel.assign([[1.0, 0], [0, 10], [0, 1]])
    graph = kht.ModelGraph(model).channels()
    units = next(m for m in graph.members if m.layer.name == "a" and m.role == "out")
    on_units = graph.component[units.nodes]
    np.testing.assert_allclose(importance.group_scores(graph)[on_units], [4, 2.5, 3.5])
    # path: outgoing norms 1, 10, 1 -> 4, 25, 3.5
    path = importance.group_scores(graph, "path")[on_units]
    np.testing.assert_allclose(path, [4, 25, 3.5])
    masks = pruning.pruning_masks(model, 1 / 3, structure="neuron")
    np.testing.assert_array_equal(masks["a"], [True, False, True])
    np.testing.assert_array_equal(masks["b"], [True, False, True])
    masks = pruning.pruning_masks(model, 1 / 3, structure="neuron", score="path")
    np.testing.assert_array_equal(masks["a"], [True, True, False])
    assert kht.shrink(kht.prune(model, 1 / 3, structure="neuron")).count_params() == (
        2 * 2 + 2
    ) * 2 + 2 * 2 + 2


def chain_masks(model, ratio, scope, score):
    """Today's per-layer neuron masks on a chain, from `neuron_scores`."""
    layers = pruning.prunable_layers(model)
    scores = [kht.pruning.neuron_scores(model, layer, score) for layer in layers]
    if scope == "layer":
        return [s >= np.sort(s)[int(round(ratio * s.size))] for s in scores]
    pooled = np.concatenate(scores)
    kept = pooled >= np.sort(pooled)[int(round(ratio * pooled.size))]
    return np.split(kept, np.cumsum([s.size for s in scores])[:-1])


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("score", ["magnitude", "path"])
def test_groups_on_a_chain_are_its_layers(scope, score):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Conv2D(8, 3, name="c1"), L.BatchNormalization(),
         L.MaxPooling2D(), L.Conv2D(6, 3, activation="relu", name="c2"), L.Flatten(),
         L.Dense(12, activation="relu", name="fc"), L.Dense(4, name="out")]
    )  # fmt: skip
    masks = pruning.pruning_masks(model, 0.5, structure="neuron", scope=scope, score=score)
    assert list(masks) == ["c1", "c2", "fc"]
    for got, expected in zip(masks.values(), chain_masks(model, 0.5, scope, score)):
        np.testing.assert_array_equal(got, expected)


def lambda_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    left = L.Lambda(lambda t: 2.0 * t, name="lam")(L.Conv2D(6, 3, name="c1")(x))
    tied = L.Add()([left, L.Conv2D(6, 3, name="c2")(x)])
    h = L.Conv2D(8, 1, activation="relu", name="c3")(tied)
    h = L.Conv2D(8, 1, activation="relu", groups=2, name="grouped")(h)
    h = L.Conv2D(8, 1, activation="relu", name="c4")(h)
    return keras.Model(x, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h)))


def test_unknown_layer_freezes_its_group_and_the_rest_is_pruned():
    model = lambda_model()
    frozen = {g.layers: g.frozen_by for g in kht.channel_groups(model) if not g.prunable}
    # c1 feeds the Lambda; c2 is added to its output: both stay whole.
    assert frozen[("c1",)] == frozen[("c2",)] == ("'lam' (Lambda)",)
    # a grouped convolution freezes what it reads and what it makes.
    assert frozen[("c3",)] == ("'grouped' (Conv2D)",)
    with pytest.warns(UserWarning, match="leaves 'grouped' .Conv2D. dense"):
        pruned = kht.prune(model, 0.5, structure="neuron")
    for name in ("c1", "c2", "c3", "grouped"):
        np.testing.assert_array_equal(
            pruned.get_layer(name).kernel.numpy(), model.get_layer(name).kernel.numpy()
        )
    small = kht.shrink(pruned)
    assert small.get_layer("c4").filters == 4 and small.get_layer("c1").filters == 6
    x = inputs_like(model)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5
    )


def test_reloaded_sequential_is_wired_as_a_chain(tmp_path):
    # A reloaded Sequential holds layers called twice: their `input` and
    # `output` tensors do not connect, so the graph must not rely on them.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), L.Dense(8, activation="relu", name="h"), L.Dense(2, name="out")]
    )
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    groups = {g.layers: g for g in kht.channel_groups(reloaded)}
    assert groups[("h",)].prunable
    small = kht.shrink(kht.prune(reloaded, 0.5, structure="neuron"))
    assert small.get_layer("h").units == 4


def test_a_shared_layer_is_refused_by_name():
    # Keras reports only a shared layer's first call; wiring it from that
    # would shrink the wrong channels (it used to end in a raw KeyError).
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    outputs = keras.layers.Dense(3, name="out")(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    for call in (kht.shrink, kht.channel_groups):
        with pytest.raises(ValueError, match=r"Shared layers .*\['shared'\]"):
            call(model)
