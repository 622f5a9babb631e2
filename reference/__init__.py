"""The specification: a float64 NumPy BatchNorm, parametrized by a convention record.

Public API: :class:`BatchNorm` (stateful layer), the pure functions of :mod:`reference.batchnorm` (second
order: :func:`hvp_training`); conventions as validated records (:class:`Convention`, the built-ins
:data:`CONVENTIONS`, :data:`REQUIRED` for a missing default, :func:`get_convention`,
:func:`convert_momentum`) and the running state of any record (:mod:`reference.running`); porting a state
between conventions (:mod:`reference.porting`); and synchronized BatchNorm over a world of ranks
(:mod:`reference.sharding`: :func:`split_batch`, :func:`synchronized_training`). LayerNorm:
:mod:`reference.layernorm` (its conventions, :class:`LayerNormConvention`) beside
:mod:`reference.layernorm_textbook`; GroupNorm and InstanceNorm: :mod:`reference.groupnorm`
(:class:`GroupNormConvention`) beside :mod:`reference.groupnorm_textbook`, and InstanceNorm with BatchNorm's
running statistics: :class:`InstanceNorm` (:mod:`reference.instancenorm`); BatchNorm with a mask (Keras'
``mask=``): :mod:`reference.masked`. Variants with their own convention
(batch renormalization, ghost batches, a corrected normalized value): :mod:`reference.variants`.

Modules: :mod:`reference.textbook` is the specification as the papers write it (read it first);
:mod:`reference.batchnorm` computes the same, fast, on the blocked engine of :mod:`reference.engine`,
with arguments checked by :mod:`reference.validation`; :mod:`reference.layer` adds the running state.
"""

from .batchnorm import (
    backward_inference,
    backward_training,
    batch_statistics,
    channel_axis_index,
    forward_inference,
    forward_training,
    hvp_training,
    normalize,
)
from .conventions import (
    CONVENTIONS,
    FLAX,
    KERAS,
    ONNX,
    REQUIRED,
    TF_KERAS_FUSED,
    TORCH,
    Convention,
    check_momentum,
    convert_momentum,
    get_convention,
)
from .groupnorm import (
    GROUPNORM_CONVENTIONS,
    INSTANCE,
    GroupNormConvention,
    group_norm,
    group_norm_backward,
    group_norm_hvp,
    group_norm_statistics,
    per_channel,
    per_group,
)
from .instancenorm import INSTANCENORM_RUNNING, InstanceNorm
from .layer import BatchNorm
from .layernorm import (
    DTYPE_EPSILON,
    LAYERNORM_CONVENTIONS,
    LayerNormConvention,
    layer_norm,
    layer_norm_backward,
    layer_norm_hvp,
    layer_norm_jvp,
    layer_norm_statistics,
)
from .masked import masked_backward, masked_statistics, position_weights
from .porting import Settings, move_channels, port
from .running import (
    debias_factor,
    initial_running_state,
    running_state_for,
    running_statistics,
    update_running_state,
)
from .sharding import RankExpectation, split_batch, synchronized_training
from .variants import (
    corrected_backward_training,
    corrected_forward_training,
    ghost_backward_training,
    ghost_batches,
    ghost_forward_training,
    renorm_correction,
    renorm_state_for,
    renorm_update,
)

__all__ = [
    "BatchNorm",
    "CONVENTIONS",
    "Convention",
    "DTYPE_EPSILON",
    "FLAX",
    "GROUPNORM_CONVENTIONS",
    "GroupNormConvention",
    "INSTANCE",
    "INSTANCENORM_RUNNING",
    "InstanceNorm",
    "KERAS",
    "LAYERNORM_CONVENTIONS",
    "LayerNormConvention",
    "ONNX",
    "TF_KERAS_FUSED",
    "TORCH",
    "REQUIRED",
    "RankExpectation",
    "Settings",
    "backward_inference",
    "backward_training",
    "batch_statistics",
    "channel_axis_index",
    "check_momentum",
    "convert_momentum",
    "corrected_backward_training",
    "corrected_forward_training",
    "debias_factor",
    "forward_inference",
    "forward_training",
    "get_convention",
    "ghost_backward_training",
    "ghost_batches",
    "ghost_forward_training",
    "group_norm",
    "group_norm_backward",
    "group_norm_hvp",
    "group_norm_statistics",
    "hvp_training",
    "initial_running_state",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_hvp",
    "layer_norm_jvp",
    "layer_norm_statistics",
    "masked_backward",
    "masked_statistics",
    "move_channels",
    "normalize",
    "per_channel",
    "per_group",
    "port",
    "position_weights",
    "renorm_correction",
    "renorm_state_for",
    "renorm_update",
    "running_state_for",
    "running_statistics",
    "split_batch",
    "synchronized_training",
    "update_running_state",
]
