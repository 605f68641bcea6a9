"""The optimizers past one device: `keras.distribution` on JAX, multi-worker TF.

Each case runs in fresh processes that the test starts and stops itself:
the backend and the device count are fixed when Keras and JAX first load,
and a multi-worker strategy needs one process per worker. Every run is
compared with the same run on one device (within float tolerance: the
reductions add in a different order) and with the noise-free run (so a test
fails if the noise is lost on the way).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import HANG_GUARD_S
from helpers import run_python

# Other backends and several devices, each in processes of its own.
pytestmark = pytest.mark.slow

HAS_JAX = importlib.util.find_spec("jax") is not None

# Two host devices on one CPU; LayoutMap keys are regexes matched from the
# start of the variable path, hence `.*hidden/kernel`.
JAX_DISTRIBUTION = textwrap.dedent(
    """
    import os, tempfile
    import numpy as np, keras, jax
    import keras_heavytail as kht
    from keras import distribution as dist

    assert keras.backend.backend() == "jax" and len(jax.devices()) == 2
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(64, 8)).astype("float32"), np.arange(64) % 3

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((8,)),
                                 keras.layers.Dense(16, name="hidden"),
                                 keras.layers.Dense(3, name="out")])

    def data_parallel():
        return dist.DataParallel(devices=dist.list_devices())

    def model_parallel():
        mesh = dist.DeviceMesh((1, 2), ["batch", "model"], dist.list_devices())
        layout = dist.LayoutMap(mesh)
        layout[".*hidden/kernel"] = (None, "model")
        return dist.ModelParallel(layout_map=layout, batch_dim_name="batch")

    def fit(m, epochs):
        m.fit(xs, ys, epochs=epochs, batch_size=16, verbose=0, shuffle=False)
        return m

    def train(make, distribution, epochs=2):
        if distribution is None:
            m = model(); m.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
            return fit(m, epochs)
        with distribution.scope():
            m = model(); m.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
            return fit(m, epochs)

    def spec(m):
        return tuple(m.get_layer("hidden").kernel.value.sharding.spec)

    # The structures whose draws span a kernel's columns (the ones a model
    # split could break); entry noise is elementwise, checked on one device.
    CASES = {
        "sgd-elliptical": lambda s: kht.HeavyTailSGD(
            0.1, momentum=0.9, sigma=s, noise="elliptical", seed=3),
        "adam-neuron": lambda s: kht.HeavyTailNoise(
            keras.optimizers.Adam(1e-2), sigma=s, noise="neuron", seed=3),
    }
    LAYOUTS = {"data": (data_parallel, (None, None)),
               "model": (model_parallel, (None, "model"))}
    for name, make in CASES.items():
        one = train(lambda: make(0.05), None).get_weights()
        quiet = train(lambda: make(0.0), None).get_weights()
        for layout, (make_dist, expected) in LAYOUTS.items():
            m = train(lambda: make(0.05), make_dist())
            # The hidden kernel is replicated (data) or split by column (model).
            assert spec(m) == expected, (name, layout, spec(m))
            if layout == "model":
                shards = m.get_layer("hidden").kernel.value.addressable_shards
                assert sorted(s.data.shape for s in shards) == [(8, 8), (8, 8)]
            gap = max(float(np.abs(a - b).max()) for a, b in zip(m.get_weights(), one))
            moved = float(np.abs(m.get_weights()[0] - quiet[0]).max())
            assert gap < 1e-4 and moved > 1e-2, (name, layout, gap, moved)
            print(name, layout, f"gap {gap:.1e} moved {moved:.2f}")

    # Save mid-training under the distribution, reload under it, continue:
    # the same weights as two epochs straight through, the layout kept. The
    # wrapper, whose inner optimizer's state is saved as well.
    for name in ("adam-neuron",):
        make = CASES[name]
        straight = train(lambda: make(0.05), model_parallel()).get_weights()
        distribution = model_parallel()
        with distribution.scope():
            half = train(lambda: make(0.05), None, epochs=1)
            path = os.path.join(tempfile.mkdtemp(), "m.keras")
            half.save(path)
            resumed = keras.saving.load_model(path)
            assert spec(resumed) == (None, "model"), spec(resumed)
            fit(resumed, 1)
        assert int(resumed.optimizer.iterations) == 8
        for a, b in zip(straight, resumed.get_weights()):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        print(name, "save/reload ok")

    # compress under the caller's distribution: the new, smaller model is
    # built, fine-tuned and distilled on both devices.
    distribution = data_parallel()
    with distribution.scope():
        base = model()
        base.compile(optimizer=keras.optimizers.SGD(0.1),
                     loss="sparse_categorical_crossentropy")
        fit(base, 2)
        result = kht.compress(base, (xs, ys), (xs, ys), kht.Budget(params=0.5),
                              steps=1, fine_tune_epochs=1, verbose=False)
    assert result.cost.params <= 0.5 * base.count_params(), result.cost
    devices = result.model.get_layer("hidden").kernel.value.sharding.device_set
    assert len(devices) == 2, devices
    print("compress under the distribution ok")
    print("jax distribution ok")
    """
)


@pytest.mark.skipif(not HAS_JAX, reason="the keras.distribution checks need jax")
def test_keras_distribution_on_jax_matches_one_device():
    result = run_python(
        JAX_DISTRIBUTION,
        env={
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        },
        timeout=HANG_GUARD_S,
    )
    assert "jax distribution ok" in result.stdout, result.stdout
    assert "compress under the distribution ok" in result.stdout


# One worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG set), or the
# single-process reference (no TF_CONFIG). Keras 3.15's `model.fit` cannot run
# under MultiWorkerMirroredStrategy (keras-team/keras#20585: its symbolic
# build reduces a PerReplica batch eagerly and fails, with any optimizer), so
# the workers train with the custom loop TensorFlow documents for it:
# `strategy.run` around the forward pass and `optimizer.apply_gradients`.
MULTI_WORKER = textwrap.dedent(
    """
    import os, sys
    import numpy as np, tensorflow as tf
    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    import keras, keras_heavytail as kht

    GLOBAL_BATCH = 16
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = np.arange(64) % 3
    OPTIMIZERS = {
        "sgd": lambda s: kht.HeavyTailSGD(
            0.1, momentum=0.9, sigma=s, seed=1, noise="entry"),
        "adam": lambda s: kht.HeavyTailNoise(
            keras.optimizers.Adam(1e-2), sigma=s, seed=1, noise="neuron"),
    }

    def train(make, sigma, epochs=2):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)),
                                      keras.layers.Dense(16, name="hidden"),
                                      keras.layers.Dense(3, name="out")])
            optimizer = make(sigma)
            optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="none")

        @tf.function
        def step(xb, yb):
            def replica_step(xb, yb):
                with tf.GradientTape() as tape:
                    per_example = loss_fn(yb, model(xb, training=True))
                    loss = tf.nn.compute_average_loss(
                        per_example, global_batch_size=GLOBAL_BATCH)
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
            strategy.run(replica_step, args=(xb, yb))

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        data = strategy.experimental_distribute_dataset(data.with_options(options))
        for _ in range(epochs):
            for xb, yb in data:
                step(xb, yb)
        return model.get_layer("hidden").kernel.numpy()

    out = {f"{name} sigma={sigma}": train(make, sigma)
           for name, make in OPTIMIZERS.items() for sigma in (0.05, 0.0)}
    np.savez(sys.argv[1], **out)
    print("replicas", strategy.num_replicas_in_sync)
    """
)


def free_ports(count):
    """`count` free TCP ports on 127.0.0.1 (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_multi_worker_mirrored_workers_agree_with_one_process(tmp_path, monkeypatch, capsys):
    script = tmp_path / "worker.py"
    script.write_text(MULTI_WORKER)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.pop("TF_CONFIG", None)
    workers = []
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            workers.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(tmp_path / f"worker{index}.npz")],
                    env=dict(env, TF_CONFIG=json.dumps(config)),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        # The one-process reference runs here while the workers train.
        monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "single.npz")])
        exec(compile(MULTI_WORKER, str(script), "exec"), {"__name__": "__main__"})
        assert "replicas 1" in capsys.readouterr().out
        for worker in workers:
            out, err = worker.communicate(timeout=HANG_GUARD_S)
            assert worker.returncode == 0, err[-3000:]
            assert "replicas 2" in out, out
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    first, second, single = (
        np.load(tmp_path / f"{name}.npz") for name in ("worker0", "worker1", "single")
    )
    for key in first.files:
        # Every worker drew the same noise: the mirrored kernels are equal.
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        # Two half-batches all-reduced = one full batch, up to float reassociation.
        np.testing.assert_allclose(first[key], single[key], rtol=0, atol=1e-5)
    for name in ("sgd", "adam"):
        moved = np.abs(first[f"{name} sigma=0.05"] - first[f"{name} sigma=0.0"]).max()
        assert moved > 1e-2, (name, moved)
