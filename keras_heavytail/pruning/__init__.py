"""Structural pruning and compression of Keras 3 models, on every backend.

- `ModelGraph`: the one walker of a model (layers, kernels, chains, channel
  groups, outputs), built once and passed to whoever needs it;
  `register_layer` teaches it a custom layer.
- `prune`, `pruning_masks`, `apply_masks`: one-shot pruning of entries or of
  channel groups; `importance` holds the criteria that rank channels.
- `shrink`: a physically smaller model without the pruned channels.
- `count_macs`: multiply-adds, parameters and bytes at batch 1.
- `compress`: prune to a budget (MACs, parameters, bytes, latency) and keep
  the accuracy.
- `sparsity`: pruning during training, shaped like `tfmot.sparsity.keras`.
"""

from typing import TYPE_CHECKING

from keras_heavytail import lazy

_WHERE = {
    "Budget": "budget",
    "CompressResult": "budget",
    "DistillationLoss": "distillation",
    "ModelCost": "macs",
    "compress": "compress",
    "count_macs": "macs",
    "recalibrate_batch_norm": "batch_norm",
    "ChannelGroup": "components",
    "ModelGraph": "graph",
    "apply_masks": "zeroing",
    "channel_groups": "graph",
    "neuron_scores": "importance",
    "prune": "one_shot",
    "pruning_masks": "one_shot",
    "register_layer": "channels",
    "shrink": "shrinking",
}
__getattr__, __dir__ = lazy.attach(
    __name__, _WHERE,
    submodules=("gradients", "schedules", "sparsity"),
)

if TYPE_CHECKING:
    from keras_heavytail.pruning.batch_norm import recalibrate_batch_norm
    from keras_heavytail.pruning.budget import Budget
    from keras_heavytail.pruning.budget import CompressResult
    from keras_heavytail.pruning.channels import register_layer
    from keras_heavytail.pruning.components import ChannelGroup
    from keras_heavytail.pruning.compress import compress
    from keras_heavytail.pruning.distillation import DistillationLoss
    from keras_heavytail.pruning.graph import ModelGraph
    from keras_heavytail.pruning.graph import channel_groups
    from keras_heavytail.pruning.importance import neuron_scores
    from keras_heavytail.pruning.macs import ModelCost
    from keras_heavytail.pruning.macs import count_macs
    from keras_heavytail.pruning.one_shot import prune
    from keras_heavytail.pruning.one_shot import pruning_masks
    from keras_heavytail.pruning.shrinking import shrink
    from keras_heavytail.pruning.zeroing import apply_masks

__all__ = [
    "Budget",
    "CompressResult",
    "DistillationLoss",
    "ModelCost",
    "compress",
    "count_macs",
    "recalibrate_batch_norm",
    "ChannelGroup",
    "ModelGraph",
    "apply_masks",
    "channel_groups",
    "neuron_scores",
    "prune",
    "pruning_masks",
    "register_layer",
    "shrink",
]
