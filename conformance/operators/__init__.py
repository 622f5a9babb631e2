"""Operators as records, the pattern of PyTorch's ``ModuleInfo``: everything the operator-neutral parts of
the suite (cases, mirror, checks, report) need to know about one operator, in one :class:`Operator`.

An operator owns its reference (the reference side of a Mirror: :class:`ReferenceSide`), its parameters'
names (which name the gradients and second-order directions), its case record and the cases each check
runs (``grids``, keyed by check name: a check an operator has no grid for is not generated for it), its
convention records, its tolerance model (inside its reference side) and its report vocabulary
(:class:`Vocabulary`). BatchNorm is :data:`conformance.operators.batchnorm.BATCHNORM`; docs/operators.md
lists the files a new operator adds and touches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..core.case import Case
from ..core.comparison import Expected
from ..core.state import State

__all__ = ["Delegating", "Operator", "ReferenceSide", "Vocabulary"]


class ReferenceSide(Protocol):
    """What a Mirror holds an implementation's layer to: the operator's reference for one case in one
    convention, answering every call the layer gets with the expected values and their tolerances, named as
    the Mirror names the layer's outputs (``y``; ``dx`` and ``d<parameter>``; ``hvp_x`` and
    ``hvp_<parameter>``; the state's fields). A call that is an error for the reference raises, as the
    layer should. A transform's reference side may expect more than a call's outputs, named as its layer's
    ``observed()`` names them, and counts as well as values (any expectation with ``judge``:
    :class:`~conformance.core.comparison.ExpectedCount`)."""

    def assign(self, held: State) -> None:
        """Start from ``held``, the state the layer holds after it was given the case's state."""

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        """One forward call: ``{"y": ...}``."""

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        """One forward call and the gradients of ``sum(y * dy)``."""

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]
                        ) -> dict[str, Expected]:
        """The Hessian-vector product of ``sum(y * dy)`` along ``direction`` (training mode)."""

    def state(self, exact: bool = False) -> dict[str, Expected]:
        """Every field of the state, within the tolerance the calls so far allow (``exact``: none)."""

    def hyperparameters(self) -> dict[str, Expected]:
        """The hyperparameters the layer was built with, as it may hold them (``eps``, ``momentum``)."""


class Delegating:
    """A reference side that answers with another's (``side``): what a transform's reference side derives
    from, overriding what its path changes (a port switches sides at the first inference call; an export
    states what its graph must hold)."""

    side: ReferenceSide

    def assign(self, held: State) -> None:
        self.side.assign(held)

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        return self.side.forward(x, training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        return self.side.forward_backward(x, dy, training)

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]
                        ) -> dict[str, Expected]:
        return self.side.double_backward(x, dy, direction)

    def state(self, exact: bool = False) -> dict[str, Expected]:
        return self.side.state(exact)

    def hyperparameters(self) -> dict[str, Expected]:
        return self.side.hyperparameters()


@dataclass(frozen=True)
class Vocabulary:
    """What the report says about an operator, beyond the operator-neutral tables.

    ``conventions``: the columns of the conventions table for one convention record (as the report's JSON
    holds it), the defaults the framework's constructor really has and what its implementations did in the
    checks with a role (``behaviour``: role -> outcome). ``translation``: how each setting carries from one
    convention record to another (the porting cheat-sheet). ``roles``: check name and case parameters -> the
    role the report reads that result for (``one_value_per_channel``), if any."""

    conventions: Callable[[dict, dict, dict], dict[str, str]]
    translation: Callable[[dict, dict], dict[str, str]]
    roles: Callable[[str, dict], str | None] = lambda check, params: None


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one record per operator
class Operator:
    """One operator the suite checks (see the module docstring)."""

    name: str
    parameters: tuple[str, ...]
    case: type[Case]
    convention: type  # the type of its convention records (BatchNorm: reference.Convention)
    conventions: Mapping[str, Any]
    grids: Mapping[str, Callable[[], list[Case] | dict[str, Case]]]
    reference: Callable[[Case, Any, Any], ReferenceSide]  # (case, convention, the layer's spec)
    draw_case: Callable[[Callable, Any], Case]  # (hypothesis draw, capabilities) -> a case
    vocabulary: Vocabulary
    options: Mapping[str, tuple[tuple[object, ...], tuple[str, ...]]] = field(default_factory=dict)
    # What of a spec a convention record cannot express (each named, as a skip names it); none by default.
    unexpressible: Callable[[Any, Any], list[str]] = lambda spec, convention: []
    # The stateful exploration's strategies (``core/exploration.py``; BatchNorm's: ``batchnorm/exploration.py``);
    # None: not explored.
    exploration: Any = None

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """``(id, case)`` for every case ``check`` runs on this operator; none where it has no grid. A named
        grid's id is the name, any other the case's id."""
        return _cases(self, check)

    @property
    def gradients(self) -> tuple[str, ...]:
        """How the Mirror names the outputs of ``forward_backward``: ``y``, ``dx``, then each parameter's."""
        return ("y", "dx", *(f"d{p}" for p in self.parameters))

    @property
    def second_order(self) -> tuple[str, ...]:
        """How the Mirror names the outputs of ``double_backward``: ``hvp_x``, then each parameter's."""
        return ("hvp_x", *(f"hvp_{p}" for p in self.parameters))


@functools.cache
def _cases(operator: Operator, check: str) -> list[tuple[str, Case]]:
    if check not in operator.grids:
        return []
    grid = operator.grids[check]()
    return list(grid.items()) if isinstance(grid, dict) else [(case.id, case) for case in grid]
