"""How `compress`'s search costs a candidate: read off shapes vs built and counted.

Each round of `compress` tries about a dozen prunings of one model. Since
this commit `search.Workbench.cost` reads each candidate's MACs and
parameters off the shapes its weights would have once shrunk; before, every
candidate was shrunk into a new Keras model and counted (`candidate` then
`count_macs`). Both run here side by side on the same working copy, for
MobileNetV2 (alpha 0.35, 32x32x3) and the CIFAR-style ResNet-8 (28x28x1),
and must agree exactly.

    python benchmarks/search_cost.py --reruns 3
"""

import argparse
import statistics
import time

import keras

import keras_heavytail as kht
from keras_heavytail.pruning import search

OPTIONS = {"score": "bn_scale", "scope": "layer", "normalized": True,
           "round_to": 8, "min_channels": 1, "exclude": None}  # fmt: skip
RATIOS = (0.25, 0.5, 0.75)


def models():
    keras.utils.set_random_seed(0)
    yield "MobileNetV2", keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )
    yield "ResNet-8", kht.experiments.build_model("resnet", (28, 28, 1), 10, depth=1)


def built(bench, ratio):
    cost = kht.count_macs(bench.candidate(ratio, OPTIONS))
    return {"macs": cost.macs, "params": cost.params}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=3)
    args = parser.parse_args()
    print("| model | way | seconds per candidate (median of reruns, min-max) | x faster |")
    print("| --- | --- | ---: | ---: |")
    for name, model in models():
        bench = search.Workbench(model)
        times = {"built and counted": [], "read off shapes": []}
        for _ in range(args.reruns):
            for way, fn in (("built and counted", built), ("read off shapes", bench.cost)):
                start = time.perf_counter()
                results = [fn(bench, r) if fn is built else fn(r, OPTIONS) for r in RATIOS]
                times[way].append((time.perf_counter() - start) / len(RATIOS))
                if way == "built and counted":
                    reference = results
            assert results == reference, (name, results, reference)
        slow = statistics.median(times["built and counted"])
        for way, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {way} | {median:.3f} ({min(values):.3f}-{max(values):.3f}) "
                  f"| {slow / median:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
