"""The dtype vocabulary of cases, capabilities and tolerances, and how arrays cross to a framework."""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = ["ALL_DTYPES", "as_numpy_float", "dtype_of", "framework_input", "round_to", "unit_roundoff"]

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")


def dtype_of(name: str) -> np.dtype:
    """NumPy dtype for a dtype name; bfloat16 comes from ml_dtypes."""
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype``: both the implementation and the reference get exactly these."""
    return np.asarray(values).astype(dtype_of(dtype))


# Half the machine epsilon of each dtype of the vocabulary: float64 2**-53 ... bfloat16 2**-8.
_UNIT_ROUNDOFF = {name: float(ml_dtypes.finfo(dtype_of(name)).eps) / 2 for name in ALL_DTYPES}


def unit_roundoff(dtype: str) -> float:
    return _UNIT_ROUNDOFF[dtype]


def underflow(dtype: str) -> float:
    """A bound on the absolute rounding error of ``dtype`` below its normal range: its smallest subnormal
    (the error is at most half of it, which float64 cannot hold: it rounds to zero). Where a result is that small,
    ``unit_roundoff * |result|`` no longer bounds its rounding."""
    return float(ml_dtypes.finfo(dtype_of(dtype)).smallest_subnormal)


def as_numpy_float(x: np.ndarray) -> np.ndarray:
    """``x`` in a dtype every framework's from-NumPy conversion accepts: ``bfloat16`` (an ml_dtypes
    type NumPy does not know natively) becomes float32, which holds its values exactly."""
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def framework_input(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(array, cast)``: what an adapter hands its framework's from-NumPy conversion, and whether to cast
    it to the layer's dtype afterwards. Floating input (bfloat16 through float32, exactly) is cast; integer
    and boolean input reaches the framework in its own dtype, so that its own checks answer for it."""
    if x.dtype.kind in "biu":
        return x, False
    return as_numpy_float(x), True
