"""Running-statistics conventions of each framework, as named, inspectable data.

A convention fixes everything that differs between frameworks while the normalization itself is the
same: which value ``momentum`` weights, whether the stored running variance is Bessel-corrected, the
defaults for momentum, eps and the channel axis. Conventions never change the training-mode output,
which always normalizes with the biased batch variance.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

__all__ = ["Convention", "CONVENTIONS", "get_convention", "convert_momentum"]


@dataclass(frozen=True)
class Convention:
    """How one framework keeps its running statistics.

    Attributes:
        name: registry key, e.g. ``"torch"``.
        frameworks: who uses it, for tables and reports.
        momentum_weights: ``"new"`` when ``momentum`` multiplies the batch statistic
            (``run = (1 - m) * run + m * batch``, PyTorch), ``"old"`` when it multiplies the running
            value (``run = m * run + (1 - m) * batch``, Keras, ONNX, Flax).
        default_momentum: the framework's default.
        default_eps: the framework's default.
        channel_axis: the framework's default channel axis.
        bessel: the stored running variance is the unbiased estimate ``var * n / (n - 1)``. Such a
            convention cannot train on one value per channel (PyTorch raises ``ValueError``).
        cumulative_momentum: ``momentum=None`` is allowed and means the cumulative moving average
            with factor ``1 / num_batches_tracked`` (PyTorch).
    """

    name: str
    frameworks: str
    momentum_weights: Literal["new", "old"]
    default_momentum: float
    default_eps: float
    channel_axis: int
    bessel: bool
    cumulative_momentum: bool = False

    def new_value_weight(self, momentum: float | None, num_batches_tracked: int) -> float:
        """Weight ``w`` of the batch statistic in ``run = (1 - w) * run + w * batch``.

        ``num_batches_tracked`` counts the current batch (it is at least 1 when called).
        """
        if momentum is None:
            return 1.0 / num_batches_tracked
        return momentum if self.momentum_weights == "new" else 1.0 - momentum


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("torch", "PyTorch nn.BatchNorm*d, F.batch_norm, SyncBatchNorm", "new", 0.1, 1e-5, 1,
                   bessel=True, cumulative_momentum=True),
        Convention("keras", "Keras 3 (all backends), tf-keras fused=False", "old", 0.99, 1e-3, -1,
                   bessel=False),
        Convention("tf_keras_fused", "tf-keras fused=True (tf.compat.v1.nn.fused_batch_norm)", "old", 0.99,
                   1e-3, -1, bessel=True),
        Convention("onnx", "ONNX BatchNormalization (opset >= 14)", "old", 0.9, 1e-5, 1, bessel=False),
        Convention("flax", "Flax linen/nnx BatchNorm", "old", 0.99, 1e-5, -1, bessel=False),
    )
}


def get_convention(convention: str | Convention) -> Convention:
    """Return the named convention (or the given one), with a clear error for unknown names."""
    if isinstance(convention, Convention):
        return convention
    if not isinstance(convention, str):
        raise TypeError(f"convention must be a name or a Convention, got {type(convention).__name__}")
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise ValueError(
            f"unknown convention {convention!r}; known conventions: {', '.join(sorted(CONVENTIONS))}"
        ) from None


def check_momentum(momentum: float | None, convention: Convention) -> float | None:
    """Validate a momentum value for ``convention``; return it as a float (or None)."""
    if momentum is None:
        if not convention.cumulative_momentum:
            raise ValueError(
                f"momentum=None (cumulative average) is not part of the {convention.name!r} convention"
            )
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a real number or None, got {type(momentum).__name__}")
    if not (0.0 <= momentum <= 1.0):  # also rejects NaN
        raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
    return float(momentum)


def convert_momentum(momentum: float | None, source: str | Convention, target: str | Convention) -> float | None:
    """Express ``momentum`` given in ``source``'s convention in ``target``'s convention.

    The update rules are ``(1 - m) * run + m * batch`` ("new") and ``m * run + (1 - m) * batch``
    ("old"), so converting between the two styles is ``m -> 1 - m``; within a style it is the identity.
    ``None`` (PyTorch's cumulative average) has no fixed-momentum equivalent and only converts to a
    convention that also supports it.
    """
    src, dst = get_convention(source), get_convention(target)
    momentum = check_momentum(momentum, src)
    if momentum is None:
        return check_momentum(None, dst)
    return momentum if src.momentum_weights == dst.momentum_weights else 1.0 - momentum


def check_eps(eps: float) -> float:
    """Validate eps: a finite, non-negative real."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and non-negative, got {eps!r}")
    return float(eps)
