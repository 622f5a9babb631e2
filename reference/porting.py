"""Carrying a trained BatchNorm from one convention to another: :func:`port`.

What a BatchNorm is, beyond its (C,) arrays, is a handful of settings whose meaning differs between
conventions (:class:`~reference.conventions.Convention`). :func:`port` translates all of them:

- ``gamma``, ``beta``: per channel, the same meaning everywhere: copied.
- the running statistics: the target holds what makes its inference read the mean and variance the
  source's inference reads (:func:`reference.running.running_statistics`), so the two give the same
  output: the variance copied (or its square root where the target averages the standard deviation; the
  hidden averages times the debiasing factor where it debiases). What differs is how training *updates*
  them (Bessel-corrected or biased), and after porting further training follows the target's own rule. To
  make the ported variance what the target would itself have accumulated, pass ``batch_size``: the value is
  multiplied by ``(n - ddof_source) / (n - ddof_target)``, which needs the number ``n`` of values per channel
  in the source's training batches (batch size times spatial size), which a state does not record; it also
  scales the part of the running value that came from its initial value (1) rather than from batches: the
  error is at most ``|1 - factor| * (1 - w)**k * v0`` after ``k`` steps of new-batch weight ``w`` from the
  initial variance ``v0``, never more than ``|1 - factor| * v0`` (:func:`rescale_error_bound`).
- the batch counter: carried where both keep one; a debiased target without one from the source counts
  enough batches that its debiasing factor is 1 to float64 precision (so further training continues the
  average as the source's would); otherwise the target keeps the counter it was built with.
- ``eps``: the target must be built with the source's eps (the defaults are 1e-5 in PyTorch, ONNX and
  Flax, 1e-3 in Keras): it is carried in :class:`Settings`.
- ``momentum``: converted between the conventions' meanings (``m -> 1 - m`` between PyTorch and the
  others, :func:`reference.convert_momentum`). PyTorch's ``momentum=None`` (a cumulative average whose
  next weight is ``1 / (num_batches_tracked + 1)``) has no fixed-momentum equivalent in other
  conventions: :func:`port` raises unless ``momentum`` is given.
- channel axis: the state is per channel and does not depend on it; the target is built with its own
  convention's axis (``channel_axis``) and its inputs are the source's with the channels moved
  (:func:`move_channels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .conventions import REQUIRED, Convention, check_eps, check_momentum, convert_momentum, get_convention
from .running import running_state_for, running_statistics

__all__ = ["Settings", "move_channels", "port", "rescale_error_bound", "variance_factor"]


@dataclass(frozen=True)
class Settings:
    """A BatchNorm's settings in one convention: ``momentum`` as that convention's constructor takes it
    (``None``: PyTorch's cumulative average), ``eps`` and the channel axis of its inputs."""

    convention: Convention
    momentum: float | None
    eps: float
    channel_axis: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "convention", get_convention(self.convention))  # a name gives the built-in
        check_momentum(self.momentum, self.convention)
        check_eps(self.eps)
        if self.channel_axis not in (1, -1):
            raise ValueError(f"channel_axis must be 1 (channels first) or -1 (channels last), got {self.channel_axis}")


def variance_factor(source: str | Convention, target: str | Convention, batch_size: int) -> float:
    """What turns a running variance accumulated under ``source``'s correction into ``target``'s, for
    batches of ``batch_size`` values per channel: ``(n - ddof_source) / (n - ddof_target)``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2 (values per channel per batch), got {batch_size!r}")
    src, dst = get_convention(source), get_convention(target)
    return (batch_size - src.running_var_ddof) / (batch_size - dst.running_var_ddof)


def rescale_error_bound(factor: float, initial_var: np.ndarray | float, new_batch_weight: float,
                        steps: int | None = None) -> np.ndarray:
    """Bound on ``|rescaled - as trained by the target|`` after :func:`port` with ``batch_size``: the
    initial value's share ``(1 - w)**k * v0`` of the running variance is rescaled too, though no batch
    produced it. Unknown ``steps``: the bound for any number of steps."""
    share = 1.0 if steps is None else (1.0 - new_batch_weight) ** steps
    return abs(1.0 - factor) * share * np.abs(np.asarray(initial_var, dtype=np.float64))


def port(state: Mapping[str, object], source: Settings, target: str | Convention, *, momentum: float | None = None,
         channel_axis: int | None = None, batch_size: int | None = None) -> tuple[dict[str, object], Settings]:
    """``state`` of a BatchNorm with ``source`` settings, as the ``target`` convention holds it (a new dict of
    float64 arrays and counters), and the settings to build the target with (see the module docstring).

    ``momentum`` overrides the translated momentum, in the target's convention (required when the
    source's is PyTorch's ``None``); ``channel_axis`` overrides the target convention's default axis;
    ``batch_size`` rescales the running variance between corrections (default: copied, which keeps the
    inference output). Bad input raises ``ValueError`` naming it; nothing is modified in place.
    """
    src, dst = source.convention, get_convention(target)
    if momentum is None:
        if source.momentum is None and not dst.cumulative_momentum:
            raise ValueError(f"momentum=None (a cumulative average) has no fixed-momentum equivalent in the "
                             f"{dst.name!r} convention: pass momentum= in the target's convention")
        momentum = convert_momentum(source.momentum, src, dst)
    else:
        momentum = check_momentum(momentum, dst)
    if channel_axis is None:
        if dst.channel_axis is REQUIRED:
            raise ValueError(f"the {dst.name!r} convention has no default channel axis: pass channel_axis=")
        channel_axis = dst.channel_axis
    settings = Settings(dst, momentum, source.eps, channel_axis)
    ported: dict[str, object] = {name: np.array(state[name], dtype=np.float64)
                                 for name in ("gamma", "beta") if state.get(name) is not None}
    if state.get("running_mean") is None:  # no running statistics to carry
        return ported, settings
    mean, var = running_statistics(state, source.momentum, src)
    if batch_size is not None:
        var = var * variance_factor(src, dst, batch_size)
    counter = state.get(src.counter) if src.counter and dst.counter else None  # None: a state without one
    counter = None if counter is None else int(counter)
    return ported | running_state_for(mean, var, momentum, dst, counter), settings


def move_channels(x: np.ndarray, source_axis: int, target_axis: int) -> np.ndarray:
    """An input laid out for ``source_axis`` laid out for ``target_axis`` (channels first 1, last -1)."""
    return x if source_axis % x.ndim == target_axis % x.ndim else np.moveaxis(x, source_axis, target_axis)
