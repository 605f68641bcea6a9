"""What the protocol's bisection costs: one reused masked copy against a fresh one per candidate.

`experiments.runner` fine-tunes every bisection candidate in one compiled
copy of the model (weights reloaded, masks applied, the optimizer's state
restored), so Keras traces its training step once per model. Before, each
candidate was a fresh `copy_model` + `compile` + `fit`. Both are run here on
the same trained model and masks, timed side by side, and their fine-tuned
weights compared (they must be equal). Also timed: the predictions a
pruning curve scores, `model.predict` (one traced function per model) against
`metrics.predict` (eager chunks, nothing traced), on the same model.

    apt-get install dataset-fashion-mnist
    python benchmarks/bisection_cost.py --data /usr/share/datasets/fashion-mnist --reruns 3
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_heavytail as kht  # noqa: E402
from keras_heavytail import metrics  # noqa: E402
from keras_heavytail.experiments import runner  # noqa: E402
from keras_heavytail.pruning import one_shot  # noqa: E402

RATIOS = [0.5, 0.75, 0.625, 0.6875, 0.65625, 0.671875, 0.6640625, 0.66796875]


def fresh(model, masks, protocol, split, seed):
    """The old way: a new compiled copy per candidate."""
    tuned = one_shot.apply_masks(one_shot.copy_model(model), masks)
    keras.utils.set_random_seed(seed)
    tuned.compile(optimizer=keras.optimizers.SGD(protocol.effective_lr, momentum=protocol.momentum),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    tuned.fit(split.x_fit, split.y_fit, batch_size=protocol.batch_size,
              epochs=protocol.fine_tune_epochs, verbose=0,
              callbacks=[runner._HoldMasks(masks)])  # fmt: skip
    return tuned


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--limit", type=int, default=6000, help="examples per split")
    parser.add_argument("--reruns", type=int, default=3)
    args = parser.parse_args()
    data = kht.experiments.load_dataset("fashion_mnist", data_dir=args.data, limit=args.limit)
    protocol = kht.experiments.Protocol(width=2000, epochs=1, fine_tune_epochs=1)
    split = runner.Split.of(data, protocol)
    model, *_ = runner.train_one(data, kht.experiments.Setting("SGD"), protocol, 0, split=split)
    masks = [one_shot.pruning_masks(model, r, "neuron") for r in RATIOS]
    rows = {"fresh copy per candidate": [], "one reused copy": [],
            "model.predict per model": [], "metrics.predict (eager)": []}  # fmt: skip
    for _ in range(args.reruns):
        seconds, old = timed(lambda: [fresh(model, m, protocol, split, 0).get_weights() for m in masks])
        rows["fresh copy per candidate"].append(seconds)
        candidate = runner._Candidates(model, protocol, split, 0, fine_tune=True)
        seconds, new = timed(lambda c=candidate: [c(m).get_weights() for m in masks])
        rows["one reused copy"].append(seconds)
        gap = max(float(np.abs(a - b).max()) for o, n in zip(old, new) for a, b in zip(o, n))
        copies = [one_shot.apply_masks(one_shot.copy_model(model), m) for m in masks]
        seconds, _ = timed(lambda cs=copies: [c.predict(data.x_test, batch_size=256, verbose=0) for c in cs])
        rows["model.predict per model"].append(seconds)
        seconds, _ = timed(lambda cs=copies: [metrics.predict(c, data.x_test, 256) for c in cs])
        rows["metrics.predict (eager)"].append(seconds)
    print(f"{len(masks)} candidates, {len(split.y_fit)} fit examples, {len(data.y_test)} test "
          f"examples, MLP width 2000; largest weight gap reused vs fresh: {gap:.1e}")  # fmt: skip
    print("| what | median s | min-max s |\n| --- | ---: | ---: |")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")


if __name__ == "__main__":
    main()
