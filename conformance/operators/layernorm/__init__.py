"""The LayerNorm operator: :data:`LAYERNORM`, assembled from its parts, on BatchNorm's spine.

- :mod:`.spec`: what an adapter builds (:class:`LayerNormSpec`);
- :mod:`.cases`: the case record and which cases each check runs;
- :mod:`.reference`: the reference side of a Mirror, over :func:`reference.layer_norm` in any
  :class:`reference.LayerNormConvention`;
- :mod:`.tolerances`: the tolerance model (BatchNorm's conditioning, per row);
- :mod:`.vocabulary`: what the report says about it.
"""

from reference import LAYERNORM_CONVENTIONS, LayerNormConvention

from ...core.exploration import stateless_exploration
from .. import Operator
from .cases import FRAMEWORK_OPTIONS, GRIDS, LayerNormCase, draw_case, layout_cases
from .reference import LayerNormReference
from .spec import LayerNormSpec
from .vocabulary import VOCABULARY

__all__ = ["LAYERNORM", "LayerNormCase", "LayerNormSpec"]

LAYERNORM = Operator(
    name="layernorm",
    parameters=("gamma", "beta"),
    case=LayerNormCase,
    convention=LayerNormConvention,
    conventions=LAYERNORM_CONVENTIONS,
    grids=GRIDS,
    reference=LayerNormReference,
    draw_case=draw_case,
    vocabulary=VOCABULARY,
    options=FRAMEWORK_OPTIONS,
    exploration=stateless_exploration(layout_cases),
)
