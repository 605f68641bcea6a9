"""`run_sweep`: a grid of noise settings, each measured at iso-accuracy.

For every (protocol, width) of the grid, the SGD baseline and every
combination of noise structure, alpha, sigma and annealing are trained for
every seed (`experiments.run_protocol`), and the iso-accuracy neuron counts
go into one table and one plot. Finished runs are logged as they end: a
rerun of the same grid skips them, and another grid into the same folder is
refused.
"""

import dataclasses
import itertools
import json
import math
from pathlib import Path

from keras_heavytail import defaults
from keras_heavytail import files
from keras_heavytail.experiments import runner as experiments


def _plain(value):
    """A numpy scalar as a Python number (labels read `1.5`, not `np.float64(1.5)`)."""
    return value.item() if hasattr(value, "item") and hasattr(value, "dtype") else value


@dataclasses.dataclass
class Grid:
    """The values a sweep combines; `None` takes the protocol's own."""

    sigma: list = (defaults.PAPER_SIGMA,)
    alpha: list = (defaults.PAPER_ALPHA,)
    noise: list = (defaults.PAPER_NOISE,)
    anneal: list = ("off",)
    width: list = (defaults.WIDTH,)
    protocol: list = ("default",)
    seeds: list = (0,)
    epochs: int = None
    lr: float = None
    batch_size: int = None
    sigma_scale: str = defaults.PAPER_SIGMA_SCALE
    fine_tune_epochs: int = None

    def __post_init__(self):
        for name in ("sigma", "alpha", "noise", "anneal", "width", "protocol", "seeds"):
            values = [_plain(v) for v in getattr(self, name)]
            if not values:
                raise ValueError(f"`{name}` needs at least one value. Received: []")
            if len(set(values)) != len(values):
                raise ValueError(
                    f"`{name}` values must be distinct: a repeat would be counted "
                    f"as another run. Received: {name}={values!r}"
                )
            setattr(self, name, values)
        for value in self.anneal:
            if value not in ("off", "on"):
                raise ValueError(
                    f"`anneal` values are 'off' or 'on'. Received: {value!r}"
                )
        for name in ("epochs", "lr", "batch_size", "fine_tune_epochs"):
            setattr(self, name, _plain(getattr(self, name)))
        for name, width in self.groups():
            self.protocol_for(name, width)  # checked now, before a run log is made

    def groups(self):
        """`(protocol name, width)` pairs: each trains its own SGD baseline."""
        return list(itertools.product(self.protocol, self.width))

    def settings(self):
        """The baseline and every noisy combination, as `Setting`s."""
        settings = [experiments.Setting("SGD")]
        for noise, alpha, sigma, anneal in itertools.product(
            self.noise, self.alpha, self.sigma, self.anneal
        ):
            label = f"{noise}, alpha={alpha!r}, sigma={sigma!r}"
            label += ", fan_in" if self.sigma_scale == "fan_in" else ""
            label += ", annealed" if anneal == "on" else ""
            settings.append(
                experiments.Setting(
                    label, noise, alpha, sigma, anneal == "on", self.sigma_scale
                )
            )
        return settings

    def protocol_for(self, name, width):
        overrides = {
            k: v
            for k, v in (
                ("epochs", self.epochs),
                ("lr", self.lr),
                ("batch_size", self.batch_size),
                ("fine_tune_epochs", self.fine_tune_epochs),
            )
            if v is not None
        }
        return experiments.Protocol.preset(name, width=width, **overrides)


@dataclasses.dataclass
class SweepResult:
    """One row per (protocol, width, setting): means and spreads over seeds."""

    rows: list

    def markdown(self):
        columns = [
            ("test_accuracy", "test accuracy"),
            ("neurons_at_iso_accuracy", "neurons at iso-accuracy"),
            ("iso_neuron_ratio_vs_sgd", "x SGD"),
            ("neurons_at_iso_accuracy_finetuned", "neurons, fine-tuned"),
            ("iso_neuron_ratio_vs_sgd_finetuned", "x SGD, fine-tuned"),
        ]
        # Fine-tuned columns only where the protocol fine-tuned.
        columns = [c for c in columns if any(c[0] in row for row in self.rows)]
        lines = [
            "| protocol | width | setting | "
            + " | ".join(t for _, t in columns)
            + " |",
            "| --- | ---: | --- |" + " ---: |" * len(columns),
        ]
        for row in self.rows:
            cells = []
            for key, _ in columns:
                mean, spread = row.get(key, (float("nan"), 0.0))
                count = key.startswith("neurons")  # 678, not 678.000
                if not math.isfinite(mean):
                    cells.append("-")  # not measured, or a run that diverged
                elif row["seeds"] == 1:
                    cells.append(f"{mean:.0f}" if count else f"{mean:.3f}")
                else:
                    d = 1 if count else 3
                    cells.append(f"{mean:.{d}f} ± {spread:.{d}f}")
            lines.append(
                f"| {row['protocol']} | {row['width']} | {row['setting']} | "
                + " | ".join(cells)
                + " |"
            )
        return "\n".join(lines)


def run_sweep(dataset, grid, output, progress=True):
    """Runs a `Grid` on `dataset` into the folder `output`; resumable.

    Args:
        dataset: a `keras_heavytail.experiments.Dataset`.
        grid: a `Grid`.
        output: a folder: `runs.jsonl` (the grid and the finished groups),
            one subfolder per (protocol, width) with its own run log and
            models, `sweep.md`, `sweep.json` and `sweep.png`.
        progress: a bar on a terminal and one line per finished run.
            Defaults to `True`.

    Returns:
        A `SweepResult`.

    Raises:
        keras_heavytail.files.RunLogError: `output` holds another grid.
    """
    output = Path(output)
    grid_key = dataclasses.asdict(grid)
    if grid_key["sigma_scale"] == defaults.PAPER_SIGMA_SCALE:
        del grid_key["sigma_scale"]  # as 0.3 wrote it, so its logs resume
    if grid_key["fine_tune_epochs"] is None:
        del grid_key["fine_tune_epochs"]  # as 0.3 wrote it
    header = {"dataset": dataset.summary(), "grid": grid_key}
    rows = []
    with files.RunLog(output / "runs.jsonl", header) as log:
        for name, width in grid.groups():
            result = experiments.run_protocol(
                dataset,
                grid.settings(),
                grid.protocol_for(name, width),
                tuple(grid.seeds),
                progress=progress,
                output=output / f"{name}_w{width}",
            )
            settings = {setting.label: setting for setting in grid.settings()}
            for row in result.table:
                setting = settings[row["setting"]]
                rows.append({"protocol": name, "width": width, **row,
                             "noise": setting.noise, "alpha": setting.alpha,
                             "sigma": setting.sigma, "anneal": setting.anneal})  # fmt: skip
            if log.find(protocol=name, width=width) is None:
                log.append({"protocol": name, "width": width, "finished": True})
    result = SweepResult(rows)
    files.write_text(output / "sweep.md", result.markdown() + "\n")
    files.write_text(
        output / "sweep.json", json.dumps(rows, indent=1, default=str) + "\n"
    )
    try:
        from keras_heavytail.experiments import plots

        plots.plot_sweep(rows, output / "sweep.png")
    except ImportError:  # matplotlib is optional: the table is written anyway
        pass
    return result
