"""InstanceNorm with running statistics: :class:`InstanceNorm`, the state of :class:`~reference.BatchNorm` around
the normalization of :func:`~reference.group_norm` with one group per channel.

PyTorch's ``InstanceNorm*d(track_running_stats=True)`` (and ``F.instance_norm`` given running statistics) keeps
BatchNorm's running averages, but what a training batch moves them towards is the mean over the samples of each
(sample, channel)'s own statistics: the instance means, and the instance variances (each Bessel-corrected over
its own values where the convention says so; every instance has as many values, so the mean of the corrected
variances is the corrected mean of the biased ones). Training normalizes each instance with its own statistics;
inference normalizes with the running statistics, exactly as BatchNorm's inference does. Without running
statistics it is InstanceNorm in both modes. PyTorch computes it as BatchNorm over the input viewed as one sample
of ``N x C`` channels, with the running statistics repeated per sample and averaged back: the same numbers
(``tests/test_instancenorm.py`` holds the reference to that identity).
"""

from __future__ import annotations

import numpy as np

from .conventions import Convention
from .groupnorm import group_norm, group_norm_backward, group_norm_statistics
from .layer import BatchNorm
from .running import update_running_state

__all__ = ["INSTANCENORM_RUNNING", "InstanceNorm"]

# PyTorch's: BatchNorm's update rule and defaults, but no batch counter (the modules register
# ``num_batches_tracked`` and never advance it) and so no cumulative average (``momentum=None`` is taken as 0).
INSTANCENORM_RUNNING = Convention(
    "torch_instancenorm_running", "new", 0.1, 1e-5, 1, running_var_ddof=1,
    frameworks="PyTorch nn.InstanceNorm*d(track_running_stats=True), F.instance_norm with running statistics")


class InstanceNorm(BatchNorm):
    """BatchNorm's constructor, state and inference; training (and any call without running statistics)
    normalizes per instance. Every check happens before any state changes."""

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """Normalize ``x``; in training mode also update the running state."""
        x, axis = self._check_input(x)
        if not training and self.track_running_stats:
            return super().forward(x, training=False)
        c = self.num_features
        per_instance = x.size // max(x.shape[0] * c, 1)
        if x.size == 0:
            raise ValueError(f"cannot normalize an empty batch with instance statistics (input shape {x.shape})")
        # As BatchNorm's: a Bessel-corrected convention refuses whenever it normalizes with the batch's own
        # statistics, updating or not.
        if per_instance <= self.convention.running_var_ddof:
            raise ValueError(
                f"expected more than 1 value per instance when normalizing with instance statistics under the "
                f"{self.convention.name!r} convention (Bessel-corrected running variance), got input of shape "
                f"{x.shape}")
        update = training and self.track_running_stats
        y = group_norm(x, self.gamma, self.beta, self.eps, c, axis)
        if update:
            mean, var = group_norm_statistics(x, c, axis)
            self.__dict__["_running"] = update_running_state(self._running, mean.mean(axis=0), var.mean(axis=0),
                                                             per_instance, self.momentum, self.convention)
        # Saved for backward, as BatchNorm's: copies, so later assignments cannot change the gradient.
        gamma = None if self.gamma is None else self.gamma.copy()
        self.__dict__["_saved"] = (np.array(x), axis, "instance", None, None, gamma, self.eps)
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient of ``sum(y * dy)`` w.r.t. the last forward's input; sets ``dgamma`` and ``dbeta``."""
        if self._saved is None or self._saved[2] != "instance":
            return super().backward(dy)
        x, axis, _, _, _, gamma, eps = self._saved
        dx, dgamma, dbeta = group_norm_backward(dy, x, gamma, eps, self.num_features, axis)
        self.__dict__.update(dgamma=dgamma if self.affine else None, dbeta=dbeta if self.affine else None)
        return dx

    def __repr__(self) -> str:
        return "Instance" + super().__repr__().removeprefix("Batch")
