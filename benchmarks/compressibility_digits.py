"""Heavy-tailed SGD vs SGD on a real dataset that ships with scikit-learn.

One hidden layer of 2000 ReLU units on the 8x8 handwritten digits
(standardised; 1,437 train / 360 test), 20 epochs of SGD (lr 0.05, batch 64),
three seeds per setting. For each setting: test accuracy, tail index of the
hidden kernel, the paper's criterion (share of neurons prunable within 10%
squared error) and accuracy after one-shot neuron pruning, scored by
incoming norm (the paper) and by path norm. Writes the table to stdout and
`compressibility_digits.json`, the curves to `compressibility_digits.png`
and the norm tails to `compressibility_digits_tails.png` beside this file.

    python benchmarks/compressibility_digits.py     # about 3 minutes on 2 cores
"""

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_heavytail as kht  # noqa: E402
from keras_heavytail.experiments import datasets  # noqa: E402
from keras_heavytail.experiments import runner as ex  # noqa: E402

HERE = Path(__file__).resolve().parent
SETTINGS = [
    ex.Setting("SGD"),
    ex.Setting("entry, sigma 0.02", "entry", 1.75, 0.02),
    ex.Setting("neuron, sigma 0.005", "neuron", 1.75, 0.005),
    ex.Setting("neuron, sigma 0.02", "neuron", 1.75, 0.02),
    ex.Setting("elliptical, sigma 0.02", "elliptical", 1.75, 0.02),
    ex.Setting("elliptical, sigma 0.05", "elliptical", 1.75, 0.05),
    ex.Setting(
        "elliptical, sigma 0.05 annealed", "elliptical", 1.75, 0.05, anneal=True
    ),
]
CURVE_RATIOS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]


def main():
    data = datasets.load_dataset("digits")
    protocol = ex.Protocol(
        width=2000, lr=0.05, batch_size=64, epochs=20, scores=("magnitude", "path")
    )
    result = ex.run_protocol(data, SETTINGS, protocol, seeds=(0, 1, 2))
    print(result.markdown())
    (HERE / "compressibility_digits.json").write_text(
        json.dumps(result.to_dict(), indent=1)
    )
    shown = ["SGD", "neuron, sigma 0.005", "elliptical, sigma 0.02"]
    curves, kernels = {}, {}
    for label in shown:
        model = result.models[(label, 0)]
        for score in ("magnitude", "path"):
            curves[f"{label} ({score})"] = kht.experiments.pruning_curve(
                model, data.x_test, data.y_test, CURVE_RATIOS, score=score,
                from_logits=True,
            )
        kernels[label] = model.get_layer("hidden1").kernel.numpy()
    kht.experiments.plot_pruning_curves(
        curves,
        HERE / "compressibility_digits.png",
        title="digits, 2000 hidden units: neuron pruning, no fine-tuning",
    )
    kht.experiments.plot_norm_tails(kernels, HERE / "compressibility_digits_tails.png")


if __name__ == "__main__":
    main()
