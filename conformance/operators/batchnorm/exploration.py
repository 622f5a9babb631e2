"""What BatchNorm's stateful exploration (``checks/test_exploration.py``) draws: :data:`EXPLORATION`.

Value ranges that real training reaches, within what the tolerance model can judge (it does not model a
result that overflows the dtype, which a float16 layer's correctly rounded answer then is):

- the layer: every rank and channel position and dtype the implementation supports, eps 1e-5 to 0.1 (at
  least 1e-3 in float16), every new-batch weight including the cumulative average where supported;
- assigned state, per channel: gamma negative, zero, tiny (1e-6) or large (1e3; 8 in float16), beta and the
  running mean offset up to 1e2 and 1e3 (10 and 1 in float16), the running variance zero, tiny, normal or
  large (1e5: past float16's largest finite value, 65504), a batch counter 0 to 1000 where the convention
  keeps one;
- batches: one sample with spatial extent (two samples at rank 2) up to more than a thousand values per
  channel, and a shape whose every axis has the channel count; values offset from 0 to 100 spreads per
  channel at scales 1e-3 to 1e3 (inference on float16 batches stays within 3 spreads of scale 1: beyond it
  the gradients of the parameters overflow float16); every array C-contiguous, strided or Fortran-ordered.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reference import Convention

from ...core.exploration import HOSTILE_FIRST, Batch, Exploration, drawn_batch
from .cases import NEW_BATCH_WEIGHTS, BatchNormCase

__all__ = ["EXPLORATION"]

SIZES = ("tiny", "small", "large")
# Shapes of more than a thousand values per channel, channels first: one sample with spatial extent.
_LARGE = {2: (1100,), 3: (1, 1100), 4: (1, 33, 33), 5: (1, 11, 10, 10)}


def _half(dtype: str) -> bool:
    return dtype == "float16"


def _shape(case: BatchNormCase, size: str) -> tuple[int, ...]:
    c, rank = case.num_features, case.rank
    if size == "tiny":
        first = (2,) if rank == 2 else (1, *([2] * (rank - 2)))
    elif size == "small":  # every axis the channel count: a layout mix-up cannot hide behind the sizes
        first = (max(c, 2),) + (c,) * (rank - 2)
    else:
        first = _LARGE[rank]
    shape = (first[0], c, *first[1:])
    return shape if case.channel_axis == 1 else (shape[0], *shape[2:], c)


def draw_case(draw: Callable, capabilities, convention: Convention) -> BatchNormCase:
    """The layer a sequence builds: within ``capabilities``, its channels small (1 to 3)."""
    from hypothesis import strategies as st

    rank = draw(st.sampled_from(sorted(capabilities.ranks)))
    axis = draw(st.sampled_from(sorted(capabilities.channel_axes)))
    dtype = draw(st.sampled_from([d for d in HOSTILE_FIRST if d in capabilities.dtypes]))
    weights = [w for w in NEW_BATCH_WEIGHTS if w is not None or "momentum_none" in capabilities.features]
    eps = draw(st.sampled_from([1e-3, 0.1] if _half(dtype) else [1e-5, 1e-3, 0.1]))
    channels = draw(st.integers(1, 3))
    spatial = (2,) * (rank - 2)
    case = BatchNormCase((2, channels, *spatial) if axis == 1 else (2, *spatial, channels), axis, dtype, eps=eps,
                         new_batch_weight=draw(st.sampled_from(weights)))
    return case.with_(shape=_shape(case, "small"))


def _per_channel(draw: Callable, kinds: dict[str, Callable[[np.random.Generator], float]], c: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    from hypothesis import strategies as st

    chosen = [draw(st.sampled_from(sorted(kinds))) for _ in range(c)]
    return np.array([kinds[kind](rng) for kind in chosen]), chosen


def draw_state(draw: Callable, case: BatchNormCase, convention: Convention) -> tuple[dict, dict]:
    """State fields to assign and their summary (each field's kind per channel, the counter)."""
    from hypothesis import strategies as st

    c, half = case.num_features, _half(case.dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    large = 8.0 if half else 1e3
    gamma, gamma_kinds = _per_channel(draw, {
        "negative": lambda r: -r.uniform(0.5, 2.0), "zero": lambda r: 0.0, "tiny": lambda r: 1e-6 * r.uniform(1, 2),
        "normal": lambda r: r.uniform(0.5, 1.5), "large": lambda r: large * r.uniform(1, 4)}, c, rng)
    offset = draw(st.sampled_from([1.0, 10.0] if half else [1.0, 1e2]))
    beta = rng.uniform(-1, 1, c) * offset
    mean = rng.uniform(-1, 1, c) * (1.0 if half else draw(st.sampled_from([1.0, 1e3])))
    variances = {"normal": lambda r: r.uniform(0.5, 2.0), "large": lambda r: 1e5 * r.uniform(1, 2)}
    if not half or case.eps >= 0.1:  # 1 / sqrt(eps) times a float16 batch's offset stays finite
        variances |= {"zero": lambda r: 0.0, "tiny": lambda r: 1e-6 * r.uniform(1, 2)}
    var, var_kinds = _per_channel(draw, variances, c, rng)
    spread = np.sqrt(var) if convention.averaged_spread == "std" else var
    state = {"gamma": gamma, "beta": beta, "running_mean": mean, convention.spread_field: spread}
    summary = {"gamma": gamma_kinds, "beta_offset": offset, "running_mean_max": float(np.abs(mean).max()),
               "running_var": var_kinds}
    if convention.counter:
        state[convention.counter] = summary["counter"] = draw(st.sampled_from([0, 1, 5, 1000]))
    return state, summary


def draw_batch(draw: Callable, case: BatchNormCase, training: bool) -> Batch:
    """One step's ``x`` and ``dy`` (see the module for the ranges)."""
    from hypothesis import strategies as st

    half_inference = _half(case.dtype) and not training
    size = draw(st.sampled_from(SIZES))
    offset = draw(st.sampled_from([0.0, 3.0] if half_inference else [0.0, 3.0, 100.0]))
    scale = draw(st.sampled_from([1.0] if half_inference else [1.0, 1e-3, 1e3] if case.dtype != "float16"
                                 else [1.0, 1e-2]))
    return drawn_batch(draw, case, _shape(case, size), size, offset, scale)


EXPLORATION = Exploration(case=draw_case, state=draw_state, batch=draw_batch)
