"""The paper's setting: one hidden layer, a width sweep, noise against none.

For each width, trains a one-hidden-layer ReLU network with SGD and with
HeavyTailSGD (same budget, same seeds) and prints test accuracy, the share of
neurons the paper's criterion prunes, and accuracy with 70% of the neurons
removed. The theory says compressibility grows with width under heavy-tailed
noise; this measures it. Plots accuracy-vs-pruning curves of the widest pair
to `--plot`.

    python examples/one_hidden_layer.py                      # about 1 minute
    python examples/one_hidden_layer.py --dataset mnist --widths 1000 5000 --epochs 10
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_heavytail as kht  # noqa: E402
from keras_heavytail import defaults  # noqa: E402
from keras_heavytail.experiments import datasets  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data", help="directory with the dataset's files")
    parser.add_argument("--widths", type=int, nargs="+", default=[250, 1000, 4000])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--sigma", type=float, default=defaults.PAPER_SIGMA)
    parser.add_argument("--alpha", type=float, default=defaults.PAPER_ALPHA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--plot", default="results/one_hidden_layer.png")
    args = parser.parse_args(argv)

    data = kht.experiments.load_dataset(args.dataset, data_dir=args.data)
    settings = [
        kht.experiments.Setting("SGD"),
        kht.experiments.Setting("HeavyTailSGD", defaults.PAPER_NOISE, args.alpha, args.sigma),
    ]
    print(
        "| width | optimizer | test accuracy | prunable (paper) | accuracy, 70% pruned "
        "| neurons at iso-accuracy |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    last = None
    for width in args.widths:
        protocol = kht.experiments.Protocol(
            width=width, epochs=args.epochs, ratios=(0.7,), fine_tune_epochs=0
        )
        last = kht.experiments.run_protocol(
            data, settings, protocol, seeds=tuple(args.seeds), progress=False
        )
        for row in last.table:
            print(
                f"| {width} | {row['setting']} | {row['test_accuracy'][0]:.3f} | "
                f"{row['paper_prune_ratio'][0]:.2f} | {row['accuracy@70%pruned'][0]:.3f} "
                f"| {row['neurons_at_iso_accuracy'][0]:.0f} |"
            )
    os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
    curves = {
        label: kht.experiments.pruning_curve(model, data.x_test, data.y_test, from_logits=True)
        for (label, seed), model in last.models.items()
        if seed == args.seeds[0]
    }
    kht.experiments.plot_pruning_curves(curves, args.plot, title=f"width {args.widths[-1]}")
    print(f"Pruning curves of width {args.widths[-1]}: {args.plot}")


if __name__ == "__main__":
    main()
