"""The defaults every part of keras-heavytail shares, in one place.

The optimizers, the protocol, the CLI, the examples and the docstrings read
these names; none of them repeats a number. Measured consequences of these
choices live in `benchmarks/RESULTS.md`, never here. This module imports
nothing, so the command line can read it without loading Keras.
"""

# The heavy-tailed noise as Wan et al. (2024) and their reference code set
# it: `HeavyTailSGD.paper()`, the research harness (protocol, CLI, sweep).
PAPER_ALPHA = 1.75
PAPER_SIGMA = 0.003
PAPER_NOISE = "neuron"
PAPER_SIGMA_SCALE = "absolute"
# The optimizers' own defaults: a noise scale relative to each kernel's
# fan-in, small enough to keep dense accuracy (RESULTS §13).
ALPHA = PAPER_ALPHA
SIGMA = 0.001
NOISE = PAPER_NOISE
SIGMA_SCALE = "fan_in"
SIGMA_SCALES = ("absolute", "fan_in")
NOISE_STRUCTURES = ("entry", "neuron", "elliptical")
LR_RESCALING = True

# Training in the protocol, the CLI and the examples.
LEARNING_RATE = 0.05
BATCH_SIZE = 64
EPOCHS = 20
WIDTH = 2000
ARCHITECTURES = ("mlp", "deep_mlp", "cnn", "resnet", "mean_field")

# Pruning and measurement.
PRUNE_RATIOS = (0.5, 0.7, 0.9)
CURVE_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_REL_SQ_ERROR = 0.1
ISO_TOLERANCE = 0.01
# Masked fine-tuning epochs at each step of the iso-accuracy search.
ISO_FINE_TUNE_EPOCHS = 1
PRUNE_STRUCTURES = ("entry", "neuron")
PRUNE_SCOPES = ("layer", "global")
# Importance criteria of channels (`pruning.importance`); entries use magnitude.
IMPORTANCES = ("magnitude", "l1", "path", "bn_scale", "taylor")
# Validation split of the training data (protocol, CLI, compress).
VALIDATION_FRACTION = 0.2
# `compress`: rounds, fine-tuning epochs per round, distillation weight.
COMPRESS_STEPS = 3
# Two epochs per round: MobileNetV2 at 1/4 of the MACs lost 2.9 points with
# one and 0.6 with two; ResNet-8 kept its accuracy with both (RESULTS §10.1).
COMPRESS_FINE_TUNE_EPOCHS = 2
COMPRESS_DISTILL = 0.0
# BatchNorm scales where a group has BatchNormalization, magnitude elsewhere:
# on MobileNetV2 at 1/4 of the MACs it kept 3.6 points more (RESULTS §10).
COMPRESS_IMPORTANCE = "bn_scale"
# Pruning during training (`sparsity`): tfmot's schedule defaults.
PRUNING_FREQUENCY = 100
PRUNING_POWER = 3
SPARSITY_STRUCTURES = ("entry", "neuron", "filter")
SPARSITY_SCORES = ("magnitude", "l1", "path", "bn_scale")

# Data.
DATASETS = ("digits", "teacher_student", "mnist", "fashion_mnist", "cifar10")
DATASET = "digits"
