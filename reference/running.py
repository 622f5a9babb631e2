"""The running state of a BatchNorm under any :class:`~reference.conventions.Convention` record: what a layer
starts with, how a training batch updates it, and what inference normalizes with.

State is a dict of named float64 arrays of shape (C,) (``running_mean`` and ``running_var`` or
``running_std``) and, where the convention keeps one, its batch counter (an int). With new-batch weight
``w`` (:meth:`Convention.new_batch_weight`, ``1 / counter`` for the cumulative average):

    run  = (1 - w) * run + w * batch           for the mean, and for var * n / (n - ddof) (or its root)

A plain convention starts at mean 0 and variance 1 and inference reads the averages; a debiased one starts
both hidden averages at 0 and inference reads them divided by ``1 - (1 - w)**counter`` (nothing to debias
before the first batch: the hidden values as they are).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .conventions import Convention, check_momentum, get_convention

__all__ = ["debias_factor", "initial_running_state", "running_state_for", "running_statistics", "saturated_count",
           "update_running_state"]


def initial_running_state(num_features: int, convention: str | Convention) -> dict[str, np.ndarray | int]:
    """The running state a layer is built with under ``convention``."""
    conv = get_convention(convention)
    state: dict[str, np.ndarray | int] = {"running_mean": np.zeros(num_features),
                                          conv.spread_field: np.zeros(num_features) if conv.debiased
                                          else np.ones(num_features)}
    if conv.counter:
        state[conv.counter] = 0
    return state


def update_running_state(state: Mapping[str, object], mean: np.ndarray, var: np.ndarray, count: int,
                         momentum: float | None, convention: str | Convention) -> dict[str, np.ndarray | int]:
    """The running state after one training batch whose statistics (biased variance) over ``count`` values
    per channel are ``mean`` and ``var``; a new dict, ``state`` untouched."""
    conv = get_convention(convention)
    momentum = check_momentum(momentum, conv)
    if count <= conv.running_var_ddof:
        raise ValueError(
            f"the {conv.name!r} convention stores the Bessel-corrected variance, which needs more than "
            f"1 value per channel when training, got {count}"
        )
    step = int(state[conv.counter]) + 1 if conv.counter else 1
    w = conv.new_batch_weight(momentum, step)
    stored = var * (count / (count - conv.running_var_ddof))
    spread = np.sqrt(stored) if conv.averaged_spread == "std" else stored
    new: dict[str, np.ndarray | int] = {
        "running_mean": (1.0 - w) * np.asarray(state["running_mean"], dtype=np.float64) + w * mean,
        conv.spread_field: (1.0 - w) * np.asarray(state[conv.spread_field], dtype=np.float64) + w * spread,
    }
    if conv.counter:
        new[conv.counter] = step
    return new


def debias_factor(counter: int, momentum: float | None, convention: str | Convention) -> float:
    """What a debiased convention divides its hidden averages by after ``counter`` batches: ``1 - (1 -
    w)**counter``; 1 for a plain convention, and before any batch. Computed as ``-expm1(counter * log1p(-w))``,
    which keeps the digits of a small ``w`` (the plain formula loses them, and gives 0 below ``w = 2**-54``)."""
    conv = get_convention(convention)
    if not conv.debiased or counter == 0:
        return 1.0
    w = conv.new_batch_weight(momentum, counter)
    return 1.0 if w == 1.0 else -math.expm1(counter * math.log1p(-w))


def running_statistics(state: Mapping[str, object], momentum: float | None,
                       convention: str | Convention) -> tuple[np.ndarray, np.ndarray]:
    """The mean and variance inference normalizes with, read from the running state."""
    conv = get_convention(convention)
    factor = debias_factor(_count(state, conv), momentum, conv)
    mean = np.asarray(state["running_mean"], dtype=np.float64) / factor
    spread = np.asarray(state[conv.spread_field], dtype=np.float64) / factor
    return mean, spread**2 if conv.averaged_spread == "std" else spread


def _count(state: Mapping[str, object], conv: Convention) -> int:
    """The batches ``state`` counts, where inference needs them: a debiased record's counter must be there; a
    plain record reads its averages as they are, counter or not (an adapter need not report one)."""
    value = state.get(conv.counter) if conv.counter else None
    if value is None and conv.debiased:
        raise ValueError(f"the {conv.name!r} convention debiases by its counter {conv.counter!r}, which the state "
                         "lacks")
    return 0 if value is None else int(value)


def saturated_count(momentum: float, convention: str | Convention) -> int:
    """The fewest batches after which ``convention``'s debiasing factor ``1 - (1 - w)**t`` is 1 in float64:
    ``(1 - w)**t`` at most ``2**-54``, half a unit below 1 (1 for a plain convention)."""
    conv = get_convention(convention)
    w = conv.new_batch_weight(momentum, 1)
    count = 1 if w == 1.0 or not conv.debiased else max(1, math.ceil(-54 * math.log(2) / math.log1p(-w)))
    while debias_factor(count, momentum, conv) < 1.0:  # the estimate's rounding: a step or two at most
        count += 1
    while count > 1 and debias_factor(count - 1, momentum, conv) == 1.0:
        count -= 1
    return count


def running_state_for(mean: np.ndarray, var: np.ndarray, momentum: float | None, convention: str | Convention,
                      counter: int | None = None) -> dict[str, np.ndarray | int]:
    """The running state of ``convention`` whose inference reads ``mean`` and ``var`` (the inverse of
    :func:`running_statistics`), with its counter at ``counter`` where it keeps one; a debiased convention
    not given one counts :func:`saturated_count` batches, after which its average continues as a plain one."""
    conv = get_convention(convention)
    state: dict[str, np.ndarray | int] = {}
    if conv.counter and counter is None and conv.debiased:
        counter = saturated_count(momentum, conv)
    if conv.counter and counter is not None:
        state[conv.counter] = int(counter)
    factor = debias_factor(int(state.get(conv.counter, 0)) if conv.counter else 0, momentum, conv)
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    state["running_mean"] = mean * factor
    state[conv.spread_field] = (np.sqrt(var) if conv.averaged_spread == "std" else var) * factor
    return state
