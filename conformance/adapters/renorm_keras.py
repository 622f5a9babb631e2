"""Batch renormalization: tf-keras' ``BatchNormalization(renorm=True, fused=False)`` and Keras 3's
``BatchNormalization(renorm=True)`` on its three backends, each with clipping that binds on the cases' data and
clipping that does not (:data:`CLIPPINGS`), against :func:`reference.renorm_correction` and
:func:`reference.renorm_update` (:class:`~conformance.operators.batchnorm.variants.RenormReference`).

The layers keep three variables beyond BatchNorm's, reported and assigned under their own names:
``moving_stddev`` (the inference average of ``sqrt(var + eps)``, from which ``moving_variance`` is derived),
``renorm_mean`` and ``renorm_stddev``. A state that assigns the running mean and variance without them sets them
so that every average agrees (:func:`reference.renorm_state_for`): a layer trained to those statistics.

Named ``tf_keras.variants.renorm.<clipping>`` and ``keras.variants.<backend>.renorm.<clipping>``: a family of
their own (``--impl tf_keras.variants``, ``--impl keras.variants``), which ``tox -e report`` runs and
the framework environments do not; the checks that the variant changes: training outputs, gradients, the running
state, inference after training, and the state from construction. Second order is not declared: ``r`` and ``d``
follow the renorm averages, which every training call moves, a double backward's included.
"""

from __future__ import annotations

from types import MappingProxyType

from reference import renorm_state_for

from ..operators.batchnorm import LayerSpec
from ..operators.batchnorm.variants import RenormReference
from .base import Capabilities, State
from .keras3 import KerasImplementation, KerasLayer
from .tf_keras import TfKerasImplementation, TfKerasLayer

# The check families a variant changes (conformance/checks/test_<family>.py).
VARIANT_FAMILIES = frozenset({"forward", "gradients", "running_stats", "construction"})
# rmin/rmax/dmax that bind on the cases' batches (r spans about 0.3 to 3, d about -4 to 4 against the assigned
# averages) and that do not.
CLIPPINGS = {"clip_binding": {"rmin": 0.8, "rmax": 1.25, "dmax": 0.5},
             "clip_loose": {"rmin": 1e-3, "rmax": 1e3, "dmax": 1e3}}
RENORM_MOMENTUM = 0.7  # Keras' meaning (the old value's weight), unlike any case's momentum
_RENORM_VARIABLES = {name: name for name in ("moving_stddev", "renorm_mean", "renorm_stddev")}


def renorm_fields(state: State, eps: float) -> State:
    """``state`` with the renorm fields it lacks set from its running mean and variance, where it has both."""
    if state.running_mean is None or state.running_var is None:
        return state
    agreeing = renorm_state_for(state.running_mean, state.running_var, eps)
    return state.replace(**{name: agreeing[name] for name in _RENORM_VARIABLES if state.get(name) is None})


def _renorm_arguments(clipping: str) -> dict[str, object]:
    return {"renorm": True, "renorm_clipping": dict(CLIPPINGS[clipping]), "renorm_momentum": RENORM_MOMENTUM}


class _Renorm:
    """What both frameworks' renorm implementations share: name, family, reference side, capabilities."""

    families = VARIANT_FAMILIES
    benchmarked = False
    clipping: str
    capabilities: Capabilities

    def _variant(self, clipping: str, family: str, backend: str = "") -> None:
        self.clipping, self.family = clipping, family
        self.name = ".".join(filter(None, (family, backend, "renorm", clipping)))
        self.capabilities = Capabilities(dtypes=self.capabilities.dtypes, features=frozenset({"trainable_false"}))

    def reference(self, case, spec: LayerSpec) -> RenormReference:
        return RenormReference(self.operator.reference(case, self.convention, spec), 1.0 - RENORM_MOMENTUM,
                               CLIPPINGS[self.clipping])

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "renorm": f"renorm_clipping={CLIPPINGS[self.clipping]}, "
                                                   f"renorm_momentum={RENORM_MOMENTUM}"}


class TfKerasRenormLayer(TfKerasLayer):
    variables = MappingProxyType({**TfKerasLayer.variables, **_RENORM_VARIABLES})

    def set_state(self, state: State) -> None:
        super().set_state(renorm_fields(state, self.layer.epsilon))


class KerasRenormLayer(KerasLayer):
    variables = MappingProxyType({**KerasLayer.variables, **_RENORM_VARIABLES})

    def set_state(self, state: State) -> None:
        super().set_state(renorm_fields(state, self.layer.epsilon))


class TfKerasRenorm(_Renorm, TfKerasImplementation):
    def __init__(self, clipping: str) -> None:
        super().__init__(fused=False)  # tf-keras rejects fused=True with renorm
        self._variant(clipping, "tf_keras.variants")

    def build(self, spec: LayerSpec) -> TfKerasRenormLayer:
        return TfKerasRenormLayer(spec, False, **_renorm_arguments(self.clipping))


class KerasRenorm(_Renorm, KerasImplementation):
    def __init__(self, backend: str, requires: tuple[str, ...], clipping: str) -> None:
        super().__init__(backend, requires)
        self._variant(clipping, "keras.variants", backend)

    def build(self, spec: LayerSpec) -> KerasRenormLayer:
        self._keras()
        return KerasRenormLayer(spec, **_renorm_arguments(self.clipping))


IMPLEMENTATIONS = [
    *(TfKerasRenorm(clipping) for clipping in CLIPPINGS),
    *(KerasRenorm(backend, (backend,), clipping)
      for backend in ("tensorflow", "jax", "torch") for clipping in CLIPPINGS),
]
