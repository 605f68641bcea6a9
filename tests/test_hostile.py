"""Hostile inputs and faults: every case of issue #10 as a row of a table.

Each row names an input, the error it must raise (type and a phrase of its
message) and the files that must come through unchanged (or never appear).
The CLI rows also check for one line on stderr, exit code 2 and no
traceback. Then the cases that must simply work (resume, clipping, the
sampler's finite range), and two real SIGKILL tests: one during a save, one
mid-epoch during `keras-heavytail train`.
"""

import gzip
import hashlib
import json
import math
import os
import shutil
import signal
import textwrap
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import HANG_GUARD_S
from helpers import assert_round_trips
from helpers import run_python
from helpers import tiny_data
from helpers import tiny_mlp

import keras_heavytail as kht
from keras_heavytail import compressibility
from keras_heavytail import files
from keras_heavytail.experiments import cli
from keras_heavytail.experiments import datasets
from keras_heavytail.experiments import runner as experiments
from keras_heavytail.optimizers import noise as noise_lib

NAN, INF = float("nan"), float("inf")
IDX_NAMES = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
)  # fmt: skip


def digits_data(n=32):
    """Random inputs of the digits' shape and labels 0..9."""
    x = np.random.default_rng(0).normal(size=(n, 8, 8, 1)).astype("float32")
    return x, np.arange(n) % 10


def digits_model(seed=0):
    """A tiny classifier of the embedded digits' shape (8, 8, 1)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(12, activation="relu", name="hidden1"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """Files the rows use: good, broken, NaN and pruned models; bad data."""
    d = tmp_path_factory.mktemp("hostile")
    model = digits_model()
    files.save_model(model, d / "good.keras")
    raw = (d / "good.keras").read_bytes()
    (d / "cut.keras").write_bytes(raw[: len(raw) // 3])
    with zipfile.ZipFile(d / "good.keras") as src:
        with zipfile.ZipFile(d / "inner.keras", "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename.endswith(".h5"):
                    data = data[:200]  # a corrupt inner weights file
                dst.writestr(item, data)
    nan = digits_model()
    nan.set_weights([np.full(w.shape, np.nan, "float32") for w in nan.get_weights()])
    nan.save(d / "nan.keras")
    pruned = kht.prune(digits_model(), 0.9, structure="entry")
    files.save_model(pruned, d / "pruned.keras")
    kht.export_tflite(digits_model(), d / "good.tflite")
    (d / "existing.tflite").write_bytes(b"keep me")
    held = [files.Lock(d / name) for name in ("held.keras", "held.tflite")]
    for lock in held:  # a live job writes them
        lock.__enter__()
    (d / "afile").write_text("keep me")
    (d / "notes.txt").write_text("a user's notes")
    (d / "linked.keras.lock").symlink_to(d / "notes.txt")
    (d / "dirlock.keras.lock").mkdir()
    shutil.copy(d / "good.keras", d / "carddir.keras")
    (d / "carddir.json").mkdir()
    blown = digits_model()
    blown.set_weights([w + 1e16 for w in blown.get_weights()])
    files.save_model(blown, d / "blown.keras")
    (d / "carded.json").write_text("a user's notes")  # beside a model to be written
    keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2),
                      keras.layers.Dense(2)]).save(d / "lambda.keras")  # fmt: skip
    (d / "dangling.keras").symlink_to(d / "gone" / "x.keras")  # a user's link
    (d / "folder").mkdir()
    (d / "mine").mkdir()  # a user's folder: their report, README and table
    for name in ("report.md", "README.md", "sweep.md"):
        (d / "mine" / name).write_text("keep me")
    (d / "mine2").mkdir()  # an empty runs.jsonl is no run log
    (d / "mine2" / "report.md").write_text("keep me")
    (d / "mine2" / "runs.jsonl").write_text("")
    (d / "mnist").mkdir()
    whole = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(10))
    for name in IDX_NAMES:
        (d / "mnist" / name).write_bytes(whole[:-12])  # truncated .gz
    yield d
    for lock in held:
        lock.__exit__(None, None, None)


def snapshot(paths):
    """Each file's hash; a folder's list of entries."""
    return {
        p: sorted(os.listdir(p)) if Path(p).is_dir()
        else hashlib.sha256(Path(p).read_bytes()).hexdigest()
        for p in paths
    }  # fmt: skip


# ----------------------------------------------------------------------------
# The command line: (id, argv, message, unchanged, absent). `{d}` is the
# folder of the `place` fixture; every row must exit 2 with one line.
# ----------------------------------------------------------------------------

# Which check sees the divergence first (the loss or a variable) depends on the
# CPU, and the variable's path on how many models the process built: match the
# advice both messages end with.
DIVERGED = "Lower sigma or the learning rate, or raise alpha."
TRAIN = ["train", "--width", "8", "--epochs", "2", "--limit", "120"]
CLI_ROWS = [
    ("train sigma nan", TRAIN + ["--sigma", "nan", "--output", "{d}/t.keras"],
     "got 'nan'", [], ["t.keras"]),
    ("train sigma inf", TRAIN + ["--sigma", "inf", "--output", "{d}/t.keras"],
     "got 'inf'", [], ["t.keras"]),
    ("train negative lr", TRAIN + ["--lr", "-0.05", "--output", "{d}/t.keras"],
     "got '-0.05'", [], ["t.keras"]),
    ("train lr beyond float32", TRAIN + ["--lr", "1e308", "--output", "{d}/t.keras"],
     "expected a value in (0, 3.4e+38]; got '1e308'", [], ["t.keras"]),
    ("train alpha below the finite range",
     TRAIN + ["--alpha", "0.1", "--output", "{d}/t.keras"],
     "`alpha` must be >= 0.31", [], ["t.keras", "t.json"]),
    ("train that diverges", TRAIN + ["--sigma", "1e38", "--output", "{d}/t.keras"],
     DIVERGED, [], ["t.keras", "t.json"]),
    ("train over an existing file", TRAIN + ["--output", "{d}/good.keras"],
     "pass --overwrite", ["good.keras"], []),
    ("train beside a .json of the user's", TRAIN + ["--output", "{d}/carded.keras"],
     "(the data card of --output) exists", ["carded.json"], ["carded.keras"]),
    ("train a batch size of 1e23", TRAIN + ["--batch-size", "1e23", "--output",
     "{d}/t.keras"], "got '1e23'", [], ["t.keras"]),
    ("train into a file another job is writing", TRAIN + ["--output", "{d}/held.keras"],
     "is being written by another job", ["held.keras.lock"], ["held.keras", "held.json"]),
    ("prune into a file another job is writing",
     ["prune", "{d}/good.keras", "--ratio", "0.5", "--output", "{d}/held.keras"],
     "is being written by another job", ["held.keras.lock"], ["held.keras", "held.json"]),
    ("export into a file another job is writing",
     ["export", "{d}/good.keras", "--output", "{d}/held.tflite"],
     "is being written by another job", ["held.tflite.lock"], ["held.tflite", "held.json"]),
    ("seed out of range", TRAIN + ["--seed", "2147483647", "--output", "{d}/t.keras"],
     "got '2147483647'", [], ["t.keras"]),
    ("export to a folder", ["export", "{d}/good.keras", "--output", "{d}/folder"],
     "is a folder", ["good.keras"], []),
    ("export over an existing file",
     ["export", "{d}/good.keras", "--output", "{d}/existing.tflite"],
     "pass --overwrite", ["existing.tflite"], []),
    ("analyze a NaN model", ["analyze", "{d}/nan.keras"],
     "Layer 'hidden1' has NaN or inf weights (the model diverged)", ["nan.keras"], []),
    ("export over a file, then fail evaluating",
     ["export", "{d}/good.keras", "--evaluate", "--overwrite", "--probabilities",
      "--limit", "50", "--output", "{d}/existing.tflite"], "pass `from_logits=True`",
     ["existing.tflite"], []),
    ("train with its lock a link to a user's file", TRAIN + ["--output", "{d}/linked.keras"],
     "is a symbolic link", ["notes.txt"], ["linked.keras"]),
    ("train with a file name too long for its lock and backup",
     TRAIN + ["--output", "{d}/" + "x" * 240 + ".keras"], "keep it to 234", [], []),
    ("train into a path ending in a slash", TRAIN + ["--output", "{d}/new.keras/"],
     "ends in a slash (a folder); give a .keras file", [], ["new.keras"]),
    ("demo into a folder whose name is too long", ["demo", "--output", "{d}/" + "x" * 300],
     "File name too long", [], []),
    ("train over a model whose card's place is a folder",
     TRAIN + ["--output", "{d}/carddir.keras", "--overwrite"],
     "(where the data card of --output goes) is a folder", ["carddir.keras"], []),
    ("prune with a ratio and the criterion", ["prune", "{d}/good.keras", "--ratio", "0.5",
     "--criterion", "paper", "--output", "{d}/p.keras"], "not both", ["good.keras"],
     ["p.keras"]),
    ("train with its lock a folder", TRAIN + ["--output", "{d}/dirlock.keras"],
     "is a folder, not a lock this library wrote; remove or rename it",
     ["dirlock.keras.lock"], ["dirlock.keras"]),
    ("export a model with weights beyond 1e15", ["export", "{d}/blown.keras", "--output",
     "{d}/blown.tflite"], "holds values beyond 1e+15", ["blown.keras"], ["blown.tflite"]),
    ("export a NaN model and evaluate it",
     ["export", "{d}/nan.keras", "--output", "{d}/nan.tflite", "--evaluate",
      "--limit", "50"],
     "NaN or inf weights", ["nan.keras"], ["nan.tflite"]),
    ("reproduce into a file", ["reproduce", "--output", "{d}/afile"],
     "is a file", ["afile"], []),
    ("demo into a file", ["demo", "--output", "{d}/afile"], "is a file", ["afile"], []),
    ("prune onto a dangling link", ["prune", "{d}/good.keras", "--ratio", "0.5",
     "--output", "{d}/dangling.keras"], "exists; pass --overwrite", [], []),
    ("export int8 calibrated on data the model cannot take",
     ["export", "{d}/good.keras", "--quantize", "int8", "--dataset", "teacher_student",
      "--evaluate", "--output", "{d}/misfit.tflite"],
     "the calibration inputs have shape (30,) but the model takes (8, 8, 1)",
     ["good.keras"], ["misfit.tflite", "misfit.json"]),
    ("export, then evaluate logits as probabilities",
     ["export", "{d}/good.keras", "--evaluate", "--probabilities", "--limit", "50",
      "--output", "{d}/probs.tflite"], "pass `from_logits=True`", ["good.keras"],
     ["probs.tflite", "probs.json"]),
    ("train below a file", TRAIN + ["--output", "{d}/afile/t.keras"],
     "lies below", ["afile"], []),
    ("reproduce below a file", ["reproduce", "--output", "{d}/afile/out"],
     "which is a file, not a folder", ["afile"], []),
    ("reproduce into a folder with a report of the user's",
     ["reproduce", "--output", "{d}/mine"], "already holds 'report.md'",
     ["mine/report.md"], ["mine/runs.jsonl"]),
    ("demo into a folder with a README of the user's", ["demo", "--output", "{d}/mine"],
     "already holds 'report.md', 'README.md'", ["mine/README.md"], ["mine/runs.jsonl"]),
    ("sweep into a folder with a table of the user's", ["sweep", "--output", "{d}/mine"],
     "already holds 'sweep.md'", ["mine/sweep.md"], ["mine/runs.jsonl"]),
    ("reproduce into a user's folder with an empty runs.jsonl",
     ["reproduce", "--output", "{d}/mine2"], "already holds 'report.md'",
     ["mine2/report.md", "mine2/runs.jsonl"], []),
    ("reproduce with sigma beyond float32", ["reproduce", "--sigma", "1e39", "--output",
     "{d}/out"], "got '1e39'", [], ["out/runs.jsonl"]),
    ("truncated .gz in --data",
     ["reproduce", "--dataset", "mnist", "--data", "{d}/mnist", "--output",
      "{d}/out"],
     "is truncated or corrupt", [f"mnist/{n}" for n in IDX_NAMES], ["out/runs.jsonl"]),
    ("truncated .keras", ["analyze", "{d}/cut.keras"], "not a .keras file",
     ["cut.keras"], []),
    (".keras with a corrupt inner file", ["analyze", "{d}/inner.keras"],
     "cannot load", ["inner.keras"], []),
    ("missing .keras", ["analyze", "{d}/none.keras"], "no model file", [], []),
    (".keras with a Lambda layer", ["analyze", "{d}/lambda.keras"],
     "holds a Lambda layer (Python code), which the command line does not run",
     ["lambda.keras"], []),
    ("benchmark runs=0", ["benchmark", "{d}/good.tflite", "--runs", "0"],
     "got '0'", ["good.tflite"], []),
    ("limit 0", TRAIN[:-1] + ["0", "--output", "{d}/t.keras"], "got '0'", [],
     ["t.keras"]),
    ("train --depth on a one-layer mlp", TRAIN + ["--depth", "3", "--output",
     "{d}/t.keras"], "--depth 3 with --architecture mlp", [], ["t.keras"]),
    ("train digits from a folder", TRAIN + ["--data", "{d}/folder", "--output",
     "{d}/t.keras"], "`data_dir` is for mnist", [], ["t.keras"]),
    ("prune by the paper's criterion, entry by entry",
     ["prune", "{d}/good.keras", "--criterion", "paper", "--structure", "entry",
      "--output", "{d}/p.keras"], "--structure entry, --scope and --score do not apply",
     ["good.keras"], ["p.keras"]),
    ("prune by the paper's criterion, scored by path",
     ["prune", "{d}/good.keras", "--criterion", "paper", "--score", "path",
      "--output", "{d}/p.keras"], "Received: --structure neuron --scope layer --score path",
     ["good.keras"], ["p.keras"]),
]  # fmt: skip


def run_cli(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # argparse refuses a bad value
        code = exit_info.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message,unchanged,absent",
    [row[1:] for row in CLI_ROWS],
    ids=[row[0] for row in CLI_ROWS],
)
def test_cli_refuses_with_one_line(argv, message, unchanged, absent, place, capsys):
    argv = [a.replace("{d}", str(place)) for a in argv]
    before = snapshot([place / p for p in unchanged])
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err, err
    if not err.startswith("usage:"):  # argparse prints its usage line too
        assert len(err.strip().splitlines()) == 1, err
    assert snapshot([place / p for p in unchanged]) == before
    for name in absent:
        assert not (place / name).exists(), name
    # A refused or diverged `train` leaves no backup folder behind either.
    assert not list(place.glob(".t.keras.backup*"))


# ----------------------------------------------------------------------------
# The Python API: (id, call, error type, message phrase).
# ----------------------------------------------------------------------------


def fit_one_step(alpha, noise="neuron", dtype="float32", sigma=0.01):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, dtype=dtype, name="dense")]
    )
    model.compile(
        optimizer=kht.HeavyTailSGD(0.1, alpha=alpha, noise=noise, sigma=sigma, seed=0),
        loss="mse",
    )
    model.fit(np.ones((4, 4), dtype), np.ones((4, 3), dtype), verbose=0)


def diverging_train():
    data = datasets.load_dataset("digits", limit=100)
    protocol = experiments.Protocol(width=8, epochs=2)
    setting = experiments.Setting("HT", "entry", 1.75, 1e38)
    experiments.train_one(data, setting, protocol)


def nan_model(value=np.nan):
    model = tiny_mlp()
    model.set_weights(
        [np.full(w.shape, value, "float32") for w in model.get_weights()]
    )
    return model


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.hidden, self.out = keras.layers.Dense(4), keras.layers.Dense(3)

    def call(self, x):
        return self.out(self.hidden(x))


def subclassed_model():
    model = _Subclassed()
    model(np.zeros((1, 5), "float32"))
    return model


def twice_named_model():
    """A top-level Dense 'fc' and another inside the nested model 'sub'."""
    sub = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, name="fc"),
                            keras.layers.Dense(4, name="fc2")], name="sub")  # fmt: skip
    inputs = keras.Input((4,))
    hidden = sub(keras.layers.Dense(8, name="fc")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))


def depthwise_model(nan_gamma=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(4, 1, name="pw")(x)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    if nan_gamma:
        gamma = model.get_layer("bn").gamma
        gamma.assign(np.where(np.arange(4) == 2, np.nan, 1.0).astype("float32"))
    return model


def inf_model():
    model = tiny_mlp()
    weights = model.get_weights()
    weights[0][0, 0] = np.inf
    model.set_weights(weights)
    return model


def run_log(path, header, lines=()):
    Path(path).write_text("".join(json.dumps(line) + "\n" for line in lines))
    with files.RunLog(path, header):
        pass


def locked_run_log(path):
    with files.Lock(path):  # another job holds it
        with files.RunLog(path, {"job": 1}):
            pass


Poly = keras.optimizers.schedules.PolynomialDecay
Exp = keras.optimizers.schedules.ExponentialDecay
API_ROWS = [
    ("prune a model with two layers of one name", lambda d: kht.prune(
     twice_named_model(), criterion="paper"), ValueError,
     "has two layers named 'fc' (one inside 'sub')"),
    ("channel pruning of a model with two layers of one name", lambda d: kht.prune(
     twice_named_model(), 0.5, structure="neuron"), ValueError, "Give them distinct names"),
    ("sigma nan", lambda d: kht.HeavyTailSGD(sigma=NAN), ValueError, "sigma=nan"),
    ("sigma inf", lambda d: kht.HeavyTailSGD(sigma=INF), ValueError, "sigma=inf"),
    ("sigma schedule gives nan", lambda d: kht.HeavyTailSGD(sigma=Poly(NAN, 10, 0.0)),
     ValueError, "`sigma` must be a finite float >= 0. Received: sigma=nan"),
    ("negative lr", lambda d: kht.HeavyTailSGD(-0.05), ValueError,
     "Received: learning_rate=-0.05"),
    ("nan lr", lambda d: kht.HeavyTailSGD(NAN), ValueError,
     "Received: learning_rate=nan"),
    ("lr schedule gives a negative rate", lambda d: kht.HeavyTailSGD(Exp(-0.1, 10, 0.9)),
     ValueError, "Received: learning_rate=-0.1"),
    ("wrapped optimizer with a negative lr",
     lambda d: kht.HeavyTailNoise(keras.optimizers.Adam(-1e-3)), ValueError,
     "Received: learning_rate=-0.001"),
    ("alpha 0.1 in float32", lambda d: fit_one_step(0.1), ValueError,
     "`alpha` must be >= 0.31 for 'neuron' noise on float32"),
    ("alpha 0.5 elliptical in float32", lambda d: fit_one_step(0.5, "elliptical"),
     ValueError, "`alpha` must be >= 0.62 for 'elliptical'"),
    ("alpha 0.05 in float64", lambda d: fit_one_step(0.05, "entry", "float64"),
     ValueError, "`alpha` must be >= 0.1 for 'entry' noise on float64"),
    ("max_noise 0", lambda d: kht.HeavyTailSGD(max_noise=0), ValueError,
     "Received: max_noise=0"),
    ("max_noise nan", lambda d: kht.HeavyTailSGD(max_noise=NAN), ValueError,
     "Received: max_noise=nan"),
    ("max_noise a string", lambda d: kht.HeavyTailNoise(keras.optimizers.SGD(),
     max_noise="3"), ValueError, "Received: max_noise='3'"),
    ("seed 2**31 - 1", lambda d: kht.HeavyTailSGD(seed=2**31 - 1), ValueError,
     "Received: seed=2147483647"),
    ("seed 2**70", lambda d: kht.HeavyTailSGD(seed=2**70), ValueError,
     f"Received: seed={2**70}"),
    ("seed -1", lambda d: kht.optimizers.symmetric_stable((3,), 1.5, seed=-1), ValueError,
     "Received: seed=-1"),
    ("sigma 1e39 (inf in float32)", lambda d: kht.HeavyTailSGD(sigma=1e39), ValueError,
     "beyond float32's range (3.4e38)"),
    ("sigma_scale misspelt", lambda d: kht.HeavyTailSGD(sigma_scale="fanin"), ValueError,
     "Received: sigma_scale='fanin'"),
    ("seed a float", lambda d: kht.HeavyTailSGD(seed=3.0), ValueError, "Received: seed=3.0"),
    ("sampler seed a string", lambda d: kht.optimizers.symmetric_stable((3,), 1.5,
     seed="7"), ValueError, "a pair of ints in [0, 2147483647) (a stateless seed). Received: seed='7'"),
    ("sampler seed of three ints", lambda d: kht.optimizers.symmetric_stable((3,), 1.5,
     seed=[1, 2, 3]), ValueError, "Received: seed=[1, 2, 3]"),
    ("sampler seed tensor of shape (3,)", lambda d: kht.optimizers.symmetric_stable(
     (3,), 1.5, seed=keras.ops.ones((3,), "int32")), ValueError, "Received: shape=(3,)"),
    ("pruning curve on no examples", lambda d: kht.experiments.pruning_curve(
     tiny_mlp(), tiny_data()[0][:0], tiny_data()[1][:0]), ValueError, "Received: 0 inputs and 0 labels"),
    ("sampler seed a float tensor", lambda d: kht.optimizers.symmetric_stable((3,), 1.5,
     seed=keras.ops.convert_to_tensor([1.9, 2.9])), ValueError,
     "must hold integers. Received: dtype=float32"),
    ("pruning curve on fractional labels", lambda d: kht.experiments.pruning_curve(
     tiny_mlp(), tiny_data()[0], tiny_data()[1] + 0.7), ValueError, "integer class ids"),
    ("pruning curve on label -1", lambda d: kht.experiments.pruning_curve(
     tiny_mlp(), tiny_data()[0], tiny_data()[1] * 0 - 1), ValueError,
     "labels must be in [0, 3)"),
    ("iso-accuracy on NaN inputs", lambda d: kht.experiments.iso_accuracy_ratio(
     tiny_mlp(), tiny_data()[0] * np.nan, tiny_data()[1], 0.5), ValueError, "NaN or inf"),
    ("pruning curve from_logits a string", lambda d: kht.experiments.pruning_curve(
     tiny_mlp(), *tiny_data(), from_logits="no"), ValueError, "Received: 'no'"),
    ("evaluate_tflite from_logits 'yes'", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((2, 8, 8, 1), "float32"), [0, 1], from_logits="yes"),
     ValueError, "Received: from_logits='yes'"),
    ("compress from_logits 'no'", lambda d: kht.compress(
     digits_model(), digits_data(), digits_data(), kht.Budget(macs=0.5),
     from_logits="no"), ValueError, "Received: from_logits='no'"),
    ("prune include_output 'yes'", lambda d: kht.prune(digits_model(), 0.5,
     include_output="yes"), ValueError, "Received: include_output='yes'"),
    ("export sparse 'no'", lambda d: kht.export_tflite(digits_model(), d / "s.tflite",
     sparse="no"), ValueError, "Received: sparse='no'"),
    ("export per_channel nan", lambda d: kht.export_tflite(digits_model(),
     d / "s.tflite", per_channel=NAN), ValueError, "Received: per_channel=nan"),
    ("weight decay nan", lambda d: kht.HeavyTailSGD(weight_decay=NAN), ValueError,
     "Received: weight_decay=nan"),
    ("weight decay -1", lambda d: kht.HeavyTailSGD(weight_decay=-1), ValueError,
     "Received: weight_decay=-1"),
    ("weight decay a string", lambda d: kht.HeavyTailSGD(weight_decay="0.5"), ValueError,
     "Received: weight_decay='0.5'"),
    ("clipnorm -1", lambda d: kht.HeavyTailSGD(clipnorm=-1.0), ValueError,
     "Received: clipnorm=-1.0"),
    ("clipvalue nan", lambda d: kht.HeavyTailSGD(clipvalue=NAN), ValueError,
     "Received: clipvalue=nan"),
    ("nesterov a string", lambda d: kht.HeavyTailSGD(nesterov="0.5"), ValueError,
     "Received: nesterov='0.5'"),
    ("momentum a string", lambda d: kht.HeavyTailSGD(momentum="0.9"), ValueError,
     "Received: momentum='0.9'"),
    ("sampler scale nan", lambda d: kht.optimizers.symmetric_stable((3,), 1.5, NAN,
     seed=1), ValueError, "Received: scale=nan"),
    ("sampler scale inf", lambda d: kht.optimizers.symmetric_stable((3,), 1.5, math.inf,
     seed=1), ValueError, "Received: scale=inf"),
    ("sampler scale -1", lambda d: kht.optimizers.symmetric_stable((3,), 1.5, -1.0,
     seed=1), ValueError, "Received: scale=-1.0"),
    ("sampler scale True", lambda d: kht.optimizers.symmetric_stable((3,), 1.5, True,
     seed=1), ValueError, "Received: scale=True"),
    ("best_k_error p nan", lambda d: compressibility.best_k_error(np.arange(5.0), 0.5,
     p=NAN), ValueError, "Received: p=nan"),
    ("best_k_error p True", lambda d: compressibility.best_k_error(np.arange(5.0), 0.5,
     p=True), ValueError, "Received: p=True"),
    ("load_dataset seed nan", lambda d: datasets.load_dataset(seed=NAN), ValueError,
     "Received: seed=nan"),
    ("load_dataset seed -1", lambda d: datasets.load_dataset(seed=-1), ValueError,
     "Received: seed=-1"),
    ("load_dataset digits from a folder", lambda d: datasets.load_dataset(
     "digits", data_dir=d), ValueError, "`data_dir` is for mnist"),
    ("sampler shape None", lambda d: kht.optimizers.symmetric_stable(None, 1.5, seed=1),
     ValueError, "Received: shape=None"),
    ("sampler negative shape", lambda d: kht.optimizers.stable_noise((4, -1), 1.5, seed=1),
     ValueError, "Received: shape=(4, -1)"),
    ("sampler int dtype", lambda d: kht.optimizers.symmetric_stable((3,), 1.5, seed=1,
     dtype="int32"), ValueError, "Received: dtype='int32'"),
    ("exclude a string", lambda d: kht.HeavyTailSGD().exclude_from_noise(var_list=["x"]),
     ValueError, "use `var_names` for names"),
    ("training that diverges", lambda d: diverging_train(), RuntimeError,
     DIVERGED),
    ("a NaN model after training", lambda d: experiments.check_finite(
     nan_model(), "run", 7), RuntimeError, "is not finite after step 7"),
    ("a blown-up model after training", lambda d: experiments.check_finite(
     nan_model(1e30), "run", 7), RuntimeError, "holds values beyond 1e+15 after step 7"),
    ("tail_index of zeros", lambda d: kht.tail_index(np.zeros(100)), ValueError,
     "A constant sample has no tail index"),
    ("tail_index of ones", lambda d: kht.tail_index(np.ones(100)), ValueError,
     "all equal to 1.0"),
    ("neuron_prune_ratio of a (3, 0) kernel",
     lambda d: compressibility.neuron_prune_ratio(np.zeros((3, 0))), ValueError,
     "must have at least one unit. Received: shape=(3, 0)"),
    ("load_dataset limit 0", lambda d: datasets.load_dataset(limit=0), ValueError,
     "Received: limit=0"),
    ("load_dataset limit -5", lambda d: datasets.load_dataset(limit=-5), ValueError,
     "Received: limit=-5"),
    ("truncated .gz", lambda d: datasets.read_idx(d / "mnist" / IDX_NAMES[0]),
     ValueError, "is truncated or corrupt"),
    ("evaluate_tflite with y longer than x", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((5, 8, 8, 1), "float32"), np.zeros(7)),
     ValueError, "Received: 5 and 7"),
    ("evaluate_tflite with empty x", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((0, 8, 8, 1), "float32"), np.zeros(0)),
     ValueError, "Received: 0 and 0"),
    ("benchmark_tflite runs=0", lambda d: kht.benchmark_tflite(
     d / "good.tflite", runs=0), ValueError, "Received: runs=0"),
    ("int8 calibration on NaN", lambda d: kht.export_tflite(
     digits_model(), d / "q.tflite", quantize="int8",
     representative_data=np.full((8, 8, 8, 1), np.nan, "float32")),
     ValueError, "512 not finite"),
    ("export a NaN model", lambda d: kht.export_tflite(nan_model(), d / "n.tflite"),
     ValueError, "NaN or inf weights"),
    ("save a model onto a folder", lambda d: files.save_model(tiny_mlp(), d / "folder"),
     IsADirectoryError, "is a directory"),
    ("run log of another job", lambda d: run_log(
     d / "other.jsonl", {"job": 2}, [{"header": {"job": 1}}, {"seed": 0}]),
     files.RunLogError, "holds runs of a different job (differs in: job)"),
    ("run log that is not one", lambda d: run_log(d / "notlog.jsonl", {"job": 1},
     ["just text"]), files.RunLogError, "is not a keras-heavytail run log"),
    ("run log held by a live process", lambda d: locked_run_log(d / "held.jsonl"),
     files.RunLogError, "is being written by another job"),
    ("prune a model with an inf weight", lambda d: kht.prune(inf_model(), 0.5,
     structure="entry"), ValueError, "Layer 'hidden' has NaN or inf weights"),
    ("gradual pruning of a subclassed model never called",
     lambda d: kht.pruning.one_shot.prunable_layers(_Subclassed()),
     ValueError, "call it on a batch, `model(x[:1])`, first"),
    ("shrink a subclassed model", lambda d: kht.shrink(subclassed_model()), ValueError,
     "is a subclassed model"),
    ("export a float16 model", lambda d: kht.export_tflite(keras.Sequential(
     [keras.Input((4,)), keras.layers.Dense(3, dtype="float16")]), d / "q.tflite"),
     ValueError, "Rebuild it in float32"),
    ("int8 calibration on inputs of another shape", lambda d: kht.export_tflite(
     digits_model(), d / "q.tflite", quantize="int8",
     representative_data=np.ones((4, 30))), ValueError, "Received: shape (4, 30)"),
    ("int8 calibration on one unbatched input", lambda d: kht.export_tflite(
     digits_model(), d / "q.tflite", quantize="int8",
     representative_data=np.ones((8, 8, 1))), ValueError, "shape (n, 8, 8, 1)"),
    ("int8 calibration on strings", lambda d: kht.export_tflite(
     digits_model(), d / "q.tflite", quantize="int8",
     representative_data=np.full((4, 8, 8, 1), "a")), ValueError,
     "`representative_data` must be an array of model inputs"),
    ("int8 calibration on a generator", lambda d: kht.export_tflite(
     digits_model(), d / "q.tflite", quantize="int8",
     representative_data=(x for x in np.zeros((4, 8, 8, 1)))), ValueError,
     "a dataset, a generator or text. Received: generator"),
    ("int8 calibration on ragged lists", lambda d: kht.export_tflite(
     digits_model(), d / "q.tflite", quantize="int8",
     representative_data=[[1, 2, 3, 4], [1, 2]]), ValueError, "that numpy cannot stack"),
    ("int8 calibration on a number", lambda d: kht.export_tflite(
     digits_model(), d / "q.tflite", quantize="int8", representative_data=np.float32(2)),
     ValueError, "not a number, a dataset"),
    ("load_dataset from an empty path", lambda d: datasets.load_dataset("mnist",
     data_dir=""), ValueError, "`data_dir` must name a folder. Received: data_dir=''"),
    ("HeavyTailNoise around a noisy optimizer", lambda d: kht.HeavyTailNoise(
     kht.HeavyTailNoise(keras.optimizers.SGD(0.1))), ValueError,
     "cannot wrap an optimizer that adds noise itself"),
    ("criterion paper on a depthwise convolution", lambda d: kht.prune(
     depthwise_model(), structure="neuron", criterion="paper"), ValueError,
     "Pass exclude=['dw']"),
    ("prune a model with a NaN BatchNormalization scale", lambda d: kht.prune(
     depthwise_model(nan_gamma=True), 0.5, structure="neuron", score="bn_scale"),
     ValueError, "Layer 'bn' has NaN or inf weights"),
    ("export a mixed-precision model", lambda d: kht.export_tflite(keras.Sequential(
     [keras.Input((4,)), keras.layers.Dense(3, dtype="mixed_float16")]), d / "q.tflite"),
     ValueError, "Rebuild it in float32"),
    ("prune with a ratio and the paper's criterion", lambda d: kht.prune(
     digits_model(), 0.5, criterion="paper"), ValueError, "not both"),
    ("export a model with a float16 input", lambda d: kht.export_tflite(keras.Sequential(
     [keras.Input((4,), dtype="float16"), keras.layers.Dense(3)]), d / "q.tflite"),
     ValueError, "Rebuild it in float32"),
    ("a decay of power 0 never prunes", lambda d: kht.pruning.sparsity.PolynomialDecay(
     0.0, 0.8, 0, 100, power=0), ValueError, "Received: power=0"),
    ("a decay of negative power", lambda d: kht.pruning.sparsity.PolynomialDecay(
     0.0, 0.8, 0, 100, power=-1.0), ValueError, "Received: power=-1.0"),
    ("evaluate_tflite with a label -1", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((3, 8, 8, 1), "float32"), [0, -1, 2]),
     ValueError, "Received: a label -1"),
    ("evaluate_tflite with a label beyond int64", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((3, 8, 8, 1), "float32"), [1, 2, 1e20]),
     ValueError, "Received: a label 1e+20"),
    ("a bytes budget below any LiteRT file", lambda d: kht.compress(
     digits_model(), digits_data(), digits_data(), kht.Budget(bytes=10)), ValueError,
     "that steers the budget's {'bytes': 10"),
    ("evaluate_tflite with fractional labels", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((2, 8, 8, 1), "float32"), [0.7, 1.0]),
     ValueError, "not fractions"),
    ("evaluate_tflite with label 10 of 10 classes", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((2, 8, 8, 1), "float32"), [0, 10]),
     ValueError, "in [0, 10) for a model with 10 outputs. Received: labels from 0 to 10"),
    ("evaluate_tflite on NaN inputs", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.full((2, 8, 8, 1), np.nan, "float32"), [0, 1]),
     ValueError, "`x` holds NaN or inf in 128 values"),
    ("evaluate_tflite batch_size 0", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((2, 8, 8, 1), "float32"), [0, 1], batch_size=0),
     ValueError, "Received: batch_size=0"),
    ("evaluate_tflite batch_size None", lambda d: kht.evaluate_tflite(
     d / "good.tflite", np.zeros((2, 8, 8, 1), "float32"), [0, 1], batch_size=None),
     ValueError, "Received: batch_size=None"),
    ("from_logits=True on probabilities", lambda d: kht.metrics.loss_and_accuracy(
     np.array([[0.2, 0.8], [0.5, 0.5]]), [1, 0], from_logits=True), ValueError,
     "pass `from_logits=False`"),
    ("HeavyTailNoise around a LossScaleOptimizer", lambda d: kht.HeavyTailNoise(
     keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())), ValueError,
     "Wrap the other way"),
]  # fmt: skip


def test_int8_calibration_on_constant_inputs_warns(tmp_path):
    with pytest.warns(UserWarning, match="inputs that are all the same value"):
        kht.export_tflite(digits_model(), tmp_path / "q.tflite", quantize="int8",
                          representative_data=np.zeros((16, 8, 8, 1), "float32"))  # fmt: skip


def test_a_schedule_that_begins_after_training_says_nothing_was_pruned():
    x, y = tiny_data()
    model = tiny_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    schedule = kht.pruning.sparsity.ConstantSparsity(0.5, begin_step=1000)
    callback = kht.pruning.sparsity.GradualPruning(schedule)
    with pytest.warns(UserWarning, match="before the schedule's begin_step=1000, so nothing"):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    assert all(np.all(w != 0) for w in model.get_weights() if w.ndim == 2)


@pytest.mark.parametrize(
    "call,error,message",
    [row[1:] for row in API_ROWS],
    ids=[row[0] for row in API_ROWS],
)
def test_api_refuses_and_says_why(call, error, message, place):
    logs = sorted(place.glob("*.jsonl"))
    before = snapshot(logs)
    with pytest.raises(error) as info:
        call(place)
    assert message in str(info.value), str(info.value)
    assert snapshot(logs) == before  # a refused run log is left as it was
    for name in ("q.tflite", "n.tflite"):
        assert not (place / name).exists()


# ----------------------------------------------------------------------------
# What must simply work.
# ----------------------------------------------------------------------------


def corner_draw(alpha, structure, dtype):
    """The CMS transform at its largest: U next to pi/2, W from the top uniform."""
    from keras import ops

    f = np.dtype(dtype).type
    w = -np.log(np.nextafter(f(1), f(0)))
    if structure != "elliptical":
        u = np.nextafter(f(math.pi / 2), f(0))
        x = noise_lib.cms_symmetric(
            ops, ops.convert_to_tensor([u], dtype), ops.convert_to_tensor([w], dtype),
            alpha,
        )  # fmt: skip
    else:  # the mixing variable, at both ends of (0, pi)
        u = np.array([math.pi * 2.0**-24, np.nextafter(f(math.pi), f(0))], dtype)
        x = ops.sqrt(2.0 * noise_lib.cms_positive(
            ops, ops.convert_to_tensor(u), ops.convert_to_tensor([w, w], dtype),
            alpha / 2,
        ))  # fmt: skip
    return np.asarray(x)


def test_numpy_scalars_are_numbers_like_python_ones():
    opt = kht.HeavyTailSGD(
        np.float32(0.1), alpha=np.float64(1.5), sigma=np.float32(0.25),
        seed=np.int64(3), max_noise=np.float32(10),
    )  # fmt: skip
    same = kht.HeavyTailSGD(0.1, alpha=1.5, sigma=0.25, seed=3, max_noise=10.0)
    assert opt.get_config() == same.get_config()
    x = kht.optimizers.symmetric_stable(np.int64(5), np.float32(1.5), seed=np.int64(2))
    np.testing.assert_array_equal(x, kht.optimizers.symmetric_stable((5,), 1.5, seed=2))


def test_fit_that_diverges_says_so_and_a_healthy_one_does_not():
    # model.fit users (outside the harness) hear of NaN weights at the end.
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = np.arange(64) % 3

    def fit(optimizer):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="hidden"),
                                  keras.layers.Dense(3, name="out")])  # fmt: skip
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)

    # A sigma that overflows float32 with the draw, and a schedule that
    # starts at 0.01 and is inf from step 2 (the build-time check sees 0.01).
    explode = keras.optimizers.schedules.ExponentialDecay(0.01, 1, 1e30)
    for optimizer in (kht.HeavyTailSGD(0.1, sigma=3e38, sigma_scale="absolute", alpha=1.0,
                                       noise="entry", seed=0),
                      kht.HeavyTailNoise(keras.optimizers.Adam(), sigma=explode, seed=0)):
        with pytest.warns(kht.optimizers.DivergenceWarning, match="is not finite after step 8"):
            fit(optimizer)
    # sigma 1e30 leaves weights finite, at 1e30: diverged all the same.
    huge = kht.HeavyTailSGD(0.1, sigma=1e30, sigma_scale="absolute", seed=0)
    with pytest.warns(kht.optimizers.DivergenceWarning, match="holds values beyond 1e"):
        fit(huge)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kht.optimizers.DivergenceWarning)
        fit(kht.HeavyTailSGD(0.1, seed=0))


@pytest.mark.parametrize("make", [
    lambda: kht.HeavyTailSGD(0.1, seed=0),
    lambda: kht.HeavyTailNoise(keras.optimizers.Adam(), seed=0, noise="entry"),
], ids=["HeavyTailSGD", "HeavyTailNoise(entry)"])  # fmt: skip
def test_fit_names_a_moving_statistic_that_went_non_finite(make):
    # The optimizer never updates BatchNormalization's moving variance, but
    # fit hands it the model: its non-trainable float weights are checked too.
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(2, name="out")])  # fmt: skip
    model.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
    poison = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: (
        model.get_layer("bn").moving_variance.assign(np.full(4, np.inf, "float32"))))
    with pytest.warns(kht.optimizers.DivergenceWarning, match="/bn/moving_variance' is not finite"):
        model.fit(x, np.arange(32) % 2, epochs=1, batch_size=16, verbose=0, callbacks=[poison])
    with warnings.catch_warnings():  # healthy statistics (and Dropout's seed state): quiet
        warnings.simplefilter("error", kht.optimizers.DivergenceWarning)
        model.get_layer("bn").moving_variance.assign(np.ones(4, "float32"))
        model.fit(x, np.arange(32) % 2, epochs=1, batch_size=16, verbose=0)


def test_exclusions_take_one_pattern_or_a_layer():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden1"),
                              keras.layers.Dense(2, name="logits")])  # fmt: skip
    opt = kht.HeavyTailSGD()
    opt.exclude_from_noise(var_names="logits")  # one pattern, not six letters
    opt.exclude_from_noise(var_list=[model.get_layer("hidden1")])
    assert [opt.gets_noise(v) for v in model.weights if len(v.shape) == 2] == [False, False]
    assert opt.noise_exclusions[0] == "logits"


@pytest.mark.parametrize("dtype,structure", sorted(noise_lib.MIN_ALPHA))
def test_min_alpha_is_where_the_sampler_stops_being_finite(dtype, structure):
    bound = noise_lib.min_alpha(structure, dtype)
    assert np.isfinite(corner_draw(bound, structure, dtype)).all()
    assert not np.isfinite(corner_draw(bound - 0.02, structure, dtype)).all()


def test_below_the_range_real_draws_are_inf_and_at_it_training_runs():
    # Why the bound exists: alpha 0.1 in float32 draws inf (about 1 in 6,000).
    x = np.asarray(kht.optimizers.symmetric_stable((100_000,), 0.1, seed=0, dtype="float32"))
    assert not np.isfinite(x).all()
    fit_one_step(noise_lib.min_alpha("neuron", "float32"))  # the bound is allowed
    # Half precision is drawn in float32 and clipped to its range: finite.
    x = kht.optimizers.symmetric_stable((100_000,), 1.1, scale=1e3, seed=0, dtype="float16")
    assert np.isfinite(np.asarray(x, "float32")).all()


def test_max_noise_clips_the_standardised_draw_and_round_trips(tmp_path):
    kwargs = dict(alpha=1.2, sigma=0.5, noise="entry", seed=3)
    clipped = kht.HeavyTailSGD(0.1, max_noise=2.0, **kwargs)
    free = kht.HeavyTailSGD(0.1, **kwargs)
    variable = keras.Variable(np.zeros((200, 50), "float32"))
    factor = 0.5 / np.sqrt(200) * 0.1 ** (1 / 1.2)  # sigma_scale="fan_in"
    xi_free = np.asarray(free.noise_increment(variable, 0, 0.1, 0.5, 0)) / factor
    xi = np.asarray(clipped.noise_increment(variable, 0, 0.1, 0.5, 0)) / factor
    assert np.abs(xi_free).max() > 2.0  # the unclipped draw goes past the clip
    np.testing.assert_allclose(xi, np.clip(xi_free, -2.0, 2.0), rtol=1e-5, atol=1e-6)
    assert clipped.get_config()["max_noise"] == 2.0
    assert free.get_config()["max_noise"] is None
    assert_round_trips(clipped, tmp_path)
    assert_round_trips(kht.HeavyTailNoise(keras.optimizers.Adam(), max_noise=5.0))


def test_exclusions_and_max_noise_survive_a_reload(tmp_path):
    model = tiny_mlp()
    opt = kht.HeavyTailSGD(0.05, sigma=0.1, max_noise=4.0, seed=1)
    opt.exclude_from_noise(kht.paper_exclusions(model))
    model.compile(optimizer=opt, loss="mse")
    x, y = tiny_data()
    model.fit(x, keras.ops.one_hot(y, 3), epochs=1, verbose=0)
    files.save_model(model, tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras").optimizer
    assert again.noise_exclusions == opt.noise_exclusions
    assert "(^|/)out/kernel$" in again.noise_exclusions
    assert again.max_noise == 4.0


def test_prune_names_the_layers_it_leaves_dense():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(x)
    x = keras.layers.Flatten()(keras.layers.GRU(4, name="gru")(keras.layers.Reshape((16, 8))(x)))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    with pytest.warns(UserWarning, match="leaves 'sep' .SeparableConv2D., 'gru' .GRU. dense"):
        pruned = kht.prune(model, 0.9, structure="entry")
    assert np.mean(pruned.get_layer("conv").kernel.numpy() == 0) > 0.85
    kht.prune(model, 0.9, structure="entry", exclude=["sep", "gru"])  # no warning


def test_channel_pruning_names_recurrent_and_nested_layers_it_leaves_dense():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((4, 3)), keras.layers.GRU(6, name="gru")],
                             name="inner")  # fmt: skip
    inputs = keras.Input((4, 3))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    with pytest.warns(UserWarning, match="leaves 'gru' .GRU, inside 'inner'. dense"):
        pruned = kht.prune(model, 0.5, structure="neuron")
    assert np.all(np.any(pruned.get_layer("inner").get_layer("gru").cell.kernel.numpy(), 0))
    assert np.sum(~np.any(pruned.get_layer("hidden").kernel.numpy(), 0)) == 4
    # A nested model's name in `exclude` stands for its layers: no warning.
    again = kht.prune(model, 0.5, structure="neuron", exclude="inner")
    np.testing.assert_array_equal(again.get_layer("hidden").kernel.numpy(),
                                  pruned.get_layer("hidden").kernel.numpy())  # fmt: skip
    kht.prune(model, 0.5, structure="entry", exclude=["inner"])


def test_the_paper_criterion_prunes_inside_a_nested_model():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="in1")],
                             name="inner")  # fmt: skip
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(inner(inputs)))
    pruned = kht.prune(model, criterion="paper", max_rel_sq_error=0.3)
    kernel = pruned.get_layer("inner").get_layer("in1").kernel.numpy()
    dropped = np.all(kernel == 0, axis=0)  # whole units, as in a flat model
    assert 0 < dropped.sum() < 16 and np.all(kernel[:, ~dropped] != 0)


def test_exclude_takes_one_name_as_a_name():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="hidden1"),
                              keras.layers.Dense(6, name="h"), keras.layers.Dense(2)])  # fmt: skip
    pruned = kht.prune(model, 0.9, structure="entry", exclude="hidden1")  # not h, i, d...
    np.testing.assert_array_equal(pruned.get_layer("hidden1").kernel.numpy(),
                                  model.get_layer("hidden1").kernel.numpy())  # fmt: skip
    assert np.mean(pruned.get_layer("h").kernel.numpy() == 0) > 0.8


def test_numpy_and_fraction_clipping_and_decay_train():
    # Keras' SGD takes them, then fails in the graph (float64 + float32).
    import fractions

    x, y = tiny_data()
    for kwargs in ({"global_clipnorm": np.float64(1.0)}, {"clipvalue": np.float64(0.5)},
                   {"weight_decay": fractions.Fraction(1, 100)}):  # fmt: skip
        model = tiny_mlp()
        model.compile(optimizer=kht.HeavyTailSGD(0.05, seed=0, **kwargs),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        before = model.get_weights()[0].copy()
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert not np.array_equal(model.get_weights()[0], before), kwargs


def zip_file(path):
    """An empty zip archive at `path`: a .keras file as far as the CLI's
    checks before Keras is imported can tell."""
    import zipfile

    zipfile.ZipFile(path, "w").close()
    return str(path)


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys, tmp_path):
    def interrupted():  # a Ctrl-C while TensorFlow and Keras are imported
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.cli_io, "tensorflow_first", interrupted)
    code, err = run_cli(["analyze", zip_file(tmp_path / "m.keras")], capsys)
    assert code == 130 and err == "keras-heavytail: interrupted\n", err


def test_out_of_memory_is_one_line(monkeypatch, capsys, tmp_path):
    class ResourceExhaustedError(Exception):  # TensorFlow's, by name
        pass

    def allocate(args):  # what --width 100000000 ran into
        raise ResourceExhaustedError("OOM when allocating tensor with shape[64,100000000]")

    monkeypatch.setattr(cli, "cmd_analyze", allocate)
    code, err = run_cli(["analyze", zip_file(tmp_path / "m.keras")], capsys)
    assert code == 2 and err.count("\n") == 1 and "out of memory" in err, err


def test_a_held_lock_refuses_whatever_its_file_says(tmp_path):
    # Two jobs that found a dead job's lock at once both took it when the
    # lock was a process id read from the file: the holder's now says dead.
    path = tmp_path / "m.keras"
    with files.Lock(path):
        Path(f"{path}.lock").write_text("999999999")
        with pytest.raises(files.RunLogError, match="being written by another job"):
            files.Lock(path).__enter__()
    assert not Path(f"{path}.lock").exists()
    with files.Lock(path):  # released: free again
        pass


def test_run_log_resumes_drops_a_cut_line_and_ignores_a_dead_lock(tmp_path):
    path = tmp_path / "runs.jsonl"
    with files.RunLog(path, {"job": 1}) as log:
        log.append({"seed": 0, "accuracy": 0.9})
    with open(path, "a") as f:
        f.write('{"seed": 1, "accur')  # a run cut by a crash
    Path(f"{path}.lock").write_text("999999999")  # its process is gone
    with files.RunLog(path, {"job": 1}) as log:
        assert log.find(seed=0) == {"seed": 0, "accuracy": 0.9}
        assert log.find(seed=1) is None  # reruns
        log.append({"seed": 1, "accuracy": 0.8})
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines[1:]] == [
        {"seed": 0, "accuracy": 0.9}, {"seed": 1, "accuracy": 0.8},
    ]  # fmt: skip
    assert not Path(f"{path}.lock").exists()


def test_analyze_a_90_percent_pruned_model_skips_the_estimate(place, capsys):
    assert cli.main(["analyze", str(place / "pruned.keras"), "--json"]) == 0
    rows = {row["layer"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["hidden1"]["tail_index"] is None  # 90% zeros: no estimate, JSON null
    assert 0 < rows["logits"]["tail_index"] <= 2  # the unpruned output layer has one
    assert rows["hidden1"]["best_k_error@0.1"] == 0.0  # what is left is exact


# ----------------------------------------------------------------------------
# Real SIGKILLs.
# ----------------------------------------------------------------------------

KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys, zipfile
    import keras
    from keras_heavytail import files
    path, how = sys.argv[1], sys.argv[2]
    bigger = keras.Sequential([keras.Input((50,)), keras.layers.Dense(400),
                               keras.layers.Dense(10)])
    writestr = zipfile.ZipFile.writestr
    def killed(self, *args, **kwargs):  # the first entry is written, then SIGKILL
        writestr(self, *args, **kwargs)
        self.fp.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    zipfile.ZipFile.writestr = killed
    if how == "atomic":
        files.save_model(bigger, path)
    else:
        bigger.save(path)  # Keras writes in place
    """
)


def test_sigkill_during_save_leaves_the_previous_model(tmp_path):
    model = tiny_mlp()
    for how in ("plain", "atomic"):
        path = tmp_path / f"{how}.keras"
        files.save_model(model, path)
        good = path.read_bytes()
        result = run_python(KILL_DURING_SAVE, args=[str(path), how], timeout=HANG_GUARD_S,
                            check=False, warm=True)  # fmt: skip
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        if how == "plain":  # the kill lands mid-save: an in-place save is lost
            assert path.read_bytes() != good
            assert not zipfile.is_zipfile(path)
        else:  # the atomic save leaves the old file whole and loadable
            assert path.read_bytes() == good
            reloaded = keras.saving.load_model(path)
            for a, b in zip(reloaded.get_weights(), model.get_weights()):
                np.testing.assert_array_equal(a, b)


KILL_MID_EPOCH = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from keras_heavytail.experiments import cli
    from keras_heavytail.experiments import runner as experiments
    argv, kill_at = sys.argv[1:-1], int(sys.argv[-1])
    if kill_at:
        check = experiments.StopOnDivergence.on_train_batch_end
        def killing(self, batch, logs=None):
            check(self, batch, logs)
            if int(self.model.optimizer.iterations) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        experiments.StopOnDivergence.on_train_batch_end = killing
    sys.exit(cli.main(argv))
    """
)


def test_sigkill_mid_epoch_then_rerun_resumes_bit_identical(tmp_path, capsys):
    # 240 fit examples / batch 32 = 8 steps per epoch: step 12 is mid epoch 2.
    common = ["train", "--width", "16", "--epochs", "4", "--limit", "300",
              "--batch-size", "32", "--noise", "entry", "--sigma", "0.05"]  # fmt: skip
    resumed, straight = tmp_path / "resumed.keras", tmp_path / "straight.keras"
    argv = common + ["--output", str(resumed)]
    killed = run_python(
        KILL_MID_EPOCH, args=[*argv, "12"], timeout=HANG_GUARD_S, check=False, warm=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not resumed.exists()
    (backup,) = tmp_path.glob(".resumed.keras.backup-*")  # epoch 1 kept
    # A kill while epoch 2's weights were written would leave them cut; the
    # state still names epoch 1's whole file.
    (backup / "epoch-2.weights.h5").write_bytes((backup / "epoch-1.weights.h5").read_bytes()[:500])
    assert (tmp_path / "resumed.keras.lock").exists()  # the killed job's, now stale
    assert cli.main(argv) == 0  # the rerun, in this process: all it reads is on disk
    assert not (tmp_path / "resumed.keras.lock").exists()
    again = capsys.readouterr().out
    assert "Resumed at epoch 2" in again  # epochs 2 to 4 ran, not 1 to 4
    assert "4 epochs (32 steps)" in again
    assert cli.main([*common, "--output", str(straight)]) == 0  # uninterrupted
    assert not list(tmp_path.glob(".*.backup-*"))  # both backups deleted at the end
    a = keras.saving.load_model(resumed)
    b = keras.saving.load_model(straight)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert int(a.optimizer.iterations) == int(b.optimizer.iterations) == 32


def test_written_files_get_the_permissions_the_umask_gives(tmp_path):
    old = os.umask(0o022)
    try:
        path = files.write_text(tmp_path / "card.json", "{}")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_an_unreadable_backup_is_removed_and_the_run_starts_over(tmp_path):
    data = datasets.load_dataset("digits", limit=120)
    protocol = kht.experiments.Protocol(width=8, epochs=2, batch_size=32)
    setting = kht.experiments.Setting("HT", "entry", 1.5, 0.05)
    straight, *_ = experiments.train_one(data, setting, protocol, 0)
    # A state cut short; a state naming weights cut short (edited by hand,
    # or a disk that lost them).
    for state, weights in (('{"epoch": 1, "weights": "epoch-1.weigh', None),
                           ('{"epoch": 1, "weights": "epoch-1.weights.h5"}', b"\x89HDF\r\n"),
                           ('{"epoch": 50, "weights": "epoch-1.weights.h5"}', None)):  # fmt: skip
        backup = tmp_path / "backup"
        backup.mkdir()
        (backup / "state.json").write_text(state)
        if weights is not None:
            (backup / "epoch-1.weights.h5").write_bytes(weights)
        with pytest.warns(UserWarning, match="cannot be read .* starts from the first epoch"):
            model, _, epochs, _ = experiments.train_one(data, setting, protocol, 0,
                                                        backup_dir=backup)  # fmt: skip
        # Kept for the caller to delete once the model is saved: epoch 2 now.
        assert epochs == 2 and json.loads((backup / "state.json").read_text())["epoch"] == 2
        shutil.rmtree(backup)
        for a, b in zip(model.get_weights(), straight.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_numpy_integers_are_counts(place):
    timing = kht.benchmark_tflite(place / "good.tflite", runs=np.int64(3), warmup=np.int32(0))
    assert timing["runs"] == 3


def test_a_lock_in_a_folder_it_cannot_write_says_so(tmp_path, monkeypatch):
    # Root writes anywhere, so the refusal is simulated where the lock opens.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(files.RunLogError, match=r"\(Permission denied\): make it and its folder writable"):
        with files.Lock(tmp_path / "m.keras"):
            pass


def test_a_lock_that_is_a_fifo_or_a_users_file_is_left_alone(tmp_path):
    os.mkfifo(tmp_path / "pipe.keras.lock")
    with pytest.raises(files.RunLogError, match="is not a regular file"):
        with files.Lock(tmp_path / "pipe.keras"):
            pass
    (tmp_path / "notes.keras.lock").write_text("my notes")
    with pytest.raises(files.RunLogError, match="a file of yours"):
        with files.Lock(tmp_path / "notes.keras"):
            pass
    assert (tmp_path / "notes.keras.lock").read_text() == "my notes"
    digits = "1" * 64 + " and my notes"  # digits first, but no process id is that long
    (tmp_path / "long.keras.lock").write_text(digits)
    with pytest.raises(files.RunLogError, match="a file of yours"):
        with files.Lock(tmp_path / "long.keras"):
            pass
    assert (tmp_path / "long.keras.lock").read_text() == digits
    # A dead job's lock (its pid inside) is taken over and holds our pid.
    (tmp_path / "old.keras.lock").write_text("99999999")
    with files.Lock(tmp_path / "old.keras"):
        assert (tmp_path / "old.keras.lock").read_text() == str(os.getpid())
    assert not (tmp_path / "old.keras.lock").exists()


def test_an_unknown_backend_is_one_line(tmp_path):
    zip_file(tmp_path / "m.keras")
    result = run_python(args=["-m", "keras_heavytail", "analyze", str(tmp_path / "m.keras")],
                        env={"KERAS_BACKEND": "nonsense"}, check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "keras-heavytail analyze: error: cannot import Keras (Unable to import backend : nonsense)"
    ]
