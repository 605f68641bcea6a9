"""Pruning schedules for `sparsity.GradualPruning`, with tfmot's steps and values.

`ConstantSparsity` and `PolynomialDecay` take tfmot's arguments and return
tfmot's `(should_prune, sparsity)` at each step (the polynomial schedule of
Zhu and Gupta, 2017), so a tfmot user changes one import.

References:
    - [Zhu and Gupta, 2017](https://arxiv.org/abs/1710.01878)
"""

import keras
import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_sparsity(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"`{name}` must be a fraction in [0, 1) (1 would prune every weight). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _check_steps(begin_step, end_step, frequency, allow_forever):
    begin_step = _check_int(begin_step, "begin_step", 0)
    end_step = _check_int(end_step, "end_step", -1 if allow_forever else 0)
    if end_step != -1 and end_step < begin_step:
        forever = " (or -1, to prune until training ends)" if allow_forever else ""
        raise ValueError(
            f"`end_step` must be >= `begin_step`{forever}. "
            f"Received: begin_step={begin_step}, end_step={end_step}"
        )
    if isinstance(frequency, bool) or not isinstance(frequency, (int, np.integer)):
        raise ValueError(
            f"`frequency` must be an int > 0. Received: frequency={frequency!r}"
        )
    if frequency <= 0:
        raise ValueError(
            "`frequency` must be an int > 0 (the steps between mask updates). "
            f"Received: frequency={frequency!r}"
        )
    return begin_step, end_step, int(frequency)


class PruningSchedule:
    """When to update the masks, and to which sparsity: tfmot's contract.

    `schedule(step)` returns `(should_prune, sparsity)` as a Python bool and
    float, where `step` counts the optimizer steps taken before the batch
    (tfmot's `pruning_step`). Masks are updated on the steps in
    `[begin_step, end_step]` (`end_step=-1`: no end) that are a multiple of
    `frequency` after `begin_step`, exactly as in tfmot.
    """

    def should_prune(self, step):
        """Whether the masks are recomputed before the batch at `step`."""
        step = int(step)
        in_range = step >= self.begin_step and (
            step <= self.end_step or self.end_step < 0
        )
        return in_range and (step - self.begin_step) % self.frequency == 0

    def sparsity(self, step):
        """The fraction of weights pruned when the masks update at `step`."""
        raise NotImplementedError

    def last_pruning_step(self):
        """The last step on which the masks update, or `None` for no end."""
        if self.end_step < 0:
            return None
        span = self.end_step - self.begin_step
        return self.begin_step + span - span % self.frequency

    def __call__(self, step):
        return self.should_prune(step), self.sparsity(step)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_heavytail")
class ConstantSparsity(PruningSchedule):
    """One sparsity, applied every `frequency` steps from `begin_step`.

    tfmot's `ConstantSparsity`, for `GradualPruning`.

    Args:
        target_sparsity: the fraction of weights (or units) pruned, in
            [0, 1). Defaults to none; required.
        begin_step: the first step on which masks update, >= 0. Defaults to
            none; required.
        end_step: the last step on which masks may update, >= `begin_step`,
            or -1 to prune until training ends. Defaults to `-1`.
        frequency: steps between mask updates, > 0. Defaults to `100`.

    Example:

    >>> schedule = ConstantSparsity(0.5, begin_step=0, frequency=10)
    >>> schedule(20)
    (True, 0.5)
    """

    def __init__(
        self,
        target_sparsity,
        begin_step,
        end_step=-1,
        frequency=defaults.PRUNING_FREQUENCY,
    ):
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity")
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=True
        )

    def sparsity(self, step):
        return self.target_sparsity

    def final_sparsity_value(self):
        """The sparsity reached once the schedule has run."""
        return self.target_sparsity

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_heavytail")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising fast from `initial_sparsity`, then levelling at `final_sparsity`.

    tfmot's `PolynomialDecay` (Zhu and Gupta, 2017), for `GradualPruning`:

    ```python
    p = clip((step - begin_step) / (end_step - begin_step), 0, 1)
    sparsity = final_sparsity + (initial_sparsity - final_sparsity) * (1 - p)**power
    ```

    computed in float32 like tfmot's. `final_sparsity` is reached only if the
    masks update at `end_step`, that is if `end_step - begin_step` is a
    multiple of `frequency` (as in tfmot); `GradualPruning` warns at the end
    of `fit` when training stopped before `end_step`.

    Args:
        initial_sparsity: the sparsity at `begin_step`, in [0, 1).
            Defaults to none; required.
        final_sparsity: the sparsity from `end_step` on, in [0, 1).
            Defaults to none; required.
        begin_step: the first step on which masks update, >= 0. Defaults to
            none; required.
        end_step: the step where the sparsity reaches `final_sparsity`,
            >= `begin_step`. Defaults to none; required.
        power: the exponent of the decay. Defaults to `3`.
        frequency: steps between mask updates, > 0. Defaults to `100`.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100,
    ...                            frequency=10)
    >>> schedule(100)
    (True, 0.800000011920929)

    References:
        - [Zhu and Gupta, 2017](https://arxiv.org/abs/1710.01878)
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=defaults.PRUNING_POWER,
        frequency=defaults.PRUNING_FREQUENCY,
    ):
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
        self.final_sparsity = _check_sparsity(final_sparsity, "final_sparsity")
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=False
        )
        # power 0 would stay at initial_sparsity (0**0 is 1), a negative one
        # would jump past final_sparsity.
        checks.check_positive(power, "power")
        self.power = power.item() if isinstance(power, np.generic) else power

    def sparsity(self, step):
        span = self.end_step - self.begin_step
        f32 = np.float32
        if span == 0:
            p = f32(1.0 if step >= self.end_step else 0.0)
        else:
            p = np.clip(f32(int(step) - self.begin_step) / f32(span), f32(0), f32(1))
        initial, final = f32(self.initial_sparsity), f32(self.final_sparsity)
        value = (initial - final) * np.power(f32(1) - p, f32(self.power)) + final
        return float(f32(value))

    def final_sparsity_value(self):
        """The sparsity reached once the schedule has run."""
        return self.sparsity(self.last_pruning_step())

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
