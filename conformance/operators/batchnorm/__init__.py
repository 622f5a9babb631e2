"""The BatchNorm operator: :data:`BATCHNORM`, assembled from its parts.

- :mod:`.spec`: what an adapter builds (:class:`LayerSpec`);
- :mod:`.cases`: the case record and which cases each check runs;
- :mod:`.reference`: the reference side of a Mirror, over :class:`reference.BatchNorm` in any convention
  record (:mod:`reference.conventions`);
- :mod:`.tolerances`: the tolerance model;
- :mod:`.variants`: the reference sides of variants with their own convention (batch renormalization, ghost
  batches, an adjustment), over the reference side's;
- :mod:`.vocabulary`: what the report says about it.
"""

from reference import CONVENTIONS, Convention, check_momentum

from .. import Operator
from .cases import FRAMEWORK_OPTIONS, GRIDS, BatchNormCase, draw_case
from .exploration import EXPLORATION
from .reference import BatchNormReference
from .spec import LayerSpec
from .vocabulary import VOCABULARY

__all__ = ["BATCHNORM", "BatchNormCase", "LayerSpec"]


def _unexpressible(spec: LayerSpec, convention: Convention) -> list[str]:
    """A momentum the convention cannot take (a debiased one, none that gives the new batch no weight);
    ``None`` is a capability (``momentum_none``), not a matter of the record."""
    if spec.momentum is None:
        return []
    try:
        check_momentum(spec.momentum, convention)
    except ValueError as exc:
        return [f"momentum {spec.momentum} ({exc})"]
    return []


BATCHNORM = Operator(
    name="batchnorm",
    parameters=("gamma", "beta"),
    case=BatchNormCase,
    convention=Convention,
    conventions=CONVENTIONS,
    grids=GRIDS,
    reference=BatchNormReference,
    draw_case=draw_case,
    vocabulary=VOCABULARY,
    options=FRAMEWORK_OPTIONS,
    unexpressible=_unexpressible,
    exploration=EXPLORATION,
)
