"""The stateful exploration's records (``checks/test_exploration.py``): what an operator supplies
(:class:`Exploration`: the layer a sequence builds, a state to assign, one step's arrays), the memory layouts
every step's arrays come in, and the strategies of the operators without running state
(:func:`stateless_exploration`; BatchNorm's are ``operators/batchnorm/exploration.py``).

A stateless operator's sequences (LayerNorm's, GroupNorm's) draw, within what the tolerance model can judge:

- the layer: one of the operator's layouts in any dtype the implementation supports, with all its parameters or
  one of the parameter sets the grids check (:data:`~conformance.core.case.PARAMETER_SETS`), eps 2**-20 to
  2**-3 (at least 2**-13 in half precision);
- assigned parameters, per element: a mix of one to three kinds (negative, zero, tiny 1e-6, normal, large 1e3;
  8 in half precision) for gamma, beta offset up to 1e2 (10 in half precision);
- batches: one sample, the layout's batch, or 256 samples; values offset from 0 to 100 spreads per statistics
  group at scales 1e-3 to 1e3 (1e-2 to 1 in float16); every array C-contiguous, strided or Fortran-ordered.

The training flag means nothing to them: a sequence's mode switches check that it stays so, its assignments
between calls that nothing derived from the parameters goes stale, its repeated backward calls that nothing
accumulates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .case import PARAMETER_SETS, Case
from .dtypes import round_to

__all__ = ["HOSTILE_FIRST", "MEMORY", "Batch", "Exploration", "drawn_batch", "in_memory", "stateless_exploration"]

# Hypothesis draws the first of a list most often (and shrinks towards it): the narrowest dtypes first.
HOSTILE_FIRST = ("float16", "bfloat16", "float32", "float64")
MEMORY = ("contiguous", "strided", "fortran")


@dataclass(frozen=True)
class Batch:
    """One step's input and upstream gradient, with what the report shows of them (``summary``)."""

    x: np.ndarray
    dy: np.ndarray
    summary: dict


@dataclass(frozen=True)
class Exploration:
    """An operator's strategies for the stateful exploration: the layer a sequence builds (``case``), a
    state to assign (``state``: fields and summary) and one step's arrays (``batch``)."""

    case: Callable[[Callable, object, object], Case]
    state: Callable[[Callable, Case, object], tuple[dict, dict]]
    batch: Callable[[Callable, Case, bool], Batch]


def in_memory(values: np.ndarray, memory: str) -> np.ndarray:
    """``values`` as a C-contiguous array, a strided view (every other sample of a larger buffer) or
    Fortran-ordered."""
    if memory == "fortran":
        return np.asfortranarray(values)
    if memory == "strided":
        buffer = np.zeros((2 * values.shape[0], *values.shape[1:]), values.dtype)
        buffer[::2] = values
        return buffer[::2]
    return values


def drawn_batch(draw: Callable, case: Case, shape: tuple[int, ...], size: str, offset: float, scale: float) -> Batch:
    """One step's arrays of ``shape``: ``x`` offset by ``offset`` spreads of ``scale`` per statistics group (the
    case's ``group_axes``), ``dy`` standard normal, both rounded to the case's dtype, each in a drawn memory
    layout; every operator's strategies end here, so their sequences draw in one order."""
    from hypothesis import strategies as st

    memory = draw(st.sampled_from(MEMORY)), draw(st.sampled_from(MEMORY))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    axes = [a % len(shape) for a in case.group_axes]
    groups = [n if a in axes else 1 for a, n in enumerate(shape)]
    centre = offset * scale * rng.choice([-1.0, 1.0], groups)
    x = round_to(centre + scale * rng.standard_normal(shape), case.dtype)
    dy = round_to(rng.standard_normal(shape), case.dtype)
    summary = {"size": size, "shape": list(shape), "offset_spreads": offset, "scale": scale,
               "x_memory": memory[0], "dy_memory": memory[1]}
    return Batch(in_memory(x, memory[0]), in_memory(dy, memory[1]), summary)


def _half(dtype: str) -> bool:
    return dtype in ("float16", "bfloat16")


_SAMPLES = {"tiny": 1, "large": 256}  # "small": the layout's own batch


def stateless_exploration(layout_cases: Callable[..., list[Case]]) -> Exploration:
    """The strategies of an operator without running state whose ``layout_cases(dtypes, **changes)`` makes its
    layouts (the grids' own) and whose cases give their parameters' shapes (``initial_state``)."""

    def case(draw: Callable, capabilities, convention) -> Case:
        from hypothesis import assume
        from hypothesis import strategies as st

        parameters = draw(st.sampled_from([{}, *({"affine": a, "bias": b} for a, b in PARAMETER_SETS)]))
        dtypes = tuple(d for d in HOSTILE_FIRST if d in capabilities.dtypes)
        candidates = [c for c in layout_cases(dtypes, **parameters) if not capabilities.unsupported(c.spec(convention))]
        assume(candidates)
        chosen = draw(st.sampled_from(candidates))
        eps = draw(st.sampled_from([2.0**-13, 2.0**-3] if _half(chosen.dtype) else [2.0**-20, 2.0**-13, 2.0**-3]))
        return chosen.with_(eps=eps)

    def state(draw: Callable, case: Case, convention) -> tuple[dict, dict]:
        from hypothesis import strategies as st

        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        large = 8.0 if _half(case.dtype) else 1e3
        gammas = {"negative": lambda n: -rng.uniform(0.5, 2.0, n), "zero": np.zeros,
                  "tiny": lambda n: 1e-6 * rng.uniform(1, 2, n), "normal": lambda n: rng.uniform(0.5, 1.5, n),
                  "large": lambda n: large * rng.uniform(1, 4, n)}
        fields, summary = {}, {}
        for name, held in case.initial_state(convention).items():
            if name == "gamma":
                kinds = draw(st.lists(st.sampled_from(sorted(gammas)), min_size=1, max_size=3, unique=True))
                chosen = rng.choice(kinds, held.shape)  # each element's kind
                fields[name] = np.select([chosen == k for k in kinds], [gammas[k](held.shape) for k in kinds])
                summary[name] = sorted(kinds)
            else:
                offset = draw(st.sampled_from([1.0, 10.0] if _half(case.dtype) else [1.0, 1e2]))
                fields[name] = rng.uniform(-1, 1, held.shape) * offset
                summary[f"{name}_offset"] = offset
        return fields, summary

    def batch(draw: Callable, case: Case, training: bool) -> Batch:
        from hypothesis import strategies as st

        size = draw(st.sampled_from(("tiny", "small", "large")))
        offset = draw(st.sampled_from([0.0, 3.0, 100.0]))
        scale = draw(st.sampled_from([1.0, 1e-2] if case.dtype == "float16" else [1.0, 1e-3, 1e3]))
        return drawn_batch(draw, case, (_SAMPLES.get(size, case.shape[0]), *case.shape[1:]), size, offset, scale)

    return Exploration(case=case, state=state, batch=batch)
