"""InstanceNorm with running statistics (PyTorch's ``track_running_stats=True``): :data:`INSTANCENORM`.

BatchNorm's operator record (its case, grids, conventions' type, exploration and report vocabulary: the state
and the calls are BatchNorm's) with a reference side of its own, :class:`.reference.InstanceNormReference`:
training normalizes per instance and moves the running averages towards the mean over the samples of the
instance statistics (:class:`reference.InstanceNorm`). InstanceNorm without running statistics is the GroupNorm
operator's, with a group per channel.
"""

import dataclasses
import math

from reference import INSTANCENORM_RUNNING

from ..batchnorm import BATCHNORM, BatchNormCase
from .reference import InstanceNormReference

__all__ = ["INSTANCENORM"]


def draw_case(draw, capabilities) -> BatchNormCase:
    """BatchNorm's random case with at least two values per instance (one is an error to normalize: the
    edge cases hold that)."""
    case = BATCHNORM.draw_case(draw, capabilities)
    if math.prod(case.shape) // max(case.shape[0] * case.num_features, 1) < 2:
        axis = 2 if case.channel_axis == 1 else 1
        case = case.with_(shape=(*case.shape[:axis], 2 * case.shape[axis], *case.shape[axis + 1:]))
    return case


INSTANCENORM = dataclasses.replace(BATCHNORM, name="instancenorm", reference=InstanceNormReference,
                                   conventions={INSTANCENORM_RUNNING.name: INSTANCENORM_RUNNING},
                                   draw_case=draw_case)
