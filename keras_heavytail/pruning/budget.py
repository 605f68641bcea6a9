"""What a compressed model may cost (`Budget`) and what `compress` returns.

A budget is a fraction of the dense model's cost or an absolute number, for
MACs, parameters and the int8 LiteRT file's bytes; its 1-thread latency is
`latency_ms` (milliseconds) or `latency` (a fraction of the dense model's).
"""

import dataclasses
import math

import keras
import numpy as np

KINDS = ("macs", "params", "bytes", "latency_ms", "latency")


@keras.saving.register_keras_serializable(package="keras_heavytail")
@dataclasses.dataclass(frozen=True)
class Budget:
    """What a compressed model may cost; set one or more.

    `macs`, `params` and `bytes` are each a fraction of the dense model's
    cost (a float in (0, 1)) or an absolute number (>= 1). Latency is
    `latency_ms`, always in milliseconds (small models run in microseconds),
    or `latency`, a fraction in (0, 1) of the dense model's.

    Args:
        macs: multiply-accumulates at batch 1 (`count_macs`).
        params: number of weights.
        bytes: size of the calibrated int8 LiteRT file (TensorFlow backend).
        latency_ms: median 1-thread LiteRT latency of the int8 file, in
            milliseconds, any value > 0 (TensorFlow backend).
        latency: the same latency as a fraction in (0, 1) of the dense
            model's, measured the same way.
    """

    macs: float = None
    params: float = None
    bytes: float = None
    latency_ms: float = None
    latency: float = None

    def __post_init__(self):
        given = dict(self.items())
        if not given:
            raise ValueError(
                "A Budget needs at least one of macs, params, bytes, latency_ms, latency. "
                "Received: none"
            )
        for kind, value in given.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float, np.integer, np.floating))
                or not math.isfinite(float(value))
                or value <= 0
            ):
                raise ValueError(
                    f"`{kind}` must be a fraction in (0, 1) of the dense model's "
                    f"cost or an absolute number >= 1. Received: {kind}={value!r}"
                )
            if kind == "latency" and value >= 1:
                raise ValueError(
                    "`latency` is a fraction in (0, 1) of the dense model's latency; "
                    f"give milliseconds as `latency_ms`. Received: latency={value!r}"
                )
            if value == 1 and isinstance(value, (float, np.floating)) and kind != "latency_ms":
                raise ValueError(
                    f"`{kind}=1.0` keeps the whole model; give a fraction in (0, 1) "
                    f"or an absolute number. Received: {kind}={value!r}"
                )

    def items(self):
        """`(kind, value)` for each budget that is set."""
        return [(k, getattr(self, k)) for k in KINDS if getattr(self, k) is not None]

    def measured(self):
        """The cost kinds the budget names, `latency` read as `latency_ms`."""
        return sorted({"latency_ms" if k == "latency" else k for k, _ in self.items()})

    def targets(self, dense):
        """`{kind: absolute target}` given the dense model's `{kind: cost}`
        (`latency` becomes a `latency_ms` target)."""
        targets = {}
        for kind, value in self.items():
            if kind == "latency":
                kind, value = "latency_ms", value * dense["latency_ms"]
            elif kind != "latency_ms" and value < 1:
                value = value * dense[kind]
            targets[kind] = min(targets.get(kind, math.inf), float(value))
        return targets

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict):
            raise ValueError(f"A Budget config is a dict. Received: {config!r}")
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"Unknown Budget config keys {unknown}: a budget has "
                f"{[f.name for f in dataclasses.fields(cls)]}. Received: {config!r}"
            )
        return cls(**config)


@dataclasses.dataclass
class CompressResult:
    """What `compress` returns.

    Attributes:
        model: the compressed (shrunk, fine-tuned) Keras 3 model.
        cost: its `ModelCost` (MACs, params, bytes).
        dense_cost: the dense model's `ModelCost`.
        accuracy: validation accuracy of the compressed model.
        dense_accuracy: validation accuracy of the dense model.
        measured: `{kind: value}` of the compressed model for each budget
            kind (bytes and latency measured in LiteRT), and the targets.
        points: one dict per step (MACs, params, accuracy, seconds).
    """

    model: object
    cost: object
    dense_cost: object
    accuracy: float
    dense_accuracy: float
    measured: dict
    points: list

    def summary(self):
        """One line: MACs, params and accuracy before and after."""
        return (
            f"MACs {self.dense_cost.macs:,} -> {self.cost.macs:,} "
            f"({self.cost.macs / max(self.dense_cost.macs, 1):.2f}x), params "
            f"{self.dense_cost.params:,} -> {self.cost.params:,}, val accuracy "
            f"{self.dense_accuracy:.4f} -> {self.accuracy:.4f}"
        )
