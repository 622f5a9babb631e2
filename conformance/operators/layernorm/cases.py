"""LayerNorm's cases: the case record (:class:`LayerNormCase`) and which cases each check runs (:data:`GRIDS`).

A case normalizes the trailing ``normalized_axes`` axes of its input, one mean and variance per row (each
index of the leading axes); the data's offsets and spreads are drawn per row, so rows differ as tokens do.
LayerNorm keeps no running state: the running-statistics and porting grids are not its (porting a LayerNorm
is carrying eps, the axes and gamma and beta: the report's cheat-sheet, :mod:`.vocabulary`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference import LayerNormConvention

from ...core.case import StatelessCase, stateless_grids
from ...core.dtypes import ALL_DTYPES, round_to
from .spec import LayerNormSpec

__all__ = ["FRAMEWORK_OPTIONS", "GRIDS", "LayerNormCase", "draw_case"]


@dataclass(frozen=True)
class LayerNormCase(StatelessCase):
    """One run except the implementation: shape, how many trailing axes are normalized, dtype, eps, which
    parameters the layer has, the data's character and the number of steps. The default eps, 2**-13, is
    none of the frameworks' defaults (a layer built without the case's eps shows) and is exact in float32
    and float16, so that a framework holding eps in float32 (an ONNX attribute) computes with the case's
    eps; the edge case ``eps_inexact_in_float32`` is where that rounding shows."""

    shape: tuple[int, ...]
    normalized_axes: int = 1
    dtype: str = "float32"
    eps: float = 2.0**-13
    affine: bool = True
    # None: the normalization's own (LayerNorm's gain and bias, RMSNorm's gain alone: the record's ``centered``).
    bias: bool | None = None
    data: str = "normal"
    steps: int = 1
    options: tuple[tuple[str, object], ...] = ()

    LAYOUT_FIELDS = ("normalized_axes",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.normalized_axes <= len(self.shape):
            raise ValueError(f"a LayerNorm case normalizes 1 to {len(self.shape)} trailing axes of shape "
                             f"{self.shape}, got {self.normalized_axes}")

    @property
    def layout(self) -> str:
        return f"last{self.normalized_axes}"

    @property
    def group_axes(self) -> tuple[int, ...]:
        """The leading axes: each of their indices is a row with its own statistics."""
        return tuple(range(self.rank - self.normalized_axes))

    @property
    def parameter_axis(self) -> int:
        """The last axis: gamma's (the contract's wrong-size input adds one feature along it)."""
        return -1

    @property
    def normalized_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.rank - self.normalized_axes:])


    def has_bias(self, convention: LayerNormConvention) -> bool:
        """Whether the layer has a bias: the case's, else the normalization's (none for RMSNorm)."""
        return convention.centered if self.bias is None else self.bias

    def spec(self, convention: LayerNormConvention) -> LayerNormSpec:
        """The layer spec; LayerNorm's conventions differ only in defaults, which a case always overrides."""
        return LayerNormSpec(self.normalized_shape, self.rank, self.eps, self.affine, self.has_bias(convention),
                             self.dtype, options=self.options)

    def initial_state(self, convention: LayerNormConvention) -> dict[str, np.ndarray]:
        """Non-trivial gamma and beta, where the layer has them."""
        rng, shape = self.rng("state"), self.normalized_shape
        gamma, beta = rng.uniform(0.5, 1.5, shape), rng.uniform(-0.5, 0.5, shape)
        return {**({"gamma": gamma} if self.affine else {}), **({"beta": beta} if self.has_bias(convention) else {})}

    def direction(self) -> dict[str, np.ndarray | None]:
        """The second-order checks' direction ``(vx, vgamma, vbeta)``, None for absent parameters."""
        rng = self.rng("direction")
        vx = round_to(rng.standard_normal(self.shape), self.dtype)
        vgamma, vbeta = rng.standard_normal((2, *self.normalized_shape))
        # A layer without a bias never reads vbeta (the reference side judges hvp_beta by the spec).
        return {"vx": vx, "vgamma": vgamma if self.affine else None, "vbeta": None if self.bias is False else vbeta}


# (shape, normalized axes): a batch of feature vectors, a batch of token sequences, images normalized over
# their last one, two and three axes (channels and space), and a sequence normalized over its last two.
LAYOUTS = (((6, 8), 1), ((2, 3, 8), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), 2), ((2, 3, 4, 5), 3), ((2, 5, 6), 2))


def layout_cases(dtypes: tuple[str, ...] = ALL_DTYPES, **changes) -> list[LayerNormCase]:
    return [LayerNormCase(shape, k, dtype, **changes) for shape, k in LAYOUTS for dtype in dtypes]


# Framework options that change the numerics (as BatchNorm's), at their alternatives to the default.
FRAMEWORK_OPTIONS: dict[str, tuple[tuple[object, ...], tuple[str, ...]]] = {
    # Flax: the variance as E[x^2] - E[x]^2 (default) or two-pass.
    "use_fast_variance": ((False,), ("float32", "float64")),
}


def option_cases(**changes) -> list[LayerNormCase]:
    return [case.with_(options=((name, value),)) for name, (values, dtypes) in FRAMEWORK_OPTIONS.items()
            for value in values for case in layout_cases(dtypes, **changes)]


EDGE_CASES = {
    "one_feature": LayerNormCase((4, 1)),  # zero variance in every row: y = beta
    "one_row": LayerNormCase((1, 8)),
    "zero_rows": LayerNormCase((0, 8)),
    "zero_rows_3d": LayerNormCase((2, 0, 8)),
    "constant_row": LayerNormCase((6, 8), data="constant"),
    "large_mean_offset": LayerNormCase((6, 64), data="offset"),
    "large_mean_offset_float64": LayerNormCase((6, 64), dtype="float64", data="offset"),
    "large_mean_offset_two_pass": LayerNormCase((6, 64), data="offset", options=(("use_fast_variance", False),)),
    "tiny_eps": LayerNormCase((6, 8), eps=1e-12, data="constant"),
    "huge_eps": LayerNormCase((6, 8), eps=1e3),
    "nan_input": LayerNormCase((6, 8), data="nan"),
    "inf_input": LayerNormCase((6, 8), data="inf"),
    "rank_1_input": LayerNormCase((8,)),
    "eps_inexact_in_float32": LayerNormCase((6, 8), dtype="float64", eps=1e-4),
}
CONTRACT = [LayerNormCase((6, 8)), LayerNormCase((2, 3, 8)), LayerNormCase((2, 3, 4, 5), 2)]
# Production sizes: transformer hidden sizes (4096 and 1024 features per row) at production magnitudes.
LARGE = [((256, 4096), 1), ((4, 128, 1024), 1)]


GRIDS = stateless_grids(layout_cases, option_cases, EDGE_CASES, CONTRACT,
                        [LayerNormCase(shape, k, dtype, data="large", steps=2) for shape, k in LARGE
              for dtype in ("float16", "bfloat16", "float32")])


def draw_case(draw, capabilities) -> LayerNormCase:
    """A random case within ``capabilities`` (Hypothesis): rank, sizes, normalized axes, dtype, eps, three
    steps."""
    from hypothesis import strategies as st

    rank = draw(st.sampled_from(sorted(r for r in capabilities.ranks if r >= 2)))
    axes = draw(st.integers(1, rank - 1)) if "multi_axis" in capabilities.features else 1
    shape = tuple(draw(st.integers(1, 6)) for _ in range(rank))
    dtype = draw(st.sampled_from(sorted(capabilities.dtypes & {"float32", "float64"})))
    # Powers of two near the frameworks' defaults: exact wherever eps is held in float32 (see LayerNormCase).
    eps = draw(st.sampled_from([2.0**-20, 2.0**-17, 2.0**-10, 2.0**-3]))
    return LayerNormCase(shape, axes, dtype, eps=eps, steps=3)
