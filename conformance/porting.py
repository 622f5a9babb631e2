"""Carrying a trained BatchNorm from one implementation to another: :func:`port`.

What a BatchNorm is, beyond its (C,) arrays, is a handful of settings whose meaning differs between
frameworks (``reference.CONVENTIONS``). :func:`port` translates all of them:

- ``gamma``, ``beta``, ``running_mean``: per channel, the same meaning everywhere: copied.
- ``running_var``: inference normalizes with the stored value in every convention, so it is copied as is
  and the target's inference output equals the source's. What differs is how training *updates* it: a
  Bessel convention (PyTorch, tf-keras fused) blends in ``var * n / (n - 1)``, the others the biased
  ``var``. After porting, further training follows the target's own rule. To make the ported value what
  the target would itself have accumulated, pass ``batch_size``: the value is multiplied by
  ``(n - 1) / n`` (Bessel to biased) or ``n / (n - 1)`` (biased to Bessel). That factor needs the
  number ``n`` of values per channel in the source's training batches (batch size times spatial size),
  which a state does not record, and it also scales the part of the running value that came from its
  initial value (1) rather than from batches: the error is at most ``|1 - factor| * (1 - w)**k * v0``
  after ``k`` steps of new-batch weight ``w`` from the initial variance ``v0``, never more than
  ``|1 - factor| * v0`` (:func:`rescale_error_bound`).
- ``eps``: the target must be built with the source's eps (the defaults are 1e-5 in PyTorch, ONNX and
  Flax, 1e-3 in Keras): it is carried in :class:`Settings`.
- ``momentum``: converted between the conventions' meanings (``m -> 1 - m`` between PyTorch and the
  others, :func:`reference.convert_momentum`). PyTorch's ``momentum=None`` (a cumulative average whose
  next weight is ``1 / (num_batches_tracked + 1)``) has no fixed-momentum equivalent in other
  conventions: :func:`port` raises unless ``momentum`` is given.
- channel axis: the state is per channel and does not depend on it; the target is built with its own
  convention's axis (``channel_axis``) and its inputs are the source's with the channels moved
  (:func:`move_channels`).

States are plain float64 arrays (:class:`~conformance.adapters.base.State`), so a port crosses processes
as easily as frameworks (the suite's implementations run in worker processes of their own).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from reference import CONVENTIONS, convert_momentum, get_convention

from .adapters.base import State

__all__ = ["Settings", "move_channels", "port", "rescale_error_bound", "variance_factor"]


@dataclass(frozen=True)
class Settings:
    """A BatchNorm's settings in one convention: ``momentum`` as that convention's constructor takes it
    (``None``: PyTorch's cumulative average), ``eps`` and the channel axis of its inputs."""

    convention: str
    momentum: float | None
    eps: float
    channel_axis: int

    def __post_init__(self) -> None:
        get_convention(self.convention)  # ValueError naming the known conventions
        if self.channel_axis not in (1, -1):
            raise ValueError(f"channel_axis must be 1 (channels first) or -1 (channels last), got {self.channel_axis}")


def variance_factor(source: str, target: str, batch_size: int) -> float:
    """What turns a running variance accumulated under ``source``'s Bessel rule into ``target``'s, for
    batches of ``batch_size`` values per channel: ``(n-1)/n``, ``n/(n-1)`` or 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2 (values per channel per batch), got {batch_size!r}")
    src, dst = CONVENTIONS[source].bessel, CONVENTIONS[target].bessel
    n = batch_size
    return 1.0 if src == dst else ((n - 1) / n if src else n / (n - 1))


def rescale_error_bound(factor: float, initial_var: np.ndarray | float, new_batch_weight: float,
                        steps: int | None = None) -> np.ndarray:
    """Bound on ``|rescaled - as trained by the target|`` after :func:`port` with ``batch_size``: the
    initial value's share ``(1 - w)**k * v0`` of the running variance is rescaled too, though no batch
    produced it. Unknown ``steps``: the bound for any number of steps."""
    share = 1.0 if steps is None else (1.0 - new_batch_weight) ** steps
    return abs(1.0 - factor) * share * np.abs(np.asarray(initial_var, dtype=np.float64))


def port(state: State, source: Settings, target: str, *, momentum: float | None = None,
         channel_axis: int | None = None, batch_size: int | None = None) -> tuple[State, Settings]:
    """``state`` of a BatchNorm with ``source`` settings, as the ``target`` convention holds it, and the
    settings to build the target with (see the module docstring for each field).

    ``momentum`` overrides the translated momentum, in the target's convention (required when the
    source's is PyTorch's ``None``); ``channel_axis`` overrides the target convention's default axis;
    ``batch_size`` rescales the running variance between Bessel conventions (default: copied, which
    keeps the inference output). ``num_batches_tracked`` is carried only into a convention that has a
    cumulative average. Bad input raises ``ValueError`` naming it; nothing is modified in place.
    """
    dst = get_convention(target)
    if momentum is None:
        if source.momentum is None and not dst.cumulative_momentum:
            raise ValueError(f"momentum=None (a cumulative average) has no fixed-momentum equivalent in the {target!r} "
                             "convention: pass momentum= in the target's convention")
        momentum = convert_momentum(source.momentum, source.convention, target)
    else:
        momentum = convert_momentum(momentum, target, target)  # validated in the target's convention
    settings = Settings(target, momentum, source.eps, dst.channel_axis if channel_axis is None else channel_axis)
    arrays = {name: None if getattr(state, name) is None else np.array(getattr(state, name), dtype=np.float64)
              for name in ("gamma", "beta", "running_mean", "running_var")}
    if batch_size is not None and arrays["running_var"] is not None:
        arrays["running_var"] = arrays["running_var"] * variance_factor(source.convention, target, batch_size)
    tracked = state.num_batches_tracked if dst.cumulative_momentum else None
    return replace(state, **arrays, num_batches_tracked=tracked), settings


def move_channels(x: np.ndarray, source_axis: int, target_axis: int) -> np.ndarray:
    """An input laid out for ``source_axis`` laid out for ``target_axis`` (channels first 1, last -1)."""
    return x if source_axis % x.ndim == target_axis % x.ndim else np.moveaxis(x, source_axis, target_axis)
