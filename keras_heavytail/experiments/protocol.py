"""The protocol's definitions: the paper's networks, settings and presets.

`build_model` makes the paper's networks (MLPs, a small CNN, the theory's
mean-field net); a `Setting` is one optimiser configuration (noise-free SGD
or heavy-tailed); a `Protocol` says how every setting is trained and
measured, and `Protocol.preset("paper")` is the reference code's setting.
`Split` carves the validation split the iso-accuracy point is chosen on.

References:
    - [Wan et al., 2024](https://arxiv.org/abs/2306.08125)
"""

import dataclasses
import math

import keras
import numpy as np

from keras_heavytail import checks
from keras_heavytail import defaults

ARCHITECTURES = defaults.ARCHITECTURES




def build_model(
    architecture,
    input_shape,
    num_classes,
    width=defaults.WIDTH,
    depth=2,
    seed=0,
    use_bias=True,
):
    """The paper's networks: MLPs, a small CNN, and the theory's mean-field net.

    - `"mlp"`: one hidden ReLU layer of `width`, logits out.
    - `"deep_mlp"`: `depth` hidden layers of `width`.
    - `"cnn"`: two 3x3 conv blocks (32 and 64 filters, max-pooling), a dense
      layer of `width`.
    - `"resnet"`: a CIFAR-style ResNet (He et al., 2016): a 16-filter 3x3
      stem, three stages of `depth` basic blocks (16, 32, 64 filters; two
      3x3 convolutions with BatchNormalization and a residual addition; a
      1x1 projection where the shape changes), global average pooling,
      logits. `depth=3` is ResNet-20. Needs image inputs `(h, w, c)`.
    - `"mean_field"`: the two-layer network of the theory,
      `f(x) = (1/n) sum_i b_i relu(<theta_i, x>)` with `n = width`, no hidden
      bias, and a fixed (not trainable) second layer of random signs `b_i`
      (one per unit and class). Its gradients are O(1/n): train it with a
      learning rate scaled by `n` (`Protocol` does).

    Args:
        architecture: one of `defaults.ARCHITECTURES`. Defaults to none; required.
        input_shape: e.g. `(28, 28, 1)`.
        num_classes: outputs (logits).
        width: hidden units. Defaults to `defaults.WIDTH`.
        depth: hidden layers of `"deep_mlp"`, blocks per stage of
            `"resnet"`. Defaults to `2`.
        seed: weight initialisation seed. Defaults to `0`.
        use_bias: biases in the hidden layers (the paper's code has none).
            Defaults to `True`.

    Returns:
        An uncompiled `keras.Sequential` (a functional `keras.Model` for
        `"resnet"`).
    """
    checks.check_choice(architecture, "architecture", ARCHITECTURES)
    keras.utils.set_random_seed(seed)
    if architecture == "resnet":
        return _resnet(tuple(input_shape), num_classes, depth)
    layers = [keras.Input(tuple(input_shape))]
    if architecture == "cnn":
        for i, filters in enumerate((32, 64), start=1):
            layers += [
                keras.layers.Conv2D(
                    filters, 3, padding="same", activation="relu",
                    use_bias=use_bias, name=f"conv{i}",
                ),
                keras.layers.MaxPooling2D(name=f"pool{i}"),
            ]  # fmt: skip
    layers.append(keras.layers.Flatten(name="flatten"))
    if architecture == "mean_field":
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], (width, num_classes))
        layers += [
            keras.layers.Dense(
                width, activation="relu", use_bias=False, name="hidden1"
            ),
            keras.layers.Dense(
                num_classes,
                use_bias=False,
                trainable=False,
                kernel_initializer=keras.initializers.Constant(signs / width),
                name="logits",
            ),
        ]
        return keras.Sequential(layers, name=f"{architecture}_{width}")
    hidden = depth if architecture == "deep_mlp" else 1
    for i in range(hidden):
        layers.append(
            keras.layers.Dense(
                width, activation="relu", use_bias=use_bias, name=f"hidden{i + 1}"
            )
        )
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=f"{architecture}_{width}")


def _conv_bn(x, filters, strides, name, relu=True):
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)  # fmt: skip
    # Momentum 0.9: the statistics settle in a few hundred steps.
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _resnet(input_shape, num_classes, blocks):
    if len(input_shape) == 1:  # flat images (digits): square them
        side = int(round(np.sqrt(input_shape[0])))
        if side * side != input_shape[0]:
            raise ValueError(
                "`resnet` needs image inputs (h, w, c). Received: "
                f"input_shape={input_shape}"
            )
        inputs = keras.Input(input_shape)
        x = keras.layers.Reshape((side, side, 1), name="image")(inputs)
    else:
        inputs = x = keras.Input(input_shape)
    x = _conv_bn(x, 16, 1, "stem")
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            name = f"s{stage + 1}b{block + 1}"
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            x = _conv_bn(x, filters, strides, f"{name}a")
            x = _conv_bn(x, filters, 1, f"{name}b", relu=False)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(filters, 1, strides=strides,
                                               use_bias=False, name=f"{name}_proj")(shortcut)  # fmt: skip
                shortcut = keras.layers.BatchNormalization(
                    momentum=0.9, name=f"{name}_proj_bn")(shortcut)  # fmt: skip
            x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
            x = keras.layers.ReLU(name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{6 * blocks + 2}")


@dataclasses.dataclass
class Setting:
    """One optimiser setting of the protocol; `noise=None` is the SGD baseline."""

    label: str
    noise: str = None
    alpha: float = defaults.PAPER_ALPHA
    sigma: float = 0.0
    anneal: bool = False  # sigma decays linearly to 0 over the budget
    sigma_scale: str = defaults.PAPER_SIGMA_SCALE  # the paper's absolute sigma

    def summary(self):
        """The setting as a model card records it: the baseline has no noise
        parameters (plain SGD reads none of them)."""
        if self.noise is None:
            return {"label": self.label, "noise": None, "optimizer": "SGD"}
        return {**dataclasses.asdict(self), "optimizer": "HeavyTailSGD"}


@dataclasses.dataclass
class Protocol:
    """How every setting of a run is trained and measured.

    `Protocol.preset("paper")` is the reference code's setting where it
    matters: bias-free hidden layers, width 5000, lr 0.01, batch 5000, and
    training until 95% accuracy on the full training set, checked every 100
    steps (at most `epochs`).
    """

    name: str = "default"
    architecture: str = "mlp"
    width: int = defaults.WIDTH
    depth: int = 2
    use_bias: bool = True
    lr: float = defaults.LEARNING_RATE
    momentum: float = 0.0
    weight_decay: float = None
    batch_size: int = defaults.BATCH_SIZE
    epochs: int = defaults.EPOCHS
    target_train_accuracy: float = None
    check_every: int = 100
    validation_fraction: float = defaults.VALIDATION_FRACTION
    ratios: tuple = defaults.PRUNE_RATIOS
    scores: tuple = ("magnitude",)
    max_rel_sq_error: float = defaults.MAX_REL_SQ_ERROR
    iso_tolerance: float = defaults.ISO_TOLERANCE
    iso_steps: int = 10
    fine_tune_epochs: int = defaults.ISO_FINE_TUNE_EPOCHS

    def __post_init__(self):
        checks.check_choice(self.architecture, "architecture", ARCHITECTURES)
        if self.target_train_accuracy is not None and not (
            0.0 < self.target_train_accuracy <= 1.0
        ):
            raise ValueError(
                "`target_train_accuracy` is a fraction in (0, 1] (0.95 for 95%). "
                f"Received: target_train_accuracy={self.target_train_accuracy!r}"
            )
        if not (
            isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0
        ):
            raise ValueError(
                f"`lr` must be a finite float > 0. Received: lr={self.lr!r}"
            )
        for name in (
            "width",
            "depth",
            "batch_size",
            "epochs",
            "check_every",
            "iso_steps",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive int. Received: {name}={value!r}"
                )
        self.lr = float(self.lr)
        if not 0.0 < self.validation_fraction <= 0.5:
            raise ValueError(
                "`validation_fraction` must be in (0, 0.5]: the rest trains. "
                f"Received: validation_fraction={self.validation_fraction!r}"
            )
        if not 0.0 <= self.iso_tolerance < 1.0:  # NaN fails too
            raise ValueError(
                "`iso_tolerance` must be an accuracy difference in [0, 1). "
                f"Received: iso_tolerance={self.iso_tolerance!r}"
            )
        if (
            isinstance(self.fine_tune_epochs, bool)
            or not isinstance(self.fine_tune_epochs, int)
            or self.fine_tune_epochs < 0
        ):
            raise ValueError(
                "`fine_tune_epochs` must be an int >= 0. "
                f"Received: fine_tune_epochs={self.fine_tune_epochs!r}"
            )
        self.ratios = tuple(self.ratios)
        self.scores = tuple(self.scores)
        if not self.scores or any(s not in defaults.IMPORTANCES[:-1] for s in self.scores):
            raise ValueError(
                f"`scores` must name one or more of {defaults.IMPORTANCES[:-1]}. "
                f"Received: scores={self.scores!r}"
            )

    @classmethod
    def preset(cls, name, **overrides):
        """The named protocol (`"default"` or `"paper"`) with `overrides`."""
        checks.check_choice(name, "protocol", tuple(PRESETS))
        return cls(**{**PRESETS[name], "name": name, **overrides})

    @property
    def effective_lr(self):
        """The optimizer's learning rate: `lr`, times `width` for mean-field."""
        return self.lr * self.width if self.architecture == "mean_field" else self.lr


PRESETS = {
    "default": {},
    "paper": {
        "use_bias": False,
        "width": 5000,
        "lr": 0.01,
        "batch_size": 5000,
        "epochs": 3000,
        "target_train_accuracy": 0.95,
        "check_every": 100,
    },
}


def default_settings(
    alpha=defaults.PAPER_ALPHA, sigma=defaults.PAPER_SIGMA, noises=(defaults.PAPER_NOISE,)
):
    """The SGD baseline and one heavy-tailed setting per noise structure."""
    return [Setting("SGD")] + [
        Setting(
            f"HeavyTailSGD({noise}, alpha={alpha:g}, sigma={sigma:g})",
            noise,
            alpha,
            sigma,
        )
        for noise in noises
    ]


@dataclasses.dataclass
class Split:
    """The arrays of one run: fit, validation and test."""

    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @classmethod
    def of(cls, dataset, protocol, seed=0):
        x_fit, y_fit, x_val, y_val = dataset.validation_split(
            protocol.validation_fraction, seed
        )
        return cls(x_fit, y_fit, x_val, y_val, dataset.x_test, dataset.y_test)


