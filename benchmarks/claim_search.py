"""Search for a setting where heavy-tailed SGD pays at iso-accuracy.

For every trained model it measures the fewest hidden neurons whose one-shot
neuron-pruned network stays within `tol` accuracy points of the noise-free SGD
network (same protocol, same seed), with the pruning level chosen by bisection
on a validation split carved from the training data and reported on test;
(a) without fine-tuning, (b) with one epoch of masked fine-tuning (plain SGD,
same lr and batch) at every bisection candidate.

An independent implementation, written while the package was being
reorganised: it carries its own copy of the update rule (the
Chambers-Mallows-Stuck sampler and the three noise structures) and runs
training, pruning, evaluation and the masked fine-tuning in numpy/TensorFlow
without the package. It is kept as a cross-check: `keras-heavytail sweep`
measures the same thing with the package's code (`benchmarks/RESULTS.md` §6
compares the two).

    python benchmarks/claim_search.py --bed digits --width 2000 --seeds 0 \
        --grid screen --name screen_digits_w2000

One JSON line per finished run goes to benchmarks/claim_search/<name>.jsonl.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

try:  # only for load_dataset; the optimizer below is self-contained
    import keras_heavytail as kht  # noqa: E402
except Exception as exc:  # the package is being refactored
    print(f"note: keras_heavytail not importable ({exc!r}); using own helpers", file=sys.stderr)
    kht = None

import tensorflow as tf  # noqa: E402

# ----------------------------------------------------------------------------
# HeavyTailSGD, self-contained copy of keras_heavytail's update rule (the
# package was mid-refactor and not importable while this ran):
#   theta <- theta - lr * grad            (Keras SGD, decoupled weight decay)
#   theta <- theta + sigma_t * lr**(1/alpha) * xi,   xi ~ SaS(alpha, 1)
# noise "entry": i.i.d. per weight; "neuron": one value per output unit,
# shared by its incoming weights; "elliptical": per unit a sub-Gaussian
# (rotation-invariant) stable vector with SaS(alpha, 1) marginals.
# Only kernels get noise (>= 2 axes), never the excluded output layer.
# ----------------------------------------------------------------------------

_TINY = 2.0**-24


def _sas(shape, alpha, seed):
    """Chambers-Mallows-Stuck; char. function exp(-|t|**alpha)."""
    u = tf.random.stateless_uniform(shape, seed=tf.random.experimental.stateless_fold_in(seed, 0),
                                    minval=-math.pi / 2 * (1 - 1e-6), maxval=math.pi / 2 * (1 - 1e-6))
    w = -tf.math.log(tf.random.stateless_uniform(shape, seed=tf.random.experimental.stateless_fold_in(seed, 1),
                                                 minval=_TINY, maxval=1.0))
    a = alpha
    if a == 2.0:
        return 2.0 * tf.sin(u) * tf.sqrt(w)
    if a == 1.0:
        return tf.tan(u)
    return tf.sin(a * u) * tf.exp(((1 - a) / a) * tf.math.log(tf.cos((1 - a) * u) / w) - tf.math.log(tf.cos(u)) / a)


def _pos_stable(shape, a, seed):
    """Kanter: positive a-stable, Laplace transform exp(-s**a), a in (0, 1)."""
    u = tf.random.stateless_uniform(shape, seed=tf.random.experimental.stateless_fold_in(seed, 0),
                                    minval=math.pi * 1e-6, maxval=math.pi * (1 - 1e-6))
    w = -tf.math.log(tf.random.stateless_uniform(shape, seed=tf.random.experimental.stateless_fold_in(seed, 1),
                                                 minval=_TINY, maxval=1.0))
    return tf.sin(a * u) * tf.exp(((1 - a) / a) * tf.math.log(tf.sin((1 - a) * u) / w) - tf.math.log(tf.sin(u)) / a)


def stable_noise(shape, alpha, structure, seed):
    shape = list(shape)
    if structure == "entry":
        return _sas(shape, alpha, seed)
    unit = [1] * (len(shape) - 1) + [shape[-1]]
    if structure == "neuron":
        return _sas(unit, alpha, seed)
    # elliptical: X = sqrt(A) * G, A ~ positive (alpha/2)-stable, G ~ N(0, 2)
    if alpha == 2.0:
        return math.sqrt(2.0) * tf.random.stateless_normal(shape, seed=seed)
    a = _pos_stable(unit, alpha / 2.0, tf.random.experimental.stateless_fold_in(seed, 2))
    g = tf.random.stateless_normal(shape, seed=tf.random.experimental.stateless_fold_in(seed, 3))
    return tf.sqrt(a) * math.sqrt(2.0) * g


class HeavyTailSGD(keras.optimizers.SGD):
    def __init__(self, learning_rate, alpha=1.75, sigma=0.003, noise="neuron", seed=0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.alpha, self.sigma, self.noise, self.seed = float(alpha), sigma, noise, int(seed)
        self._excluded = set()

    def exclude_from_noise(self, var_list):
        self._excluded.update(id(v) for v in var_list)
        self._excluded_paths = {getattr(v, "path", v.name) for v in var_list}

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(gradient, variable, learning_rate)
        if len(variable.shape) < 2 or getattr(variable, "path", variable.name) in getattr(self, "_excluded_paths", ()):
            return
        sigma = self.sigma(self.iterations) if callable(self.sigma) else self.sigma
        idx = self._get_variable_index(variable)
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, idx], tf.int64), tf.cast(self.iterations, tf.int64))
        factor = tf.cast(sigma, variable.dtype) * tf.pow(tf.cast(learning_rate, variable.dtype), 1.0 / self.alpha)
        variable.assign(variable + factor * stable_noise(variable.shape, self.alpha, self.noise, seed))


def output_layer_vars(model):
    """The paper's exclusion for an MLP: the output layer's variables."""
    return list(model.layers[-1].trainable_variables) + list(model.layers[-1].non_trainable_variables)


OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "claim_search")

# ----------------------------------------------------------------------------
# Test beds
# ----------------------------------------------------------------------------


def _split_val(x, y, frac=0.2, seed=1234):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_val = int(round(frac * len(y)))
    va, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[va], y[va]


TEACHER = dict(d=30, h=10, n=12000)


def load_bed(name):
    """(x_tr, y_tr, x_val, y_val, x_te, y_te, num_classes); the val split is fixed."""
    if name == "digits":
        # = kht.experiments.load_dataset("digits") (same permutation and z-score), inlined
        if True:
            from sklearn.datasets import load_digits

            d = load_digits()
            x = d.images.reshape(len(d.target), -1).astype("float32") / 16.0
            y = d.target.astype("int64")
            perm = np.random.default_rng(0).permutation(len(y))
            n_te = int(round(0.2 * len(y)))
            xte, yte, xtr, ytr = x[perm[:n_te]], y[perm[:n_te]], x[perm[n_te:]], y[perm[n_te:]]
            mu, sd = xtr.mean(), xtr.std()
            xtr, xte = (xtr - mu) / (sd + 1e-7), (xte - mu) / (sd + 1e-7)
        xtr = np.asarray(xtr, "float32").reshape(len(ytr), -1)
        xte = np.asarray(xte, "float32").reshape(len(yte), -1)
        ytr, yte = np.asarray(ytr, "int64"), np.asarray(yte, "int64")
        xtr, ytr, xva, yva = _split_val(xtr, ytr)
        return xtr, ytr, xva, yva, xte, yte, 10
    if name == "teacher":
        # Fixed random teacher: 30 -> 10 ReLU (Gaussian weights) -> 10, argmax.
        rng = np.random.default_rng(20240601)
        d, h, c = TEACHER["d"], TEACHER["h"], 10
        w1 = rng.normal(size=(d, h)) / math.sqrt(d)
        b1 = rng.normal(size=h) * 0.5
        w2 = rng.normal(size=(h, c))
        x = rng.normal(size=(TEACHER["n"], d)).astype("float32")
        t = np.maximum(x @ w1 + b1, 0) @ w2
        t -= np.median(t, axis=0)  # teacher output bias: roughly balanced classes
        y = np.argmax(t, axis=1).astype("int64")
        n_tr = TEACHER["n"] - 4000
        xtr, ytr, xte, yte = x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:]
        xtr, ytr, xva, yva = _split_val(xtr, ytr)
        return xtr, ytr, xva, yva, xte, yte, c
    raise ValueError(name)


# ----------------------------------------------------------------------------
# Settings and grids
# ----------------------------------------------------------------------------

BASE = dict(
    arch="std",  # "std": trainable Dense output; "mf": mean-field, fixed +-1/n output
    bias=True,
    lr=0.05,  # for "mf" the per-unit lr; Keras gets lr * width
    batch=64,
    epochs=20,  # max epochs
    stop_acc=None,  # stop once full-train accuracy >= this (checked every check_every steps)
    check_every=100,
    momentum=0.0,
    noise="neuron",
    alpha=1.75,
    sigma=0.0,  # for "mf" the per-unit sigma; the optimizer gets sigma * width**(-1/alpha)
    anneal=False,  # sigma decays linearly to 0 over the max number of steps
    wd=0.0,
    score="norm",
    walk=None,  # if set: sigma = walk / (lr * max_steps)**(1/alpha), same total walk on every bed
)
PROTOCOL_KEYS = ("arch", "bias", "lr", "batch", "epochs", "stop_acc", "check_every", "momentum")


def S(name, **kw):
    s = dict(BASE)
    s.update(kw)
    s["name"] = name
    return s


FB = dict(batch=100000, lr=0.5, epochs=3000, stop_acc=0.95, check_every=100)  # ~full batch
MF = dict(arch="mf", bias=False)

GRIDS = {
    "smoke": [
        S("sgd"),
        S("n175_s005", sigma=0.005),
    ],
    "screen": [
        S("sgd"),
        S("sgd_path", score="path"),
        S("n175_s005", sigma=0.005),
        S("n175_s005_path", sigma=0.005, score="path"),
        S("n175_s005_ann", sigma=0.005, anneal=True),
        S("n175_s005_wd", sigma=0.005, wd=1e-2),
        S("sgd_wd", wd=1e-2),
        S("n15_s003_ann", alpha=1.5, sigma=0.003, anneal=True),
        S("n15_s003_ann_path", alpha=1.5, sigma=0.003, anneal=True, score="path"),
        S("n13_s001_ann", alpha=1.3, sigma=0.001, anneal=True),
        S("n12_s0005_ann", alpha=1.2, sigma=0.0005, anneal=True),
        S("e15_s005_ann", noise="entry", alpha=1.5, sigma=0.005, anneal=True),
        S("el15_s01_ann", noise="elliptical", alpha=1.5, sigma=0.01, anneal=True),
        # paper's rule: stop at 95% train accuracy
        S("sgd_stop95", stop_acc=0.95, check_every=20, epochs=40),
        S("n175_s003_stop95", stop_acc=0.95, check_every=20, epochs=40, sigma=0.003),
        S("n15_s003_stop95", stop_acc=0.95, check_every=20, epochs=40, alpha=1.5, sigma=0.003),
        # paper-like: full batch, no bias, stop at 95%
        S("sgd_fb_nb", bias=False, **FB),
        S("n175_s003_fb_nb", bias=False, sigma=0.003, **FB),
        S("n15_s003_fb_nb", bias=False, alpha=1.5, sigma=0.003, **FB),
        # mean-field model
        S("mf_sgd", **MF),
        S("mf_n175_s01", sigma=0.01, **MF),
        S("mf_n15_s005", alpha=1.5, sigma=0.005, **MF),
        S("mf_n13_s002", alpha=1.3, sigma=0.002, **MF),
        S("mf_n15_s005_ann", alpha=1.5, sigma=0.005, anneal=True, **MF),
    ],
    "confirm": [
        S("sgd"),
        S("sgd_path", score="path"),
        S("w_n175_c02_ann", alpha=1.75, walk=0.02, sigma=1.0, anneal=True),
        S("w_n15_c01_ann", alpha=1.5, walk=0.01, sigma=1.0, anneal=True),
        S("w_n13_c01_ann_path", alpha=1.3, walk=0.01, sigma=1.0, anneal=True, score="path"),
    ],
    # sigma from a total walk scale c: sigma = c / (lr * max_steps)**(1/alpha)
    "screen2": [
        S("sgd"),
        S("w_n12_c002_ann", alpha=1.2, walk=0.002, sigma=1.0, anneal=True),
        S("w_n12_c005_ann", alpha=1.2, walk=0.005, sigma=1.0, anneal=True),
        S("w_n13_c01_ann", alpha=1.3, walk=0.01, sigma=1.0, anneal=True),
        S("w_n15_c01_ann", alpha=1.5, walk=0.01, sigma=1.0, anneal=True),
        S("w_n15_c02_ann", alpha=1.5, walk=0.02, sigma=1.0, anneal=True),
        S("w_n175_c02_ann", alpha=1.75, walk=0.02, sigma=1.0, anneal=True),
        S("w_el15_c02_ann", noise="elliptical", alpha=1.5, walk=0.02, sigma=1.0, anneal=True),
        S("w_n13_c01_ann_path", alpha=1.3, walk=0.01, sigma=1.0, anneal=True, score="path"),
        S("mf_sgd", **MF),
        S("mf_w_n15_c05_ann", alpha=1.5, walk=0.5, sigma=1.0, anneal=True, **MF),
        S("mf_w_n15_c2_ann", alpha=1.5, walk=2.0, sigma=1.0, anneal=True, **MF),
        S("mf_w_n13_c1_ann", alpha=1.3, walk=1.0, sigma=1.0, anneal=True, **MF),
    ],
}


def protocol_of(s):
    return {k: s[k] for k in PROTOCOL_KEYS}


def baseline_of(s):
    b = dict(s)
    b.update(sigma=0.0, wd=0.0, anneal=False, noise="neuron", alpha=1.75, score="norm")
    b["name"] = "SGD[" + ",".join(f"{k}={s[k]}" for k in PROTOCOL_KEYS if s[k] != BASE[k]) + "]"
    return b


def is_baseline(s):
    return s["sigma"] == 0.0 and s["wd"] == 0.0


# ----------------------------------------------------------------------------
# Training (Keras + keras_heavytail)
# ----------------------------------------------------------------------------


def numpy_params(model, s, width):
    hidden = model.get_layer("hidden")
    out = model.get_layer("out")
    w1 = np.asarray(hidden.kernel.numpy(), "float32")
    b1 = np.asarray(hidden.bias.numpy(), "float32") if s["bias"] else np.zeros(width, "float32")
    w2 = np.asarray(out.kernel.numpy(), "float32")
    b2 = np.asarray(out.bias.numpy(), "float32") if out.use_bias else np.zeros(w2.shape[1], "float32")
    return dict(w1=w1, b1=b1, w2=w2, b2=b2)


def forward(p, x, keep=None):
    w1, b1, w2 = p["w1"], p["b1"], p["w2"]
    if keep is not None:
        w1, b1, w2 = w1[:, keep], b1[keep], w2[keep]
    h = np.maximum(x @ w1 + b1, 0.0)
    return h @ w2 + p["b2"]


def accuracy(p, x, y, keep=None, chunk=4096):
    correct = 0
    for i in range(0, len(y), chunk):
        correct += int(np.sum(np.argmax(forward(p, x[i : i + chunk], keep), 1) == y[i : i + chunk]))
    return correct / len(y)


class _Stopper(keras.callbacks.Callback):
    def __init__(self, s, width, x, y):
        super().__init__()
        self.s, self.width, self.x, self.y = s, width, x, y
        self.steps = 0
        self.reached_at = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.s["stop_acc"] is None or self.steps % self.s["check_every"]:
            return
        acc = accuracy(numpy_params(self.model, self.s, self.width), self.x, self.y)
        if acc >= self.s["stop_acc"]:
            self.reached_at = self.steps
            self.model.stop_training = True


def train(s, bed, width, seed):
    xtr, ytr = bed[0], bed[1]
    d, c = xtr.shape[1], bed[6]
    keras.utils.set_random_seed(seed)
    if s["arch"] == "std":
        hidden = keras.layers.Dense(width, activation="relu", use_bias=s["bias"], name="hidden")
        out = keras.layers.Dense(c, name="out")
        lr = s["lr"]
        sigma = s["sigma"]
    else:  # mean-field: f(x) = (1/n) sum_i b_i relu(<theta_i, x>), b_i fixed +-1
        hidden = keras.layers.Dense(
            width,
            activation="relu",
            use_bias=s["bias"],
            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(d), seed=seed),
            name="hidden",
        )
        signs = np.random.default_rng(seed + 777).choice([-1.0, 1.0], size=(width, c))
        out = keras.layers.Dense(
            c,
            use_bias=False,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(signs / width),
            name="out",
        )
        lr = s["lr"] * width
        sigma = s["sigma"] * width ** (-1.0 / s["alpha"])
    model = keras.Sequential([keras.Input((d,)), hidden, out])
    steps_per_epoch = math.ceil(len(ytr) / min(s["batch"], len(ytr)))
    max_steps = steps_per_epoch * s["epochs"]
    if s["walk"] is not None:
        s = dict(s, sigma=s["walk"] / (s["lr"] * max_steps) ** (1.0 / s["alpha"]))
        sigma = s["sigma"] if s["arch"] == "std" else s["sigma"] * width ** (-1.0 / s["alpha"])
    wd = s["wd"] or None
    if s["sigma"] == 0.0:
        opt = keras.optimizers.SGD(lr, momentum=s["momentum"], weight_decay=wd)
    else:
        sig = sigma
        if s["anneal"]:
            sig = keras.optimizers.schedules.PolynomialDecay(sigma, max_steps, 0.0)
        opt = HeavyTailSGD(
            lr,
            momentum=s["momentum"],
            alpha=s["alpha"],
            sigma=sig,
            noise=s["noise"],
            seed=seed,
            weight_decay=wd,
        )
        opt.exclude_from_noise(output_layer_vars(model))
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    stopper = _Stopper(s, width, xtr, ytr)
    t0 = time.perf_counter()
    model.fit(
        xtr,
        ytr,
        batch_size=min(s["batch"], len(ytr)),
        epochs=s["epochs"],
        verbose=0,
        shuffle=True,
        callbacks=[stopper, keras.callbacks.TerminateOnNaN()],
    )
    train_s = time.perf_counter() - t0
    p = numpy_params(model, s, width)
    info = dict(sigma_used=s["sigma"], train_s=train_s, steps=stopper.steps, reached_stop_at=stopper.reached_at, keras_lr=lr, keras_sigma=sigma)
    keras.backend.clear_session()
    return p, info


# ----------------------------------------------------------------------------
# Pruning, masked fine-tuning, iso-accuracy bisection (numpy)
# ----------------------------------------------------------------------------


def scores(p, kind):
    norms = np.sqrt(np.sum(p["w1"].astype("float64") ** 2, axis=0))
    if kind == "norm":
        return norms
    return norms * np.sqrt(np.sum(p["w2"].astype("float64") ** 2, axis=1))


def finetune(p, keep, s, width, x, y, seed):
    """One epoch of plain SGD on the kept units (pruned units stay exactly zero)."""
    w1 = p["w1"][:, keep].copy()
    b1 = p["b1"][keep].copy()
    w2 = p["w2"][keep].copy()
    b2 = p["b2"].copy()
    mf = s["arch"] == "mf"
    lr_h = np.float32(s["lr"] * width if mf else s["lr"])
    lr_o = np.float32(s["lr"])
    batch = min(s["batch"], len(y))
    rng = np.random.default_rng(seed + 99)
    perm = rng.permutation(len(y))
    for i in range(0, len(y), batch):
        idx = perm[i : i + batch]
        xb, yb = x[idx], y[idx]
        z = xb @ w1 + b1
        h = np.maximum(z, 0.0)
        logits = h @ w2 + b2
        logits -= logits.max(1, keepdims=True)
        e = np.exp(logits)
        g = e / e.sum(1, keepdims=True)
        g[np.arange(len(yb)), yb] -= 1.0
        g /= np.float32(len(yb))
        dh = (g @ w2.T) * (z > 0)
        if not mf:
            w2 -= lr_o * (h.T @ g)
            b2 -= lr_o * g.sum(0)
        w1 -= lr_h * (xb.T @ dh)
        if s["bias"]:
            b1 -= lr_h * dh.sum(0)
    return dict(w1=w1, b1=b1, w2=w2, b2=b2)


def iso_search(p, s, width, bed, target, order, ft, seed, max_evals=14):
    """Fewest kept units k with val accuracy >= target (integer bisection)."""
    xtr, ytr, xva, yva, xte, yte = bed[:6]
    cache = {}

    def ok(k):
        if k not in cache:
            keep = np.sort(order[:k])
            if ft:
                q = finetune(p, keep, s, width, xtr, ytr, seed)
                cache[k] = (accuracy(q, xva, yva), q, None)
            else:
                cache[k] = (accuracy(p, xva, yva, keep), p, keep)
        return cache[k][0] >= target

    evals = 0
    if not ok(width):
        k = width
        reached = False
    else:
        reached = True
        lo, hi = 0, width  # ok(hi) is True; ok(lo) assumed False
        while hi - lo > 1 and evals < max_evals:
            mid = (lo + hi) // 2
            evals += 1
            if ok(mid):
                hi = mid
            else:
                lo = mid
        k = hi
    val_acc, q, keep = cache[k]
    test_acc = accuracy(q, xte, yte, keep)
    return dict(neurons=int(k), frac_pruned=1 - k / width, val_acc=val_acc, test_acc=test_acc, reached=reached)


def criteria(p):
    norms = np.sort(np.sqrt(np.sum(p["w1"].astype("float64") ** 2, axis=0)))
    sq = norms**2
    return dict(
        paper_ratio=float(np.mean(np.cumsum(sq) <= 0.1 * sq.sum())),
        l1_ratio=float(np.mean(np.cumsum(norms) <= 0.1 * norms.sum())),
        mean_norm=float(norms.mean()),
        median_norm=float(np.median(norms)),
        max_norm=float(norms.max()),
    )


def measure(p, s, width, bed, target, seed, ref_target=None):
    xtr, ytr, xva, yva, xte, yte = bed[:6]
    row = dict(
        dense_val=accuracy(p, xva, yva),
        dense_test=accuracy(p, xte, yte),
        dense_train=accuracy(p, xtr, ytr),
        target_val=target,
    )
    row.update(criteria(p))
    order = np.argsort(-scores(p, s["score"]), kind="stable")
    t0 = time.perf_counter()
    for ft in (False, True):
        r = iso_search(p, s, width, bed, target, order, ft, seed)
        tag = "ft" if ft else "noft"
        for k, v in r.items():
            row[f"{tag}_{k}"] = v
    if ref_target is not None and abs(ref_target - target) > 1e-12:
        for ft in (False, True):
            r = iso_search(p, s, width, bed, ref_target, order, ft, seed)
            tag = "refft" if ft else "refnoft"
            row[f"{tag}_neurons"] = r["neurons"]
            row[f"{tag}_test_acc"] = r["test_acc"]
    row["eval_s"] = time.perf_counter() - t0
    return row


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------


def _ms(values, fmt="{:.3f}"):
    v = np.asarray(values, "float64")
    if len(v) == 1:
        return fmt.format(v[0])
    return (fmt + " ± " + fmt).format(v.mean(), v.std(ddof=1))


def summarize(files, baseline="sgd"):
    """Markdown tables (mean ± sample std over seeds) from jsonl files."""
    rows = [json.loads(line) for f in files for line in open(f)]
    out = []
    for bed, width in sorted({(r["bed"], r["width"]) for r in rows}):
        mine = [r for r in rows if r["bed"] == bed and r["width"] == width]
        names = list(dict.fromkeys(r["setting"] for r in mine))
        base = [r for r in mine if r["setting"] == baseline]
        seeds = sorted({r["seed"] for r in mine})
        out.append(f"### {bed}, width {width}, seeds {seeds}\n")
        out.append(
            "| setting | score | dense test acc | paper crit. (sq) | L1 crit. | mean norm | "
            "neurons@iso no-FT | ratio no-FT | test acc no-FT | neurons@iso FT | ratio FT | test acc FT | train s |"
        )
        out.append("| --- | --- |" + " ---: |" * 11)
        for name in names:
            rs = [r for r in mine if r["setting"] == name]
            def ratio(tag, base=base, rs=rs):
                b = np.mean([r[f"{tag}_neurons"] for r in base]) if base else float("nan")
                return np.mean([r[f"{tag}_neurons"] for r in rs]) / b
            out.append(
                f"| {name} | {rs[0]['score']} | {_ms([r['dense_test'] for r in rs])} | "
                f"{_ms([r['paper_ratio'] for r in rs], '{:.2f}')} | {_ms([r['l1_ratio'] for r in rs], '{:.2f}')} | "
                f"{_ms([r['mean_norm'] for r in rs], '{:.2f}')} | "
                f"{_ms([r['noft_neurons'] for r in rs], '{:.0f}')} | {ratio('noft'):.2f} | "
                f"{_ms([r['noft_test_acc'] for r in rs])} | "
                f"{_ms([r['ft_neurons'] for r in rs], '{:.0f}')} | {ratio('ft'):.2f} | "
                f"{_ms([r['ft_test_acc'] for r in rs])} | {_ms([r['train_s'] for r in rs], '{:.1f}')} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bed", choices=["digits", "teacher"], default="digits")
    ap.add_argument("--width", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--grid", default="screen", help=f"one of {sorted(GRIDS)}")
    ap.add_argument("--only", nargs="*", default=None, help="run only these setting names")
    ap.add_argument("--name", default=None, help="output file stem (default <grid>_<bed>_w<width>)")
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--lr-mult", type=float, default=None,
                    help="multiplies every setting's lr (default: 1 for digits, 4 for teacher)")
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--ref", default="sgd", help="setting whose dense val acc is a second target ('' for none)")
    ap.add_argument("--summarize", nargs="+", default=None, help="print markdown tables of these jsonl files and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return

    settings = GRIDS[args.grid]
    if args.lr_mult is None:
        args.lr_mult = 4.0 if args.bed == "teacher" else 1.0
    settings = [dict(s, lr=s["lr"] * args.lr_mult) for s in settings]
    if args.only:
        settings = [s for s in settings if s["name"] in args.only or s["name"] == args.ref]
    name = args.name or f"{args.grid}_{args.bed}_w{args.width}"
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{name}.jsonl")
    bed = load_bed(args.bed)
    print(f"# {args.bed}: train {len(bed[1])} val {len(bed[3])} test {len(bed[5])} -> {path}", flush=True)

    for seed in args.seeds:
        baselines = {}  # protocol -> (row, params)
        ref_target = None
        for s in settings:
            key = json.dumps(protocol_of(s), sort_keys=True)
            todo = []
            if key not in baselines:
                b = baseline_of(s)
                if is_baseline(s) and s["score"] == "norm":
                    b["name"] = s["name"]
                    todo = [("baseline", b)]
                else:
                    todo = [("baseline", b), ("setting", s)]
            else:
                todo = [("setting", s)]
            for role, run in todo:
                if role == "setting" and is_baseline(run) and "params" in baselines[key]:
                    p, info = baselines[key]["params"], dict(baselines[key]["info"])
                else:
                    p, info = train(run, bed, args.width, seed)
                if role == "baseline":
                    dense_val = accuracy(p, bed[2], bed[3])
                    baselines[key] = dict(dense_val=dense_val, params=p, info=info)
                target = baselines[key]["dense_val"] - args.tol
                if run["name"] == args.ref and role == "baseline" and ref_target is None:
                    ref_target = target
                row = dict(bed=args.bed, width=args.width, seed=seed, setting=run["name"], role=role)
                row.update({k: run[k] for k in BASE})
                row.update(info)
                row.update(measure(p, run, args.width, bed, target, seed, ref_target))
                base = baselines[key]
                if role == "baseline":
                    base["noft_neurons"] = row["noft_neurons"]
                    base["ft_neurons"] = row["ft_neurons"]
                    base["dense_test"] = row["dense_test"]
                row["sgd_dense_test"] = base["dense_test"]
                row["noft_ratio_vs_sgd"] = row["noft_neurons"] / base["noft_neurons"]
                row["ft_ratio_vs_sgd"] = row["ft_neurons"] / base["ft_neurons"]
                with open(path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{args.bed} w{args.width} s{seed} {run['name']:<22} dense {row['dense_test']:.3f} "
                    f"(sgd {base['dense_test']:.3f}) paper {row['paper_ratio']:.2f} l1 {row['l1_ratio']:.2f} "
                    f"norm {row['mean_norm']:.2f}/{row['max_norm']:.1f} | iso noft {row['noft_neurons']} "
                    f"({row['noft_ratio_vs_sgd']:.2f}x, test {row['noft_test_acc']:.3f}) ft {row['ft_neurons']} "
                    f"({row['ft_ratio_vs_sgd']:.2f}x, test {row['ft_test_acc']:.3f})"
                    + (f" ref {row.get('refnoft_neurons')}/{row.get('refft_neurons')}" if "refnoft_neurons" in row else "")
                    + f" | {row['steps']} steps {row['train_s']:.1f}s + {row['eval_s']:.1f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
