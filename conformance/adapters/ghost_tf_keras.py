"""Ghost batches: tf-keras' ``BatchNormalization(virtual_batch_size=2, fused=False)`` against
:func:`reference.ghost_forward_training` (:class:`~conformance.operators.batchnorm.variants.GhostReference`).

Training normalizes each ghost batch of two samples with its own statistics; which samples form a ghost batch is
part of what is checked (tf-keras interleaves them: :func:`reference.ghost_batches`). The layer keeps its
variables in the ``(1, 1, ..., C, ...)`` shape of its reshaped input; the adapter reports them per channel.
Cases run where the batch divides into ghost batches (the grids' batches of 16, 4 and 2 samples: eight, two and
one ghost batch); with one it is plain BatchNorm, which the rank-4 and rank-5 cases then check.

A family of its own (``--impl tf_keras.variants``), which ``tox -e report`` runs: the checks the variant changes
(:data:`~conformance.adapters.renorm_keras.VARIANT_FAMILIES`).
"""

from __future__ import annotations

from ..core.case import Case
from ..operators.batchnorm import LayerSpec
from ..operators.batchnorm.variants import GhostReference
from .base import Capabilities
from .renorm_keras import VARIANT_FAMILIES
from .tf_keras import TfKerasImplementation, TfKerasLayer

VIRTUAL_BATCH_SIZE = 2


class TfKerasGhost(TfKerasImplementation):
    families = VARIANT_FAMILIES
    benchmarked = False

    def __init__(self) -> None:
        super().__init__(fused=False)  # tf-keras rejects fused=True with virtual_batch_size
        self.family = "tf_keras.variants"
        self.name = f"{self.family}.virtual_batch_size_{VIRTUAL_BATCH_SIZE}"
        self.capabilities = Capabilities(dtypes=self.capabilities.dtypes, features=frozenset({"trainable_false"}))

    def cases(self, check: str) -> list[tuple[str, Case]]:
        """Those whose batch divides into ghost batches."""
        return [(i, c) for i, c in super().cases(check) if c.shape[0] and c.shape[0] % VIRTUAL_BATCH_SIZE == 0]

    def reference(self, case: Case, spec: LayerSpec) -> GhostReference:
        return GhostReference(self.operator.reference(case, self.convention, spec), VIRTUAL_BATCH_SIZE)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "virtual_batch_size": str(VIRTUAL_BATCH_SIZE)}

    def build(self, spec: LayerSpec) -> TfKerasLayer:
        return TfKerasLayer(spec, False, virtual_batch_size=VIRTUAL_BATCH_SIZE)


IMPLEMENTATIONS = [TfKerasGhost()]
