"""A protocol run's results: per-run rows, the table over seeds, the headline.

`aggregate` turns per-seed rows into `(mean, sample std)` per setting, with
each setting's iso-accuracy neurons over the SGD baseline's for the same seed;
`ProtocolResult` holds them and writes the table and the headline, which
says when the spread over seeds makes a difference no conclusion.
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class ProtocolResult:
    """Per-run rows, the mean/spread table and the trained models of a protocol run."""

    config: dict
    runs: list
    table: list
    models: dict

    def to_dict(self):
        return {"config": self.config, "runs": self.runs, "table": self.table}

    def markdown(self, columns=None):
        """The table as markdown: `mean ± sample std` over seeds."""
        columns = columns or [c for c in self.table[0] if c not in ("setting", "seeds")]
        columns = [c for c in columns if any(c in row for row in self.table)]
        lines = [
            "| setting | " + " | ".join(columns) + " |",
            "| --- |" + " ---: |" * len(columns),
        ]
        for row in self.table:
            cells = []
            for column in columns:
                mean, spread = row.get(column, (float("nan"), 0.0))
                d = 1 if column.startswith(("neurons", "params")) else 3  # counts
                d = 0 if d == 1 and row["seeds"] == 1 else d
                if not math.isfinite(mean):
                    cells.append("-")  # not measured here, or a diverged run
                elif row["seeds"] > 1:
                    cells.append(f"{mean:.{d}f} ± {spread:.{d}f}")
                else:
                    cells.append(f"{mean:.{d}f}")
            lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def headline(self):
        """One sentence per setting: its iso-accuracy neurons against SGD's."""
        base = self.table[0]
        lines = []
        for row in self.table[1:]:
            for suffix, how in (
                ("", "one-shot"),
                ("_finetuned", "after a masked fine-tune"),
            ):
                key = "iso_neuron_ratio_vs_sgd" + suffix
                if key not in row:
                    continue
                ratio, spread = row[key]
                reached = row.get("iso_reached" + suffix, (1.0, 0.0))[0]
                if reached < 1:  # the count is the whole width: a cap
                    missed = round((1 - reached) * row["seeds"])
                    lines.append(
                        f"{row['setting']} ({how}): on {missed} of {row['seeds']} seeds "
                        f"not even all {_count(row['neurons'][0])} hidden neurons keep "
                        f"{base['setting']}'s accuracy within tolerance (dense test "
                        f"accuracy {row['test_accuracy'][0]:.3f} against "
                        f"{base['test_accuracy'][0]:.3f}); those seeds count the whole "
                        f"width, so the per-seed ratio {ratio:.2f} against "
                        f"{_count(base['neurons_at_iso_accuracy' + suffix][0])} for "
                        f"{base['setting']} is a lower bound."
                    )
                    continue
                lines.append(
                    f"{row['setting']} ({how}): {_count(row['neurons_at_iso_accuracy' + suffix][0])} "
                    f"hidden neurons keep {base['setting']}'s accuracy within tolerance, "
                    f"against {_count(base['neurons_at_iso_accuracy' + suffix][0])} for "
                    f"{base['setting']} (means over seeds): per-seed ratio {ratio:.2f} "
                    f"({_verdict(ratio, spread, row['seeds'])})."
                )
        return lines


def _verdict(ratio, spread, seeds):
    """Words for an iso-accuracy ratio, honest about its spread over seeds."""
    if seeds < 2:
        return "one seed, no spread: not a conclusion"
    if abs(ratio - 1.0) <= spread:
        return f"± {spread:.2f} over {seeds} seeds: no difference from SGD"
    more = "fewer" if ratio < 1 else "more"
    return f"± {spread:.2f} over {seeds} seeds: {more} neurons than SGD"


def _mean_spread(values):
    values = np.asarray(values, dtype="float64")
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), spread


def aggregate(runs, labels, baseline="SGD"):
    """Per setting, `(mean, sample std)` over seeds of every number.

    Each setting also gets `iso_neuron_ratio_vs_sgd` (and `_finetuned`): per
    seed, its iso-accuracy neurons over the baseline's for the same seed
    (< 1 means the noise pays), then mean and spread over seeds.
    """
    table = []
    base = {run["seed"]: run for run in runs if run["setting"] == baseline}
    for label in labels:
        mine = [run for run in runs if run["setting"] == label]
        if not mine:
            continue
        numbers = [
            k for k, v in mine[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"
        ]  # fmt: skip
        row = {"setting": label, "seeds": len(mine)}
        for key in numbers:
            row[key] = _mean_spread([run[key] for run in mine])
        for suffix in ("", "_finetuned"):
            key = "neurons_at_iso_accuracy" + suffix
            pairs = [
                (r[key], base[r["seed"]][key])
                for r in mine
                if r["seed"] in base and key in r
            ]
            if pairs:
                row["iso_neuron_ratio_vs_sgd" + suffix] = _mean_spread(
                    [mine_n / max(base_n, 1) for mine_n, base_n in pairs]
                )
        table.append(row)
    return table


def _count(mean):
    """A mean of counts: whole when it is, else one decimal (12.5, never a rounded 12)."""
    return f"{mean:.0f}" if float(mean).is_integer() else f"{mean:.1f}"
