"""The stateful reference layer: the pure functions of :mod:`reference.batchnorm` plus running state."""

from __future__ import annotations

import numbers

import numpy as np

from . import batchnorm as bn
from .conventions import Convention, check_eps, check_momentum, get_convention

__all__ = ["BatchNorm"]

_DEFAULT = object()  # "use the convention's default" (None is a meaningful momentum)


class _PerChannel:
    """A float64 array of shape (C,) that exists only while the layer's ``flag`` is on.

    Assignment validates and copies, so a layer never holds a wrongly shaped or aliased buffer;
    assigning into the array (``layer.running_var[:] = 0``) works as with any NumPy array.
    """

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, layer: object, owner: type | None = None) -> np.ndarray | None:
        return self if layer is None else layer.__dict__[self.name]

    def __set__(self, layer: object, value: object) -> None:
        enabled = getattr(layer, self.flag)
        if (value is None) == enabled:
            want = "an array" if enabled else "None"
            raise ValueError(f"{self.name} must be {want} when {self.flag}={enabled}")
        if value is not None:
            value = np.array(value)
            if value.dtype.kind not in "fiu":
                raise TypeError(f"{self.name} must be real numbers, got dtype {value.dtype}")
            value = value.astype(np.float64)
            if value.shape != (layer.num_features,):
                raise ValueError(f"{self.name} must have shape ({layer.num_features},), got {value.shape}")
        layer.__dict__[self.name] = value


class BatchNorm:
    """Reference BatchNorm layer over any input of rank >= 2.

    Args:
        num_features: number of channels C.
        convention: a name from :data:`reference.CONVENTIONS` or a :class:`Convention`; fixes the
            meaning of ``momentum``, the Bessel correction of ``running_var`` and the defaults below.
        momentum: in the convention's own meaning; ``None`` (PyTorch) is the cumulative average.
        eps: added to the variance before the square root.
        affine: learnable ``gamma`` (ones) and ``beta`` (zeros); otherwise both are ``None``.
        track_running_stats: keep ``running_mean`` (zeros) and ``running_var`` (ones); otherwise both
            are ``None`` and inference normalizes with the batch statistics too.
        channel_axis: position of the channel axis; negative values count from the end.

    ``forward(x, training)`` returns a new float64 array; ``backward(dy)`` after it returns ``dx`` and
    sets ``dgamma`` and ``dbeta``. Every check happens before any state changes, so an error leaves
    the layer as it was.
    """

    gamma = _PerChannel("affine")
    beta = _PerChannel("affine")
    running_mean = _PerChannel("track_running_stats")
    running_var = _PerChannel("track_running_stats")

    def __init__(
        self,
        num_features: int,
        *,
        convention: str | Convention = "torch",
        momentum: float | None = _DEFAULT,  # type: ignore[assignment]
        eps: float = _DEFAULT,  # type: ignore[assignment]
        affine: bool = True,
        track_running_stats: bool = True,
        channel_axis: int = _DEFAULT,  # type: ignore[assignment]
    ) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral):
            raise TypeError(f"num_features must be an integer, got {type(num_features).__name__}")
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.convention = get_convention(convention)
        c = int(num_features)
        self.num_features = c
        self.momentum = check_momentum(
            self.convention.default_momentum if momentum is _DEFAULT else momentum, self.convention
        )
        self.eps = check_eps(self.convention.default_eps if eps is _DEFAULT else eps)
        axis = self.convention.channel_axis if channel_axis is _DEFAULT else channel_axis
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"channel_axis must be an integer, got {type(axis).__name__}")
        self.channel_axis = int(axis)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.gamma = np.ones(c) if affine else None
        self.beta = np.zeros(c) if affine else None
        self.running_mean = np.zeros(c) if track_running_stats else None
        self.running_var = np.ones(c) if track_running_stats else None
        self.num_batches_tracked = 0
        self.dgamma: np.ndarray | None = None
        self.dbeta: np.ndarray | None = None
        self._saved: tuple | None = None

    def _check_input(self, x: object) -> tuple[np.ndarray, int]:
        x = bn.check_array(x)
        axis = bn.channel_axis_index(x.ndim, self.channel_axis)
        if x.shape[axis] != self.num_features:
            raise ValueError(
                f"expected {self.num_features} channels on axis {self.channel_axis}, got input of shape {x.shape}"
            )
        return x, axis

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """Normalize ``x``; in training mode also update the running statistics."""
        x, axis = self._check_input(x)
        use_batch_stats = training or not self.track_running_stats
        update = training and self.track_running_stats
        count = x.size // self.num_features
        if use_batch_stats:
            if count == 0:
                raise ValueError(f"cannot normalize an empty batch with batch statistics (input shape {x.shape})")
            # PyTorch checks whenever it normalizes with batch statistics, updating or not.
            if self.convention.bessel and count < 2:
                raise ValueError(
                    f"expected more than 1 value per channel when using batch statistics under the "
                    f"{self.convention.name!r} convention (Bessel-corrected running variance), "
                    f"got input of shape {x.shape}"
                )
            y, mean, var = bn.forward_training(x, self.gamma, self.beta, self.eps, axis)
        else:
            mean, var = self.running_mean, self.running_var
            y = bn.forward_inference(x, mean, var, self.gamma, self.beta, self.eps, axis)
        if update:
            n = self.num_batches_tracked + 1
            self.__dict__["running_mean"], self.__dict__["running_var"] = bn.update_running_statistics(
                self.running_mean, self.running_var, mean, var, count, self.momentum, self.convention, n
            )
            self.num_batches_tracked = n
        # Saved for backward: copies of everything dx depends on, so that later assignments (to the
        # caller's array, gamma or eps) cannot change the gradient of the forward that ran.
        gamma = None if self.gamma is None else self.gamma.copy()
        self._saved = (np.array(x), axis, use_batch_stats, mean.copy(), var.copy(), gamma, self.eps)
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient of ``sum(y * dy)`` w.r.t. the last forward's input; sets ``dgamma`` and ``dbeta``."""
        if self._saved is None:
            raise ValueError("backward() called before forward(): there is no saved input to differentiate")
        x, axis, batch_stats, mean, var, gamma, eps = self._saved
        backward = bn.backward_training if batch_stats else bn.backward_inference
        dx, dgamma, dbeta = backward(dy, x, mean, var, gamma, eps, axis)
        self.dgamma, self.dbeta = (dgamma, dbeta) if self.affine else (None, None)
        return dx

    def __repr__(self) -> str:
        return (
            f"BatchNorm({self.num_features}, convention={self.convention.name!r}, momentum={self.momentum}, "
            f"eps={self.eps}, affine={self.affine}, track_running_stats={self.track_running_stats}, "
            f"channel_axis={self.channel_axis})"
        )
