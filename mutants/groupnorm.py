"""The GroupNorm half of the mutation self-test: a correct NumPy GroupNorm (the baseline) written as a framework
would write one, every step a method, and one subclass per bug class a real GroupNorm or InstanceNorm has had.

The baseline follows the reference's contract as ``torch.nn.GroupNorm`` does: float16/bfloat16 inputs are
computed with float32 arithmetic and returned in the input's dtype, float32 in float32, float64 in float64;
the scale and offset are held in float64, one per channel (what crosses the adapter protocol); statistics are
two-pass, per (sample, group of consecutive channels); bad input raises before anything changes. Work happens
in the input's own layout, each (sample, group) one row of a ``(N, G, M)`` view (:meth:`GroupNorm.rows`).

The baseline must pass every check of the suite without a single deviation; ``mutants.verdict`` fails the run
otherwise. Plug in the baseline and its mutants alone as any third party would (``tox -e mutants`` runs them
with the BatchNorm ones, through ``mutants.catalogue:IMPLEMENTATIONS``):

    pytest conformance --impl mutants.groupnorm:IMPLEMENTATIONS
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import State
from conformance.operators.groupnorm import GroupNormSpec

from .implementation import GroupNormImplementation
from .rows import RowNormalization

__all__ = ["IMPLEMENTATIONS", "MUTANTS", "GroupNorm"]


class GroupNorm(RowNormalization):
    """A GroupNorm layer behind the adapter protocol; an InstanceNorm is the same layer with one group per channel.
    Its rows are each sample's groups of consecutive channels, a ``(N, G, M)`` view; its parameters are per
    channel (the hooks: :class:`~mutants.rows.RowNormalization`)."""

    def initial_state(self, spec: GroupNormSpec) -> State:
        """Scale 1 and offset 0, one per channel, where the layer has them."""
        return State(gamma=np.ones(spec.num_channels) if spec.affine else None,
                     beta=np.zeros(spec.num_channels) if spec.bias else None)

    def validate(self, x: np.ndarray) -> np.ndarray:
        if not (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        spec = self.spec
        if x.ndim != spec.rank:
            raise ValueError(f"expected a rank {spec.rank} input, got shape {x.shape}")
        if x.shape[spec.channel_axis] != spec.num_channels:
            raise ValueError(f"expected {spec.num_channels} channels on axis {spec.channel_axis}, got {x.shape}")
        return x

    def rows(self, a: np.ndarray) -> np.ndarray:
        """``(N, G, M)``: each sample's group of consecutive channels one row."""
        moved = np.ascontiguousarray(np.moveaxis(a, self.spec.channel_axis, 1))
        return moved.reshape(a.shape[0], self.spec.groups, moved[0:1].size // self.spec.groups)  # -1: not for size 0

    def unrows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        moved = list(shape)
        moved.insert(1, moved.pop(self.spec.channel_axis))
        return np.moveaxis(rows.reshape(moved), 1, self.spec.channel_axis)

    def ones(self) -> np.ndarray:
        return np.ones(self.spec.num_channels)

    def along_rows(self, values: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Per-channel values broadcast over an input of ``shape``, as rows."""
        axis_shape = [1] * len(shape)
        axis_shape[self.spec.channel_axis] = -1
        return self.rows(np.broadcast_to(np.asarray(values, dtype=dtype).reshape(axis_shape), shape))

    def parameter_gradient(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Summed per channel."""
        a = self.unrows(a, shape)
        axis = self.spec.channel_axis % a.ndim
        return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).sum(axis=1, dtype=np.float64)


# -- mutants: each overrides one hook and says, as class attributes, the bug, where it happened and the link --

class ChannelsLastGroupedAsChannelsFirst(GroupNorm):
    """A channels-last input ``(N, ..., C)`` reshaped into groups as if it were channels first, with no
    transpose: each group is a run of the sample's memory, mixing positions and channels (TensorFlow Addons'
    GroupNormalization reshaped ``[N, H, W, C]`` to ``[N, G, H, W, C // G]``; Keras-Group-Normalization #6)."""

    bug = "channels-last input grouped by memory order, as if channels first"
    origin = "TensorFlow Addons GroupNormalization (#751), titu1994/Keras-Group-Normalization (#6)"
    link = "https://github.com/tensorflow/addons/issues/751"

    def rows(self, a):
        return np.ascontiguousarray(a).reshape(a.shape[0], self.spec.groups, a[0:1].size // self.spec.groups)

    def unrows(self, rows, shape):
        return rows.reshape(shape)


class EpsOutsideSqrt(GroupNorm):
    """``(x - mean) / (std + eps)`` instead of ``/ sqrt(var + eps)``: an early PyTorch GroupNorm
    (taokong/group_normalization), its author answering the report that "the implementation is equivalent"."""

    bug = "eps added outside the square root"
    origin = "taokong/group_normalization (#1)"
    link = "https://github.com/taokong/group_normalization/issues/1"

    def normalize(self, rows, mean, var):
        r = 1 / (np.sqrt(var) + rows.dtype.type(self.spec.eps))
        return (rows - mean) * r, r


class UnbiasedVariance(GroupNorm):
    """The variance with Bessel's correction, ``torch.var``'s default: the hand-written GroupNorm of pytorch
    #111824 calls ``x.var(dim=[2, 3, 4])``; pytorch #22617 is the same confusion the other way round."""

    bug = "variance with Bessel's correction (n - 1)"
    origin = "hand-written GroupNorm with torch.var (pytorch #111824, #22617)"
    link = "https://github.com/pytorch/pytorch/issues/111824"

    def statistics(self, rows):
        mean, var = super().statistics(rows)
        n = rows.shape[-1]
        return mean, var * n / max(n - 1, 1)


class HalfPrecisionAccumulation(GroupNorm):
    """float16/bfloat16 input reduced in its own precision: ExecuTorch's portable ``native_group_norm`` summed
    ``x`` and ``x**2`` in the input's type until PR #16727 moved the accumulation to float32."""

    bug = "float16/bfloat16 statistics accumulated in the input precision"
    origin = "ExecuTorch portable/optimized group_norm (PR #16727)"
    link = "https://github.com/pytorch/executorch/pull/16727"

    def compute_dtype(self, dtype):
        return np.dtype(dtype)


class ParametersPerGroup(GroupNorm):
    """One scale and one offset per group instead of per channel: ONNX GroupNormalization-18 as specified
    (onnx #5466), which opset 21 replaced (PR #5808) and deprecated; ONNX Runtime implemented it so. Its
    initial parameters have the wrong shape, and a per-channel state cannot be applied."""

    bug = "scale and offset held per group instead of per channel"
    origin = "ONNX GroupNormalization-18 (onnx #5466, fixed by opset 21 in PR #5808)"
    link = "https://github.com/onnx/onnx/issues/5466"

    def initial_state(self, spec):
        return State(gamma=np.ones(spec.groups) if spec.affine else None,
                     beta=np.zeros(spec.groups) if spec.bias else None)

    def per_parameter(self, parameter):
        # A per-channel state assigned to it repeats into C * C / G values, which fail to broadcast.
        return np.repeat(parameter, self.spec.num_channels // self.spec.groups)

    def parameter_gradient(self, a, shape):
        return super().parameter_gradient(a, shape).reshape(self.spec.groups, -1).sum(axis=1)


class StatisticsAcrossTheBatch(GroupNorm):
    """The statistics reduced over the batch axis too, shared by every sample: tract's ONNX InstanceNorm until
    PR #2863 ("with a batch of more than one the mean and variance were shared across samples")."""

    bug = "statistics shared across the samples of a batch"
    origin = "sonos/tract ONNX InstanceNormalization (PR #2863)"
    link = "https://github.com/sonos/tract/pull/2863"
    statistic_axes = (0, 2)


class StatisticsPastTheGroup(GroupNorm):
    """Each group's statistics read over the next power of two of channels, into the next group's first channels,
    and divided by the group's own count: FlagGems' Triton ``group_norm`` loaded a block of
    ``next_power_of_2(C / G)`` channels per group and masked only the channels past ``C`` (PR #4985). Only
    group sizes that are not a power of two are wrong, and the last group never is."""

    bug = "group statistics read into the next group's channels (group size not a power of two)"
    origin = "FlagGems group_norm Triton kernel (PR #4985)"
    link = "https://github.com/flagos-ai/FlagGems/pull/4985"

    def statistics(self, rows):
        n, groups, m = rows.shape
        per_group = self.spec.num_channels // groups
        lanes = 1 << (per_group - 1).bit_length()  # the kernel's block of channels
        if lanes == per_group:
            return super().statistics(rows)
        flat = rows.reshape(n, groups * m)  # the sample's channels in order, each one's positions together
        blocks = [flat[:, g * m:g * m + m // per_group * lanes] for g in range(groups)]  # clipped at C
        mean = np.stack([b.sum(axis=1) for b in blocks], axis=1)[..., None] / m
        var = np.stack([((b - mean[:, g]) ** 2).sum(axis=1) for g, b in enumerate(blocks)], axis=1)[..., None] / m
        return mean.astype(rows.dtype), var.astype(rows.dtype)


MUTANTS: dict[str, tuple[type[GroupNorm], str]] = {
    "groupnorm.channels_last_grouped_as_channels_first": (ChannelsLastGroupedAsChannelsFirst, "torch_groupnorm"),
    "groupnorm.eps_outside_sqrt": (EpsOutsideSqrt, "torch_groupnorm"),
    "groupnorm.unbiased_variance": (UnbiasedVariance, "torch_groupnorm"),
    "groupnorm.half_precision_accumulation": (HalfPrecisionAccumulation, "torch_groupnorm"),
    "groupnorm.parameters_per_group": (ParametersPerGroup, "torch_groupnorm"),
    "groupnorm.statistics_past_the_group": (StatisticsPastTheGroup, "torch_groupnorm"),
    "instancenorm.statistics_across_the_batch": (StatisticsAcrossTheBatch, "torch_instancenorm"),
}

IMPLEMENTATIONS = [GroupNormImplementation(GroupNorm, "torch_groupnorm"),
                   GroupNormImplementation(GroupNorm, "torch_instancenorm")] + [
    GroupNormImplementation(layer, convention, name) for name, (layer, convention) in MUTANTS.items()
]
