"""The CNN operator: the seeds' network (seed ``002_d4beb0fb53713479.txt``: Conv-BatchNorm-ReLU-MaxPool twice,
then Linear) as a second operator, :data:`CNN`, assembled from its parts, on the same spine as BatchNorm.

- :mod:`.spec`: what an adapter builds (:class:`NetworkSpec`), the state's names and PyTorch's layout of it,
  and the porting of kernels and classifier to channels-last frameworks;
- :mod:`.cases`: the case record and which cases each check runs;
- :mod:`.network`: the float64 NumPy network on :class:`reference.BatchNorm`, forward and backward;
- :mod:`.tolerances`: the tolerance model (BatchNorm's, carried through the network);
- :mod:`.reference`: the reference side of a Mirror;
- the report's vocabulary: BatchNorm's (the network's conventions are its BatchNorms'), whose porting
  cheat-sheet gains the kernels' and the classifier's rows.
"""

from reference import CONVENTIONS, Convention

from .. import Operator, Vocabulary
from ..batchnorm.vocabulary import VOCABULARY as BATCHNORM_VOCABULARY
from .cases import GRIDS, NetworkCase, draw_case
from .reference import NetworkReference
from .spec import PARAMETERS, NetworkSpec

__all__ = ["CNN", "NetworkCase", "NetworkSpec"]


def _translation(src: dict, dst: dict) -> dict[str, str]:
    """BatchNorm's cheat-sheet, and where the channel axes differ, the weights' own porting."""
    rows = BATCHNORM_VOCABULARY.translation(src, dst)
    if src["channel_axis"] != dst["channel_axis"]:
        rows |= {"kernels": "(out, in, kh, kw) <-> (kh, kw, in, out)",
                 "classifier": "its inputs permuted between (C, H, W) and (H, W, C) order, not just transposed"}
    return rows


CNN = Operator(
    name="cnn",
    parameters=PARAMETERS,
    case=NetworkCase,
    convention=Convention,
    conventions=CONVENTIONS,
    grids=GRIDS,
    reference=NetworkReference,
    draw_case=draw_case,
    vocabulary=Vocabulary(conventions=BATCHNORM_VOCABULARY.conventions, translation=_translation),
)
