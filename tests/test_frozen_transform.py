"""The freeze transform (``conformance/transforms/frozen.py``): its reference side holds a layer to what
freezing promises (no parameter gradients; inference whatever the training flag where the path is
inference-only), so that the reference run unfrozen fails exactly there and the reference frozen passes; and
it declares what each frozen implementation runs."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.adapters.reference_impl import ReferenceImplementation, ReferenceLayer
from conformance.harness.mirror import Mirror
from conformance.operators.batchnorm.cases import BatchNormCase
from conformance.transforms import frozen
from reference import TORCH

CASE = BatchNormCase((4, 3, 2, 2), 1, "float64", steps=2)


class _FrozenReferenceLayer(ReferenceLayer):
    """The reference frozen as the path promises."""

    def __init__(self, spec, inference_only: bool) -> None:
        super().__init__(spec, TORCH)
        self.inference_only = inference_only

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return super().forward(x, training and not self.inference_only)

    def forward_backward(self, x, dy, training):
        y, dx, _, _ = super().forward_backward(x, dy, training)
        return y, dx, None, None


class _ReferenceFrozen(frozen._Frozen, ReferenceImplementation):
    """The reference behind the freeze transform's reference side, frozen or (``frozen=False``) not."""

    how = "the reference"

    def __init__(self, inference_only: bool, frozen: bool) -> None:
        super().__init__(TORCH)
        self.inference_only, self.frozen = inference_only, frozen
        self._freeze()

    def build(self, spec):
        return _FrozenReferenceLayer(spec, self.inference_only) if self.frozen else super().build(spec)


def _failed(impl) -> set[str]:
    """The quantities that fail over a training step with gradients, a training step and the state."""
    mirror = Mirror(impl, CASE)
    first, second = CASE.batches()
    mirror.forward_backward(first, CASE.cotangent(), training=True)
    mirror.forward(second, training=True)
    mirror.compare_state()
    return {c.quantity for c in mirror.failures()}


@pytest.mark.parametrize("inference_only", [False, True])
def test_a_frozen_layer_passes(inference_only: bool) -> None:
    assert _failed(_ReferenceFrozen(inference_only, frozen=True)) == set()


def test_a_layer_that_still_learns_its_parameters_fails_on_their_gradients() -> None:
    assert _failed(_ReferenceFrozen(False, frozen=False)) == {"dgamma", "dbeta"}


def test_a_layer_that_still_trains_fails_where_inference_is_promised() -> None:
    failed = _failed(_ReferenceFrozen(True, frozen=False))
    assert {"y", "dx", "dgamma", "dbeta", "running_mean", "running_var"} <= failed


def test_the_transform_declares_each_freezing() -> None:
    impls = {impl.name: impl for impl in frozen.IMPLEMENTATIONS}
    assert set(impls) == {
        *(f"torch.BatchNorm{m}.frozen{e}" for m in ("1d", "2d", "3d", "2d.channels_last", "3d.channels_last")
          for e in ("", ".eval")),
        *(f"keras.{b}.frozen" for b in ("tensorflow", "jax", "torch")),
        "tf_keras.fused.frozen", "tf_keras.nonfused.frozen"}
    for name, impl in impls.items():
        assert impl.derivation.transform == "freeze" and impl.derivation.bases == (name.rsplit(".frozen")[0],)
        assert not impl.benchmarked and not impl.capabilities.double_backward
        assert impl.families == {"forward", "running_stats", "gradients"}
        assert impl.inference_only == (not name.startswith("torch.") or name.endswith(".eval"))
    # Keras: the kernels are the eager layer's; freezing is checked in float32 at ranks 2 and 4 where it takes them.
    assert impls["keras.jax.frozen"].capabilities.ranks == {2, 4}
    assert impls["tf_keras.fused.frozen"].capabilities.ranks == {4}
    assert all(impls[n].capabilities.dtypes == {"float32"} for n in impls if "keras" in n)
