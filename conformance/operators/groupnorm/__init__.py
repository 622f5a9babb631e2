"""The GroupNorm operator (InstanceNorm is its groups = channels): :data:`GROUPNORM`, on BatchNorm's spine.

- :mod:`.spec`: what an adapter builds (:class:`GroupNormSpec`);
- :mod:`.cases`: the case record and which cases each check runs;
- :mod:`.reference`: the reference side of a Mirror, over :func:`reference.group_norm` in any
  :class:`reference.GroupNormConvention`;
- :mod:`.tolerances`: the tolerance model (LayerNorm's, per (sample, group));
- :mod:`.vocabulary`: what the report says about it.
"""

from reference import GROUPNORM_CONVENTIONS, GroupNormConvention

from ...core.exploration import stateless_exploration
from .. import Operator
from .cases import FRAMEWORK_OPTIONS, GRIDS, GroupNormCase, draw_case, layout_cases
from .reference import GroupNormReference
from .spec import GroupNormSpec
from .vocabulary import VOCABULARY

__all__ = ["GROUPNORM", "GroupNormCase", "GroupNormSpec"]

GROUPNORM = Operator(
    name="groupnorm",
    parameters=("gamma", "beta"),
    case=GroupNormCase,
    convention=GroupNormConvention,
    conventions=GROUPNORM_CONVENTIONS,
    grids=GRIDS,
    reference=GroupNormReference,
    draw_case=draw_case,
    vocabulary=VOCABULARY,
    options=FRAMEWORK_OPTIONS,
    exploration=stateless_exploration(layout_cases),
)
