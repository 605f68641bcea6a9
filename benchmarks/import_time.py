"""Import cost of `keras_heavytail` against `import keras`, side by side.

Runs `python -X importtime -c "import M"` for M in (keras, keras_heavytail),
interleaved, `--rounds` times on the chosen backend, and reports the
cumulative import time of the top-level module (microseconds, from Python's
own `-X importtime` report) with the median ratio and its spread.

    python benchmarks/import_time.py                 # TensorFlow backend
    KERAS_BACKEND=jax python benchmarks/import_time.py
"""

import argparse
import os
import statistics
import subprocess
import sys


def import_micros(module):
    """Cumulative µs of `import module` in a fresh interpreter."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    for line in result.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package"
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise RuntimeError(f"no importtime line for {module}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    times = {"keras": [], "keras_heavytail": []}
    for _ in range(args.rounds):
        for module in times:
            times[module].append(import_micros(module))
    ratios = [a / b for a, b in zip(times["keras_heavytail"], times["keras"])]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(f"backend {backend}, {args.rounds} interleaved rounds")
    print("| import | median ms | min ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for module, values in times.items():
        print(
            f"| {module} | {statistics.median(values) / 1e3:.0f} | "
            f"{min(values) / 1e3:.0f} | {max(values) / 1e3:.0f} |"
        )
    print(
        f"keras_heavytail / keras: median {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
