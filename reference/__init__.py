"""The specification: a float64 NumPy BatchNorm with every framework's running-statistics convention.

Public API: :class:`BatchNorm` (stateful layer), the pure functions of :mod:`reference.batchnorm` (second
order: :func:`hvp_training`), and the conventions (:data:`CONVENTIONS`, :class:`Convention`,
:func:`get_convention`, :func:`convert_momentum`), and synchronized BatchNorm over a world of ranks
(:mod:`reference.sharding`: :func:`split_batch`, :func:`synchronized_training`).

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
    update_running_statistics,
)
from .conventions import CONVENTIONS, Convention, convert_momentum, get_convention
from .layer import BatchNorm
from .sharding import RankExpectation, split_batch, synchronized_training

__all__ = [
    "BatchNorm",
    "CONVENTIONS",
    "Convention",
    "backward_inference",
    "backward_training",
    "batch_statistics",
    "channel_axis_index",
    "convert_momentum",
    "forward_inference",
    "forward_training",
    "get_convention",
    "hvp_training",
    "normalize",
    "RankExpectation",
    "split_batch",
    "synchronized_training",
    "update_running_statistics",
]
