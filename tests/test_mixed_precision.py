"""The mixed-precision transform's reference side (conformance/transforms/mixed_precision.py): a layer whose
variables are not float32, or whose running statistics carry a half-precision rounding, fails; one that keeps
them in float32 passes."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.adapters.reference_impl import ReferenceImplementation, ReferenceLayer
from conformance.harness.mirror import Mirror
from conformance.operators.batchnorm import BatchNormCase
from conformance.transforms.mixed_precision import MixedPrecision, _Variables
from reference import KERAS

CASE = BatchNormCase((64, 3), dtype="float16", steps=3)


class _Layer(_Variables, ReferenceLayer):
    """The reference computing in float64, its running statistics rounded to ``stored`` after each training
    call, reporting its variables as ``reported``."""

    def __init__(self, spec, stored: str, reported: str) -> None:
        super().__init__(spec, KERAS)
        self.stored, self.reported = stored, reported

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        y = super().forward(x, training)
        for name in ("running_mean", "running_var"):
            setattr(self.bn, name, getattr(self.bn, name).astype(self.stored).astype(np.float64))
        return y

    def variable_dtypes(self) -> dict[str, str]:
        return dict.fromkeys(("gamma", "beta", "running_mean", "running_var"), self.reported)


def _failed(stored: str, reported: str, mixed: bool = True) -> set[str]:
    """The state fields that fail after three training steps."""
    eager = ReferenceImplementation(KERAS)
    build = lambda spec: _Layer(spec, stored, reported)  # noqa: E731
    impl = MixedPrecision(eager, "mixed_precision", "mixed_float16", "float16", build)
    if not mixed:  # the case's own dtype for the running state: a float16 layer's tolerance
        impl.reference = lambda case, spec: eager.reference(case, spec)
    mirror = Mirror(impl, CASE)
    for x in CASE.batches():
        mirror.forward(x, training=True)
    mirror.compare_state()
    return {c.quantity for c in mirror.failures()}


def test_float32_variables_pass() -> None:
    assert _failed("float32", "float32") == set()


def test_running_statistics_stored_in_half_precision_fail() -> None:
    """float16's rounding of the statistics exceeds float32's tolerance, which a float16 layer's would allow."""
    assert _failed("float16", "float32") == {"running_mean", "running_var"}
    assert _failed("float16", "float32", mixed=False) == set()


@pytest.mark.parametrize("reported", ["float16", "bfloat16"])
def test_variables_in_another_dtype_fail(reported: str) -> None:
    fields = ("gamma", "beta", "running_mean", "running_var")
    assert _failed("float32", reported) == {f"{name}_dtype" for name in fields}
