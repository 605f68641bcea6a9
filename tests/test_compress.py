"""`count_macs`, `ModelGraph`, custom layers, and `compress` to a budget."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_heavytail as kht
from keras_heavytail.pruning import channels
from keras_heavytail.pruning import sparsity

L = keras.layers


# ----------------------------------------------------------------------------
# count_macs against hand counts.
# ----------------------------------------------------------------------------


def _one(layer, shape):
    return kht.count_macs(keras.Sequential([keras.Input(shape), layer]))


MAC_ROWS = [
    # (id, layer, input shape, hand count)
    ("dense", lambda: L.Dense(5), (7,), 7 * 5),
    ("dense on a sequence", lambda: L.Dense(5), (3, 7), 3 * 7 * 5),
    ("conv2d valid", lambda: L.Conv2D(4, 3), (6, 6, 2), 4 * 4 * 4 * (3 * 3 * 2)),
    ("conv2d strided same", lambda: L.Conv2D(4, 3, strides=2, padding="same"),
     (6, 6, 2), 3 * 3 * 4 * (3 * 3 * 2)),
    ("conv2d groups", lambda: L.Conv2D(4, 3, groups=2), (5, 5, 4),
     3 * 3 * 4 * (3 * 3 * 2)),
    ("conv1d", lambda: L.Conv1D(3, 2), (5, 4), 4 * 3 * (2 * 4)),
    ("conv3d", lambda: L.Conv3D(2, 2), (3, 3, 3, 1), 2 * 2 * 2 * 2 * (2 * 2 * 2)),
    ("depthwise", lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (5, 5, 3),
     3 * 3 * 6 * 9),
    ("separable", lambda: L.SeparableConv2D(4, 3), (5, 5, 3),
     3 * 3 * 3 * 9 + 3 * 3 * 3 * 4),
    ("transposed", lambda: L.Conv2DTranspose(4, 3, strides=2), (3, 3, 2),
     3 * 3 * 2 * 9 * 4),
    ("einsum", lambda: L.EinsumDense("ab,bc->ac", output_shape=6), (4,), 4 * 6),
    ("batch norm folded", lambda: L.BatchNormalization(), (4,), 0),
    ("pooling", lambda: L.MaxPooling2D(), (4, 4, 2), 0),
]  # fmt: skip


@pytest.mark.parametrize("make,shape,expected", [r[1:] for r in MAC_ROWS],
                         ids=[r[0] for r in MAC_ROWS])  # fmt: skip
def test_count_macs_matches_hand_counts(make, shape, expected):
    assert _one(make(), shape).macs == expected


def test_count_macs_params_and_bytes():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.BatchNormalization()])
    cost = kht.count_macs(model)
    assert cost.params == model.count_params() == 4 * 3 + 3 + 4 * 3
    assert cost.bytes == cost.bytes_by_dtype["float32"] == 4 * cost.params
    assert "| total | | 12 | 27 |" in str(cost)


def test_count_macs_refuses_unknown_shapes():
    model = keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="fixed shapes"):
        kht.count_macs(model)


# ----------------------------------------------------------------------------
# The model graph: built once, taught custom layers.
# ----------------------------------------------------------------------------


def test_gradual_pruning_walks_the_model_once_per_training(monkeypatch):
    calls = []
    build = channels.build
    monkeypatch.setattr(channels, "build", lambda *a, **k: calls.append(1) or build(*a, **k))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu"),
                              L.Dense(16, activation="relu"), L.Dense(3)])  # fmt: skip
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = np.arange(64) % 3
    schedule = sparsity.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=8, frequency=2)
    callback = sparsity.GradualPruning(schedule, structure="neuron")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])  # 16 steps
    assert len(calls) == 1
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert np.sum(np.all(kernel == 0, axis=0)) == 8  # half the units, as scheduled
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    assert len(calls) == 1  # the same model: the same graph
    other = keras.models.clone_model(model)
    other.compile("sgd", "sparse_categorical_crossentropy")
    other.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    assert len(calls) == 2  # another model, one more walk


def test_one_shot_prune_walks_the_model_once(monkeypatch):
    calls = []
    build = channels.build
    monkeypatch.setattr(channels, "build", lambda *a, **k: calls.append(1) or build(*a, **k))
    model = keras.Sequential([keras.Input((8,)), L.Dense(16), L.Dense(3)])
    kht.prune(model, 0.5, structure="neuron")
    assert len(calls) == 1


class Scale(L.Layer):
    """A learned per-channel scale: `x * gamma`, channel by channel."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


class MyDense(L.Layer):
    """A Dense layer the library has never seen, with its own weight names."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.size), initializer="glorot_uniform")
        self.b = self.add_weight(shape=(self.size,), initializer="zeros")

    def call(self, x):
        return keras.ops.relu(x @ self.w + self.b)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def _custom_model():
    keras.utils.set_random_seed(1)
    x = keras.Input((6,))
    h = MyDense(10, name="mine")(x)
    h = Scale(name="scale")(h)
    out = L.Dense(3, name="out")(h)
    model = keras.Model(x, out)
    model.get_layer("scale").gamma.assign(np.linspace(0.5, 2.0, 10))
    model.get_layer("mine").b.assign(np.linspace(0.0, 0.3, 10))
    return model


def test_an_unregistered_custom_layer_freezes_its_channels():
    groups = kht.channel_groups(_custom_model())
    assert not any(group.prunable for group in groups)
    reasons = " ".join(reason for g in groups for reason in g.frozen_by)
    assert "(Scale)" in reasons or "(MyDense)" in reasons, reasons


def test_a_registered_custom_layer_is_pruned_and_shrunk_exactly(monkeypatch):
    monkeypatch.setattr(channels, "_REGISTRY", dict(channels._REGISTRY))
    kht.pruning.register_layer(MyDense, "producer", kernel="w", bias="b", units="size")
    kht.pruning.register_layer(Scale, "channelwise")
    model = _custom_model()
    groups = [g for g in kht.channel_groups(model) if g.prunable]
    assert [g.layers for g in groups] == [("mine",)]
    pruned = kht.prune(model, 0.4, structure="neuron")
    small = kht.shrink(pruned)
    assert small.get_layer("mine").size == 6
    assert small.get_layer("scale").gamma.shape == (6,)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert small.count_params() == 6 * 6 + 6 + 6 + 6 * 3 + 3
    # count_macs knows it too: a registered producer costs what a Dense would.
    assert dict((n, m) for n, _, m, _ in kht.count_macs(small).layers)["mine"] == 6 * 6


def test_register_layer_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="Received: kind='weird'"):
        kht.pruning.register_layer(Scale, "weird")
    with pytest.raises(ValueError, match="Layer subclass"):
        kht.pruning.register_layer(object, "elementwise")


def test_output_layers_of_a_two_headed_model_are_both_left_alone():
    x = keras.Input((4,))
    h = L.Dense(8, name="h")(x)
    a = L.Dense(2, name="a")(h)
    b = L.Dense(3, name="b", activation="softmax")(h)
    graph = kht.ModelGraph(keras.Model(x, [a, b]))
    assert [layer.name for layer in graph.output_layers] == ["a", "b"]
    masks = kht.pruning.pruning_masks(graph, 0.5, structure="entry")
    assert list(masks) == ["h"]


# ----------------------------------------------------------------------------
# compress to a budget.
# ----------------------------------------------------------------------------


def _bn_residual_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 1))
    h = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 3, padding="same")(x)))
    r = L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 3, padding="same")(h))
    h = L.ReLU()(L.Add()([h, r]))
    h = L.SeparableConv2D(24, 3, padding="same", activation="relu")(h)
    h = L.Concatenate()([h, L.Conv2D(8, 1)(h)])
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(h)))


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(384, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean((1, 2, 3)) > 0).astype("int64") + (x[:, 4:].mean((1, 2, 3)) > 0.1)
    model = _bn_residual_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:256], y[:256], epochs=3, batch_size=32, verbose=0)
    return model, (x[:256], y[:256]), (x[256:], y[256:])


def test_compressing_a_model_at_chance_warns(trained):
    _, train, val = trained
    untrained = _bn_residual_cnn()  # 3 classes; labels it never saw
    y_val = (np.argmax(untrained.predict(val[0], verbose=0), -1) + 1) % 3  # all wrong
    with pytest.warns(UserWarning, match=r"scores 0\.0000 on the validation data, about chance"):
        kht.compress(untrained, train, (val[0], y_val), kht.Budget(params=0.9), steps=1,
                     fine_tune_epochs=0, verbose=False)  # fmt: skip


# An absolute budget differs from a fraction only in `Budget.targets`,
# checked below with the other budget arithmetic.
@pytest.mark.parametrize("budget,kind", [(kht.Budget(macs=0.25), "macs"),
                                         (kht.Budget(params=0.4), "params")])  # fmt: skip
def test_compress_meets_each_budget(trained, budget, kind):
    model, train, val = trained
    dense = kht.count_macs(model)
    result = kht.compress(model, train, val, budget, steps=2, fine_tune_epochs=1,
                          verbose=False)  # fmt: skip
    target = budget.targets({"macs": dense.macs, "params": dense.params})[kind]
    assert getattr(result.cost, kind) <= target
    assert getattr(result.cost, kind) > 0.5 * target  # not pruned far past it
    assert result.cost == kht.count_macs(result.model)
    assert len(result.points) == 2 and 0.0 <= result.accuracy <= 1.0
    assert result.model.name == f"{model.name}_shrunk"  # once, not once per round
    assert "->" in result.summary()
    assert model.count_params() == dense.params  # the input is not modified
    # Handed back compiled as the dense model was, not with the fine-tuning's
    # packed-label loss: plain integer labels evaluate.
    assert np.isfinite(result.model.evaluate(*val, verbose=0))


def test_a_killed_compression_resumes_after_its_last_round(trained, tmp_path, monkeypatch,
                                                          capsys):
    model, train, val = trained
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "notes.txt").write_text("mine")  # a user's file stays
    args = dict(steps=2, fine_tune_epochs=0, backup_dir=backup)
    search = kht.pruning.search
    real, calls = search.prune_to, []

    def dies_in_round_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C in round 2 would
        return real(*a, **k)

    monkeypatch.setattr(search, "prune_to", dies_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        kht.compress(model, train, val, kht.Budget(macs=0.3), **args)
    saved = json.loads((backup / "state.json").read_text())["points"]
    assert len(saved) == 1
    monkeypatch.setattr(search, "prune_to", real)
    # Another job into the same folder is refused, the backup kept: another
    # budget, or other validation data of the same size.
    with pytest.raises(ValueError, match="another compression"):
        kht.compress(model, train, val, kht.Budget(macs=0.5), **args)
    with pytest.raises(ValueError, match="another compression"):
        kht.compress(model, train, (val[0], val[1][::-1]), kht.Budget(macs=0.3), **args)
    capsys.readouterr()
    result = kht.compress(model, train, val, kht.Budget(macs=0.3), **args)
    assert "resuming after round 1" in capsys.readouterr().out
    assert [p["macs"] for p in result.points[:1]] == [saved[0]["macs"]]
    assert len(result.points) == 2 and result.cost.macs <= 0.3 * kht.count_macs(model).macs
    assert sorted(p.name for p in backup.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("name,text", [("round.keras", "a user's model"),
                                       ("state.json", "not json")])  # fmt: skip
def test_a_backup_folder_with_foreign_files_is_refused_and_left_alone(trained, tmp_path,
                                                                       name, text):
    model, train, val = trained
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=f"holds a {name} that is not a compress backup"):
        kht.compress(model, train, val, kht.Budget(macs=0.5), steps=1, fine_tune_epochs=0,
                     backup_dir=tmp_path, verbose=False)  # fmt: skip
    assert (tmp_path / name).read_text() == text


def test_compress_rounds_channels_and_keeps_a_minimum(trained):
    model, train, val = trained
    result = kht.compress(model, train, val, kht.Budget(macs=0.5), round_to=4,
                          min_channels=4, steps=1, fine_tune_epochs=0, distill=0.0,
                          verbose=False)  # fmt: skip
    for layer in result.model.layers:
        if isinstance(layer, (L.Conv2D, L.SeparableConv2D)):
            assert layer.filters % 4 == 0 and layer.filters >= 4, layer.name


def test_rounding_does_not_make_every_group_jump_at_once():
    # Three hidden groups of 16 and round_to=8: a uniform ratio keeps 16 or 8
    # in every group together (1088 or 416 MACs). A budget of 0.8 must land
    # between, with some groups at 8 and others at 16.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,))] + [
        L.Dense(16, activation="relu", name=f"h{i}") for i in range(3)] + [L.Dense(4)])
    x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    y = np.arange(64) % 4
    assert kht.count_macs(model).macs == 1088
    result = kht.compress(model, (x, y), (x, y), kht.Budget(macs=0.8), round_to=8,
                          steps=1, fine_tune_epochs=0, verbose=False)  # fmt: skip
    widths = sorted(result.model.get_layer(f"h{i}").units for i in range(3))
    assert result.cost.macs <= 0.8 * 1088 and result.cost.macs > 416, result.cost
    assert widths[0] == 8 and widths[-1] == 16, widths


def test_a_result_far_under_its_budget_or_far_less_accurate_warns(trained):
    model, train, val = trained
    kwargs = {"steps": 1, "fine_tune_epochs": 0, "verbose": False}
    # round_to=8 on groups of 8-24 channels: the nearest step is far below.
    with pytest.warns(UserWarning, match="only 0.4.x of its budget .* round_to=8"):
        kht.compress(model, train, val, kht.Budget(macs=0.7), round_to=8, **kwargs)
    # The accuracy check on its own numbers (how far a tiny model falls
    # varies with what ran before in the process).
    from keras_heavytail.pruning import compress as compress_lib

    with pytest.warns(UserWarning, match="fell from 0.9000 to 0.8000") as caught:
        compress_lib._warn_if_far({"macs": 95}, {"macs": 100}, 8, 0.8, 0.9)
    assert len(caught) == 1  # 0.95x of the budget is close enough
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compress_lib._warn_if_far({"macs": 95}, {"macs": 100}, 8, 0.86, 0.9)


def test_a_budget_that_cannot_be_met_is_an_error(trained):
    model, train, val = trained
    with pytest.raises(ValueError, match="cannot be met"):
        kht.compress(model, train, val, kht.Budget(params=10), steps=1,
                     fine_tune_epochs=0, verbose=False)  # fmt: skip


@pytest.mark.parametrize("kwargs,message", [
    ({"macs": 0}, "Received: macs=0"),
    ({"params": -0.5}, "Received: params=-0.5"),
    ({"macs": 1.0}, "keeps the whole model"),
    ({"bytes": float("nan")}, "Received: bytes=nan"),
    ({}, "at least one"),
    ({"latency": 1.5}, "give milliseconds as `latency_ms`"),
])  # fmt: skip
def test_budget_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kht.Budget(**kwargs)


def test_budget_config_round_trips_and_refuses_unknown_keys():
    budget = kht.Budget(macs=0.25, bytes=20_000)
    assert kht.Budget.from_config(budget.get_config()) == budget
    with pytest.raises(ValueError, match=r"Unknown Budget config keys \['mac'\]"):
        kht.Budget.from_config({"mac": 0.25})


def test_latency_ms_is_milliseconds_and_latency_a_fraction():
    dense = {"macs": 1000, "params": 500, "bytes": 4000, "latency_ms": 0.2}
    assert kht.Budget(latency_ms=0.05).targets(dense) == {"latency_ms": 0.05}
    assert kht.Budget(latency_ms=1.0).targets(dense) == {"latency_ms": 1.0}
    assert kht.Budget(latency=0.5).targets(dense) == {"latency_ms": 0.1}
    assert kht.Budget(latency=0.5, latency_ms=0.05).targets(dense) == {"latency_ms": 0.05}
    assert kht.Budget(macs=0.5, params=100).targets(dense) == {"macs": 500.0, "params": 100.0}
    assert kht.Budget(latency=0.5).measured() == ["latency_ms"]


@pytest.mark.parametrize("importance", ["l1", "bn_scale", "taylor", "path"])
def test_every_importance_criterion_compresses(trained, importance):
    model, train, val = trained
    result = kht.compress(model, train, val, kht.Budget(macs=0.5), importance=importance,
                          steps=1, fine_tune_epochs=0, verbose=False)  # fmt: skip
    assert result.cost.macs <= 0.5 * kht.count_macs(model).macs


def test_bn_scale_ranks_channels_by_gamma():
    model = _bn_residual_cnn()
    bn = next(layer for layer in model.layers if isinstance(layer, L.BatchNormalization))
    gamma = np.linspace(1.0, 2.0, 16)
    gamma[[3, 7]] = 0.01
    bn.gamma.assign(gamma)
    other = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)][1]
    other.gamma.assign(np.ones(16))
    masks = kht.pruning.pruning_masks(model, 2 / 16, structure="neuron", score="bn_scale")
    first = model.layers[1].name
    assert np.flatnonzero(~masks[first]).tolist() == [3, 7]


def test_distillation_loss_is_cross_entropy_at_weight_zero_and_kl_at_one():
    logits = np.array([[2.0, 0.5, -1.0]], "float32")
    teacher = np.array([[1.0, 1.0, 0.0]], "float32")
    packed = np.concatenate([[[0.0]], teacher], 1).astype("float32")
    ce = kht.pruning.DistillationLoss(weight=0.0)(packed, logits)
    expected_ce = -np.log(np.exp(2.0) / np.exp(logits).sum())
    np.testing.assert_allclose(float(ce), expected_ce, rtol=1e-5)
    same = np.concatenate([[[0.0]], logits], 1).astype("float32")
    assert abs(float(kht.pruning.DistillationLoss(weight=1.0)(same, logits))) < 1e-5


def test_recalibrated_batch_norm_statistics_are_the_batch_averages():
    model = keras.Sequential([keras.Input((3,)), L.BatchNormalization()])
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(64, 3)).astype("float32")
    assert kht.pruning.recalibrate_batch_norm(model, x, batch_size=16) == 1
    bn = model.layers[0]
    means = x.reshape(4, 16, 3).mean(1).mean(0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), means, rtol=1e-4)
    assert bn.momentum == 0.99  # restored


def test_compress_names_the_layer_that_freezes_every_channel(trained):
    _, train, val = trained
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", name="conv")(x)
    h = L.Lambda(lambda t: t * 2.0, name="doubler")(h)
    model = keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    with pytest.raises(ValueError, match="'doubler' \\(Lambda\\)"):
        kht.compress(model, train, val, kht.Budget(macs=0.5), steps=1,
                     fine_tune_epochs=0, verbose=False)  # fmt: skip


def test_count_macs_refuses_shared_layers_and_non_models():
    x = keras.Input((4,))
    shared = L.Dense(4, name="twice")
    model = keras.Model(x, shared(shared(x)))
    with pytest.raises(ValueError, match="twice"):
        kht.count_macs(model)
    with pytest.raises(ValueError, match="takes a Keras model"):
        kht.count_macs(L.Dense(3))


def test_channel_groups_refuse_an_exclude_the_model_lacks():
    with pytest.raises(ValueError, match=r"Received: \['typo'\]"):
        kht.channel_groups(_bn_residual_cnn(), exclude=["typo"])


@pytest.mark.parametrize("change,message", [
    (lambda x, y: (x, y + 7), "labels must be in \\[0, 3\\)"),
    (lambda x, y: (x, y + 0.5), "integer class ids"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 0, np.nan, x), y),
     "NaN or inf"),
])  # fmt: skip
def test_compress_refuses_data_that_would_give_a_wrong_model(trained, change, message):
    model, train, val = trained
    with pytest.raises(ValueError, match=message):
        kht.compress(model, change(*train), val, kht.Budget(macs=0.5), verbose=False)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        part = slice(i * self.size, (i + 1) * self.size)
        return self.x[part], self.y[part]


def test_datasets_of_batches_compress_as_their_arrays_do(trained):
    import tensorflow as tf

    model, train, val = trained
    kwargs = {"steps": 1, "fine_tune_epochs": 1, "verbose": False}
    reference = kht.compress(model, train, val, kht.Budget(macs=0.5), **kwargs)
    streams = [
        # Labels shaped (n, 1), as keras.datasets gives them, read as (n,).
        ((train[0], train[1][:, None]), (val[0], val[1][:, None])),
        (tf.data.Dataset.from_tensor_slices(train).batch(48), _Batches(*val, 50)),
        ((batch for batch in _Batches(*train, 100)), iter(list(_Batches(*val, 7)))),
    ]
    for train_stream, val_stream in streams:
        result = kht.compress(model, train_stream, val_stream, kht.Budget(macs=0.5),
                              **kwargs)  # fmt: skip
        assert result.accuracy == reference.accuracy
        for a, b in zip(result.model.get_weights(), reference.model.get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make,message", [
    (lambda t: t.repeat(), "never ends"),
    (lambda t: t.map(lambda x, y: (x, y, 1.0)), "a tuple of 3 items"),
    (lambda t: t.map(lambda x, y: x), "Received: ndarray"),
    (lambda t: t.take(0), "yielded no batches"),
    (lambda t: t.unbatch(), r"needs `.batch\(n\)`"),
])  # fmt: skip
def test_datasets_compress_cannot_read_are_refused(trained, make, message):
    import tensorflow as tf

    model, train, val = trained
    stream = make(tf.data.Dataset.from_tensor_slices(train).batch(64))
    with pytest.raises(ValueError, match=message):
        kht.compress(model, stream, val, kht.Budget(macs=0.5), verbose=False)
    with pytest.raises(ValueError, match="Received: ndarray"):
        kht.compress(model, train[0], val, kht.Budget(macs=0.5), verbose=False)
    with pytest.raises(ValueError, match=r"iter\(batches\).*a list of 3 items"):
        kht.compress(model, list(_Batches(*train, 100)), val, kht.Budget(macs=0.5))
    two = [(train[0][:100], train[1][:100]), (train[0][100:], train[1][100:])]
    with pytest.raises(ValueError, match=r"iter\(batches\)`\)\. Reading it failed"):
        kht.compress(model, two, val, kht.Budget(macs=0.5))
    with pytest.raises(ValueError, match="given as a dict"):
        kht.compress(model, ({"x": train[0]}, train[1]), val, kht.Budget(macs=0.5))
    with pytest.raises(ValueError, match="not booleans"):
        kht.compress(model, (train[0] > 0, train[1]), val, kht.Budget(macs=0.5))


def test_an_endless_stream_is_refused_before_it_fills_the_memory(trained, monkeypatch):
    import itertools

    from keras_heavytail.pruning import inputs

    model, train, val = trained
    monkeypatch.setattr(inputs, "memory_limit", lambda: 10 * train[0].nbytes)
    endless = itertools.cycle([(train[0][:64], train[1][:64])])
    with pytest.raises(ValueError, match=r"has given [\d,]+ examples .* and not ended"):
        kht.compress(model, endless, val, kht.Budget(macs=0.5), verbose=False)


def test_compress_refuses_a_bad_learning_rate_and_two_outputs(trained):
    model, train, val = trained
    with pytest.raises(ValueError, match="Received: learning_rate=nan"):
        kht.compress(model, train, val, kht.Budget(macs=0.5), learning_rate=float("nan"))
    x = keras.Input((4,))
    two = keras.Model(x, [L.Dense(3)(x), L.Dense(3)(x)])
    with pytest.raises(ValueError, match="one input and one output"):
        kht.compress(two, train, val, kht.Budget(macs=0.5))


def test_bytes_and_latency_budgets_are_measured_in_litert(trained):
    model, train, val = trained
    result = kht.compress(model, train, val, kht.Budget(bytes=0.85, latency_ms=1000.0),
                          steps=1, fine_tune_epochs=0, verbose=False)  # fmt: skip
    measured = result.measured
    assert measured["bytes"] <= measured["targets"]["bytes"]
    assert 0 < measured["latency_ms"] <= 1000.0  # measured, never asserted on speed
    assert measured["targets"]["latency_ms"] == 1000.0
    # A file smaller than LiteRT's fixed overhead allows is a clear error.
    with pytest.raises(ValueError, match="cannot be met|fixed overhead"):
        kht.compress(model, train, val, kht.Budget(bytes=0.3), steps=1,
                     fine_tune_epochs=0, verbose=False)  # fmt: skip


def test_a_budget_the_model_already_meets_says_so(trained):
    model, train, val = trained
    with pytest.warns(UserWarning, match="already meets the budget"):
        result = kht.compress(model, train, val, kht.Budget(params=10**9), steps=1,
                              fine_tune_epochs=0, verbose=False)  # fmt: skip
    assert result.cost.params == model.count_params()


def _shapes_model():
    """Flatten into Dense, a depthwise multiplier, a transposed and a 1-D
    convolution, EinsumDense: the layers whose MACs `cost` reads off shapes."""
    keras.utils.set_random_seed(2)
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(12, 3, name="c1")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(h)
    h = L.Conv2DTranspose(10, 3, strides=2, name="up")(h)
    h = L.Reshape((9, 10))(L.Conv2D(10, 2, strides=4, name="c2")(h))
    h = L.Conv1D(9, 2, name="c3")(h)
    h = L.EinsumDense("abc,cd->abd", output_shape=(8, 7), name="ein")(h)
    return keras.Model(x, L.Dense(3, name="out")(L.Dense(11, name="fc")(L.Flatten()(h))))


@pytest.mark.filterwarnings("ignore:prune leaves 'ein' .EinsumDense. dense")  # it does
@pytest.mark.parametrize("make", [_bn_residual_cnn, _shapes_model], ids=["residual", "shapes"])
def test_a_candidates_cost_is_the_cost_of_the_model_it_builds(make):
    # The search costs a dozen candidates without building them; the one it
    # builds must cost what was read off its shapes, whatever the ratios.
    bench = kht.pruning.search.Workbench(make())
    groups = len(kht.pruning.one_shot.prunable_groups(bench.graph)[1])
    for ratio, round_to, scope in [(0.3, 1, "layer"), (0.7, 8, "layer"), (0.5, 1, "global"),
                                   (1.0, 1, "layer"), ([0.9, 0.1] * groups, 4, "layer")]:  # fmt: skip
        options = {"score": "magnitude", "scope": scope, "normalized": True,
                   "round_to": round_to, "min_channels": 1, "exclude": None}  # fmt: skip
        ratio = ratio[:groups] if isinstance(ratio, list) else ratio
        built = kht.count_macs(bench.candidate(ratio, options))
        assert bench.cost(ratio, options) == {"macs": built.macs, "params": built.params}
        assert built.macs < kht.count_macs(bench.model).macs


def test_torch_tensors_that_need_grad_or_are_bfloat16_are_read_as_numpy():
    torch = pytest.importorskip("torch")
    from keras_heavytail.pruning import inputs

    x = np.arange(12, dtype="float32").reshape(6, 2)
    y = np.array([0, 1, 2, 0, 1, 2])
    for tensor in (torch.tensor(x, requires_grad=True), torch.tensor(x).bfloat16()):
        got_x, got_y = inputs.check_data((tensor, torch.tensor(y)), "train", 3)
        np.testing.assert_array_equal(got_x, x)  # small integers: exact in bfloat16
        np.testing.assert_array_equal(got_y, y)
    batches = [(torch.tensor(x[:3], requires_grad=True), torch.tensor(y[:3])),
               (torch.tensor(x[3:], requires_grad=True), torch.tensor(y[3:]))]  # fmt: skip
    got_x, _ = inputs.check_data(iter(batches), "train", 3)
    np.testing.assert_array_equal(got_x, x)
