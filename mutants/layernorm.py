"""The LayerNorm half of the mutation self-test: a correct NumPy LayerNorm (the baseline) written as a framework
would write one, every step a method, and one subclass per bug class a real LayerNorm or RMSNorm has had.

The baseline follows the reference's contract as ``torch.nn.LayerNorm`` and ``torch.nn.RMSNorm`` do:
float16/bfloat16 inputs are computed with float32 arithmetic and returned in the input's dtype, float32 in
float32, float64 in float64; the scale and offset are held in float64, of the normalized shape (what crosses the
adapter protocol); statistics are two-pass, one mean and variance per row (each index of the leading axes, the
trailing normalized axes flattened: :meth:`LayerNorm.rows`); bad input raises before anything changes. An RMSNorm
is the same layer in a convention that does not re-center (``centered=False``): a zero mean and the mean square.

The baseline must pass every check of the suite without a single deviation; ``mutants.verdict`` fails the run
otherwise. Plug in the baselines and their mutants alone as any third party would (``tox -e mutants`` runs them
with the others, through ``mutants.catalogue:IMPLEMENTATIONS``):

    pytest conformance --impl mutants.layernorm:IMPLEMENTATIONS
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import State
from conformance.operators.layernorm import LayerNormSpec
from reference import LayerNormConvention

from .implementation import LayerNormImplementation
from .rows import RowNormalization

__all__ = ["IMPLEMENTATIONS", "MUTANTS", "LayerNorm"]


class LayerNorm(RowNormalization):
    """A LayerNorm layer behind the adapter protocol; an RMSNorm in a convention that does not re-center. Its
    rows are the indices of the leading axes, the normalized axes flattened; its parameters lie along every row
    (the hooks: :class:`~mutants.rows.RowNormalization`)."""

    def __init__(self, spec: LayerNormSpec, convention: LayerNormConvention) -> None:
        self.centered = convention.centered
        super().__init__(spec)

    def initial_state(self, spec: LayerNormSpec) -> State:
        """Scale 1 and offset 0, of the normalized shape, where the layer has them."""
        return State(gamma=np.ones(spec.normalized_shape) if spec.affine else None,
                     beta=np.zeros(spec.normalized_shape) if spec.bias else None)

    def validate(self, x: np.ndarray) -> np.ndarray:
        if not (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        shape = self.spec.normalized_shape
        if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise ValueError(f"expected an input whose trailing axes are {shape}, got shape {x.shape}")
        return x

    def rows(self, a: np.ndarray) -> np.ndarray:
        """``(R, H)``: one row per index of the leading axes (sizes named: -1 cannot reshape an input without
        rows)."""
        h = int(np.prod(self.spec.normalized_shape, dtype=int))
        return a.reshape(int(np.prod(a.shape[: a.ndim - len(self.spec.normalized_shape)], dtype=int)), h)

    def unrows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return rows.reshape(shape)

    def ones(self) -> np.ndarray:
        return np.ones(int(np.prod(self.spec.normalized_shape, dtype=int)))

    def per_parameter(self, parameter: np.ndarray) -> np.ndarray:
        """A held parameter as one value per feature of a row."""
        return parameter.reshape(-1)

    def along_rows(self, values: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.asarray(values, dtype=dtype).reshape(1, -1)

    def parameter_gradient(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return a.sum(axis=0, dtype=np.float64).reshape(self.spec.normalized_shape)


# -- mutants: each overrides one hook and says, as class attributes, the bug, where it happened and the link --

class UnbiasedStd(LayerNorm):
    """The standard deviation with Bessel's correction: the Annotated Transformer's LayerNorm divides by
    ``x.std(-1)``, ``torch.std``'s default ``unbiased=True`` (its PR #119 and issue #122), and its copies with it
    (allennlp fixed theirs in PR #953)."""

    bug = "standard deviation with Bessel's correction (n - 1)"
    origin = "the Annotated Transformer's LayerNorm (harvardnlp/annotated-transformer #119, #122), allennlp (#953)"
    link = "https://github.com/harvardnlp/annotated-transformer/pull/119"

    def statistics(self, rows):
        mean, var = super().statistics(rows)
        n = rows.shape[-1]
        return mean, var * n / max(n - 1, 1)


class EpsOutsideSqrt(LayerNorm):
    """``(x - mean) / (std + eps)`` where the record puts eps inside the root, ``/ sqrt(var + eps)``: the
    Annotated Transformer's LayerNorm, copied into BERT-pytorch (#30) and other model code."""

    bug = "eps added to the standard deviation instead of inside the square root"
    origin = "the Annotated Transformer's LayerNorm, copied into codertimo/BERT-pytorch (#30), hkproj (#31)"
    link = "https://github.com/codertimo/BERT-pytorch/issues/30"

    def normalize(self, rows, mean, var):
        r = 1 / (np.sqrt(var) + rows.dtype.type(self.spec.eps))
        return (rows - mean) * r, r


class RootOfTheVariance(LayerNorm):
    """An RMSNorm that divides by the root of the variance (about the mean) instead of the mean square, without
    subtracting the mean: Keras' ``LayerNormalization(rms_scaling=True)`` computes
    ``inputs * rsqrt(var(inputs) + epsilon)`` (keras #21234, PR #22393)."""

    bug = "RMSNorm scaled by the variance about the mean instead of the mean square"
    origin = "Keras LayerNormalization(rms_scaling=True) (keras #21234, PR #22393)"
    link = "https://github.com/keras-team/keras/issues/21234"

    def statistics(self, rows):
        mean = self.row_mean(rows)
        return np.zeros_like(mean), self.row_mean((rows - mean) ** 2)


class HalfPrecisionAccumulation(LayerNorm):
    """float16/bfloat16 input reduced in its own precision: MXNet's LayerNorm performed its reductions in fp16
    (mxnet #14073); PyTorch's CUDA layer_norm for fp16 (pytorch #66707) and ExecuTorch's norms (PR #16727)
    alike."""

    bug = "float16/bfloat16 statistics accumulated in the input precision"
    origin = "MXNet LayerNorm (#14073), PyTorch layer_norm (#66707)"
    link = "https://github.com/apache/mxnet/issues/14073"

    def compute_dtype(self, dtype):
        return np.dtype(dtype)


class ScaleOverLastAxisOnly(LayerNorm):
    """Normalized over several trailing axes, the scale and offset held along the last one only and broadcast
    over the others: Flax's ``feature_axes=-1`` default beside several ``reduction_axes`` (flax #3664), caffe2's
    LayerNorm helper's ``shape=[dim_in]`` (pytorch PR #19982). Its initial parameters have the wrong shape, and a
    state of the normalized shape cannot be applied."""

    bug = "scale and offset along the last axis only when several axes are normalized"
    origin = "Flax LayerNorm feature_axes=-1 (flax #3664), caffe2 layer_norm helper (pytorch PR #19982)"
    link = "https://github.com/pytorch/pytorch/pull/19982"

    def initial_state(self, spec):
        last = spec.normalized_shape[-1:]
        return State(gamma=np.ones(last) if spec.affine else None, beta=np.zeros(last) if spec.bias else None)

    def per_parameter(self, parameter):
        # Repeated over the other normalized axes; a state of the normalized shape repeats into too many values.
        return np.tile(parameter.reshape(-1), int(np.prod(self.spec.normalized_shape[:-1], dtype=int)))

    def parameter_gradient(self, a, shape):
        return a.sum(axis=0, dtype=np.float64).reshape(-1, self.spec.normalized_shape[-1]).sum(axis=0)


MUTANTS: dict[str, tuple[type[LayerNorm], str]] = {
    "layernorm.unbiased_std": (UnbiasedStd, "torch_layernorm"),
    "layernorm.eps_outside_sqrt": (EpsOutsideSqrt, "torch_layernorm"),
    "rmsnorm.root_of_the_variance": (RootOfTheVariance, "torch_rmsnorm"),
    "layernorm.half_precision_accumulation": (HalfPrecisionAccumulation, "torch_layernorm"),
    "layernorm.scale_over_last_axis_only": (ScaleOverLastAxisOnly, "torch_layernorm"),
}

IMPLEMENTATIONS = [LayerNormImplementation(LayerNorm, "torch_layernorm"),
                   LayerNormImplementation(LayerNorm, "torch_rmsnorm")] + [
    LayerNormImplementation(layer, convention, name) for name, (layer, convention) in MUTANTS.items()
]
