"""The stateful reference layer: the pure functions of :mod:`reference.batchnorm` plus the running state of
any convention record (:mod:`reference.running`)."""

from __future__ import annotations

import numbers

import numpy as np

from . import batchnorm as bn
from .conventions import REQUIRED, Convention, check_eps, check_momentum, get_convention
from .running import initial_running_state, running_statistics, update_running_state

__all__ = ["BatchNorm"]

_DEFAULT = object()  # "use the convention's default" (None is a meaningful momentum)


def _per_channel(layer: BatchNorm, name: str, value: object) -> np.ndarray:
    """``value`` as a validated float64 copy of shape (C,), so a layer never holds a wrongly shaped or
    aliased buffer."""
    value = np.array(value)
    if value.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {value.dtype}")
    value = value.astype(np.float64)
    if value.shape != (layer.num_features,):
        raise ValueError(f"{name} must have shape ({layer.num_features},), got {value.shape}")
    return value


class BatchNorm:
    """Reference BatchNorm layer over any input of rank >= 2.

    Args:
        num_features: number of channels C.
        convention: a :class:`Convention` record or a built-in's name; fixes the meaning of ``momentum``,
            the running state (:attr:`Convention.running_fields`) and the defaults below. An argument whose
            default the convention does not give (:data:`REQUIRED`) must be passed.
        momentum: in the convention's own meaning; ``None`` (PyTorch) is the cumulative average.
        eps: added to the variance before the square root.
        affine: learnable ``gamma`` (ones) and ``beta`` (zeros); otherwise both are ``None``.
        track_running_stats: keep the convention's running state (``running_mean`` zeros, ``running_var``
            ones, a counter at 0; see :mod:`reference.running`); otherwise each field is ``None`` and
            inference normalizes with the batch statistics too.
        channel_axis: position of the channel axis; negative values count from the end.

    Every field of the state is an attribute (``bn.running_var``, ``bn.num_batches_tracked``); assignment
    validates and copies, and assigning into an array (``bn.running_var[:] = 0``) works as with any NumPy
    array. ``forward(x, training)`` returns a new float64 array; ``backward(dy)`` after it returns ``dx`` and
    sets ``dgamma`` and ``dbeta``. Every check happens before any state changes, so an error leaves the
    layer as it was.
    """

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
        conv = get_convention(convention)
        given = {"momentum": momentum, "eps": eps, "channel_axis": channel_axis}
        values = {k: conv.defaults()[k] if v is _DEFAULT else v for k, v in given.items()}
        if missing := [k for k, v in values.items() if v is REQUIRED]:
            raise TypeError(f"the {conv.name!r} convention has no default for {', '.join(missing)}: pass it")
        axis = values["channel_axis"]
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"channel_axis must be an integer, got {type(axis).__name__}")
        c = int(num_features)
        fields = {
            "convention": conv, "num_features": c, "momentum": check_momentum(values["momentum"], conv),
            "eps": check_eps(values["eps"]), "channel_axis": int(axis), "affine": bool(affine),
            "track_running_stats": bool(track_running_stats), "dgamma": None, "dbeta": None, "_saved": None,
            "gamma": np.ones(c) if affine else None, "beta": np.zeros(c) if affine else None,
            "_running": initial_running_state(c, conv) if track_running_stats else {},
        }
        self.__dict__.update(fields)

    # -- the state ---------------------------------------------------------------------------------
    @property
    def state_fields(self) -> tuple[str, ...]:
        """Every field of the state: the parameters, then the convention's running state."""
        return ("gamma", "beta", *self.convention.running_fields)

    @property
    def state(self) -> dict[str, np.ndarray | int | None]:
        """A copy of every field of the state (``None`` where the layer has none)."""
        return {name: _copy(getattr(self, name)) for name in self.state_fields}

    def __getattr__(self, name: str) -> object:  # the running fields, which depend on the convention
        conv = self.__dict__.get("convention")
        if conv is not None and name in conv.running_fields:
            return self.__dict__["_running"].get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("gamma", "beta"):
            enabled, flag = self.affine, "affine"
        elif name in self.convention.running_fields:
            enabled, flag = self.track_running_stats, "track_running_stats"
        else:
            raise AttributeError(f"{name} is not a field of the state {self.state_fields}")
        if (value is None) == enabled:
            want = "a value" if enabled else "None"
            raise ValueError(f"{name} must be {want} when {flag}={enabled}")
        if value is None:
            return
        if name == self.convention.counter:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
            value = int(value)
        else:
            value = _per_channel(self, name, value)
        (self._running if name in self.convention.running_fields else self.__dict__)[name] = value

    # -- the calls ---------------------------------------------------------------------------------
    def _check_input(self, x: object) -> tuple[np.ndarray, int]:
        x = bn.check_array(x)
        axis = bn.channel_axis_index(x.ndim, self.channel_axis)
        if x.shape[axis] != self.num_features:
            raise ValueError(
                f"expected {self.num_features} channels on axis {self.channel_axis}, got input of shape {x.shape}"
            )
        return x, axis

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """Normalize ``x``; in training mode also update the running state."""
        x, axis = self._check_input(x)
        use_batch_stats = training or not self.track_running_stats
        update = training and self.track_running_stats
        count = x.size // self.num_features
        conv = self.convention
        if use_batch_stats:
            if count == 0:
                raise ValueError(f"cannot normalize an empty batch with batch statistics (input shape {x.shape})")
            # PyTorch checks whenever it normalizes with batch statistics, updating or not.
            if count <= conv.running_var_ddof:
                raise ValueError(
                    f"expected more than 1 value per channel when using batch statistics under the "
                    f"{conv.name!r} convention (Bessel-corrected running variance), got input of shape {x.shape}"
                )
            y, mean, var = bn.forward_training(x, self.gamma, self.beta, self.eps, axis)
        else:
            mean, var = running_statistics(self._running, self.momentum, conv)
            y = bn.forward_inference(x, mean, var, self.gamma, self.beta, self.eps, axis)
        if update:
            self.__dict__["_running"] = update_running_state(self._running, mean, var, count, self.momentum, conv)
        # Saved for backward: copies of everything dx depends on, so that later assignments (to the
        # caller's array, gamma or eps) cannot change the gradient of the forward that ran.
        gamma = None if self.gamma is None else self.gamma.copy()
        self.__dict__["_saved"] = (np.array(x), axis, use_batch_stats, mean.copy(), var.copy(), gamma, self.eps)
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient of ``sum(y * dy)`` w.r.t. the last forward's input; sets ``dgamma`` and ``dbeta``."""
        if self._saved is None:
            raise ValueError("backward() called before forward(): there is no saved input to differentiate")
        x, axis, batch_stats, mean, var, gamma, eps = self._saved
        backward = bn.backward_training if batch_stats else bn.backward_inference
        dx, dgamma, dbeta = backward(dy, x, mean, var, gamma, eps, axis)
        self.__dict__.update(dgamma=dgamma if self.affine else None, dbeta=dbeta if self.affine else None)
        return dx

    def __repr__(self) -> str:
        return (
            f"BatchNorm({self.num_features}, convention={self.convention.name!r}, momentum={self.momentum}, "
            f"eps={self.eps}, affine={self.affine}, track_running_stats={self.track_running_stats}, "
            f"channel_axis={self.channel_axis})"
        )


def _copy(value: object) -> object:
    return value.copy() if isinstance(value, np.ndarray) else value
