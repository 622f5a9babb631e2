"""Argument checks shared by the reference's functions: every bad input raises a ``TypeError`` or
``ValueError`` naming the problem before any work or state change happens."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["channel_axis_index", "check_array", "check_dy", "per_channel"]


def channel_axis_index(ndim: int, channel_axis: int) -> int:
    """Normalize ``channel_axis`` (negative allowed) for an input of rank ``ndim``."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral):
        raise TypeError(f"channel_axis must be an integer, got {type(channel_axis).__name__}")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for an input of rank {ndim}")
    return int(channel_axis) % ndim


def check_array(x: object, name: str = "x", *, min_rank: int = 2) -> np.ndarray:
    """Return ``x`` as an ndarray of a real floating dtype, or raise a clear error."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
    if x.ndim < min_rank:
        raise ValueError(f"{name} must have rank >= {min_rank} (batch, channels, ...), got shape {x.shape}")
    return x


def check_dy(dy: object, x: np.ndarray, name: str = "dy") -> np.ndarray:
    """A cotangent or tangent of the shape of the forward input ``x``."""
    dy = check_array(dy, name, min_rank=0)
    if dy.shape != x.shape:
        raise ValueError(f"{name} must have the shape of the forward input {x.shape}, got {dy.shape}")
    return dy


def per_channel(v: object | None, c: int, name: str, default: float | None = None) -> np.ndarray:
    """A per-channel array as float64 of shape (C,); ``None`` means the constant ``default``."""
    if v is None:
        if default is None:
            raise ValueError(f"{name} is required")
        return np.full(c, default)
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (c,):
        raise ValueError(f"{name} must have shape ({c},), got {v.shape}")
    return v
