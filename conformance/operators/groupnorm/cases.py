"""GroupNorm's cases: the case record (:class:`GroupNormCase`) and which cases each check runs (:data:`GRIDS`).

A case normalizes each (sample, group of ``C / groups`` consecutive channels) of its input; ``groups == C`` is
InstanceNorm, which InstanceNorm implementations run alone (the ``grouped`` feature). Offsets and spreads are
drawn per (sample, channel), so the channels of one group differ as a network's do. GroupNorm keeps no
running state (InstanceNorm's ``track_running_stats=True`` is the ``instancenorm`` operator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference import GroupNormConvention

from ...core.case import StatelessCase, stateless_grids
from ...core.dtypes import ALL_DTYPES, round_to
from .spec import GroupNormSpec

__all__ = ["FRAMEWORK_OPTIONS", "GRIDS", "GroupNormCase", "draw_case"]


@dataclass(frozen=True)
class GroupNormCase(StatelessCase):
    """One run except the implementation: shape, groups, the channel axis (1 or -1), dtype, eps, which
    parameters the layer has, the data's character and the number of steps. The default eps, 2**-13, is none of
    the frameworks' defaults and exact in float32 and float16 (LayerNorm's case says why)."""

    shape: tuple[int, ...]
    groups: int
    channel_axis: int = 1
    dtype: str = "float32"
    eps: float = 2.0**-13
    affine: bool = True
    bias: bool = True
    data: str = "normal"
    steps: int = 1
    options: tuple[tuple[str, object], ...] = ()

    LAYOUT_FIELDS = ("groups", "channel_axis")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.shape) < 2 or self.channel_axis not in (1, -1):
            raise ValueError(f"a GroupNorm case needs a batch and a channel axis 1 or -1, got shape {self.shape} "
                             f"and channel_axis {self.channel_axis}")
        if self.groups < 1 or self.num_channels % self.groups:
            raise ValueError(f"a GroupNorm case's groups must divide its {self.num_channels} channels, "
                             f"got {self.groups}")

    @property
    def num_channels(self) -> int:
        return self.shape[self.channel_axis]

    @property
    def layout(self) -> str:
        return f"{'cfirst' if self.channel_axis == 1 else 'clast'}-g{self.groups}"

    @property
    def group_axes(self) -> tuple[int, ...]:
        """Data are drawn per (sample, channel)."""
        return (0, self.channel_axis % self.rank)

    @property
    def parameter_axis(self) -> int:
        """The channel axis: gamma's (the contract's wrong-size input adds one channel)."""
        return self.channel_axis

    def params(self) -> dict:
        """The base's, and two counts frameworks refuse by (deviation entries match them): the values each
        (sample, group) normalizes over (``group_size``) and the samples (``batch``)."""
        per_sample = int(np.prod(self.shape[1:]))
        return {**super().params(), "group_size": per_sample // self.groups, "batch": self.shape[0]}


    def spec(self, convention: GroupNormConvention) -> GroupNormSpec:
        """The layer spec; the conventions differ in defaults, which a case always overrides, and in whether the
        parameters are per group."""
        return GroupNormSpec(self.num_channels, self.groups, self.rank, self.channel_axis, self.eps, self.affine,
                             self.bias, self.dtype, options=self.options,
                             per_group=convention.parameter_shape == "group")

    def initial_state(self, convention: GroupNormConvention) -> dict[str, np.ndarray]:
        """Non-trivial gamma and beta, where the layer has them, of the convention's parameter shape."""
        shape = self.spec(convention).parameter_shape
        rng = self.rng("state")
        gamma, beta = rng.uniform(0.5, 1.5, shape), rng.uniform(-0.5, 0.5, shape)
        return {**({"gamma": gamma} if self.affine else {}), **({"beta": beta} if self.bias else {})}

    def direction(self) -> dict[str, np.ndarray | None]:
        """The second-order checks' direction ``(vx, vgamma, vbeta)`` (per channel: a per-group layer's
        reference side sums it per group), None for absent parameters."""
        rng = self.rng("direction")
        vx = round_to(rng.standard_normal(self.shape), self.dtype)
        vgamma, vbeta = rng.standard_normal((2, self.num_channels))
        return {"vx": vx, "vgamma": vgamma if self.affine else None, "vbeta": vbeta if self.bias else None}


# (shape, groups, channel axis): six channels in groups of 1, 2, 3 and 6 (InstanceNorm) at every rank and both
# channel positions; the InstanceNorm layouts (groups 6) cover ranks 3-5 channels first and rank 4 and 5 last.
LAYOUTS = (
    ((4, 6), 2, 1),
    ((2, 6, 5), 6, 1),
    ((2, 5, 6), 2, -1),
    ((2, 6, 3, 4), 3, 1),
    ((2, 6, 3, 4), 6, 1),
    ((2, 3, 4, 6), 1, -1),
    ((2, 3, 4, 6), 6, -1),
    ((2, 6, 2, 3, 2), 6, 1),
    ((2, 2, 3, 2, 6), 6, -1),
    ((2, 2, 3, 2, 6), 3, -1),
)


def layout_cases(dtypes: tuple[str, ...] = ALL_DTYPES, **changes) -> list[GroupNormCase]:
    return [GroupNormCase(shape, groups, axis, dtype, **changes) for shape, groups, axis in LAYOUTS for dtype in dtypes]


# Framework options that change the numerics, at their alternatives to the default.
FRAMEWORK_OPTIONS: dict[str, tuple[tuple[object, ...], tuple[str, ...]]] = {
    # Flax: the variance as E[x^2] - E[x]^2 (default) or two-pass.
    "use_fast_variance": ((False,), ("float32", "float64")),
}


def option_cases(**changes) -> list[GroupNormCase]:
    return [case.with_(options=((name, value),)) for name, (values, dtypes) in FRAMEWORK_OPTIONS.items()
            for value in values for case in layout_cases(dtypes, **changes)]


def _channels_last(case: GroupNormCase) -> GroupNormCase:
    """``case`` with its channels moved last (the same statistics, as a channels-last framework is given them)."""
    shape = (case.shape[0], *case.shape[2:], case.shape[1])
    return case.with_(shape=shape, channel_axis=-1)


# Written channels first; each also channels last (``_clast``), so that a framework of either position runs all.
_EDGE_CASES = {
    "one_value_per_group": GroupNormCase((4, 6), 6),  # zero variance in every group: y = beta
    "one_sample": GroupNormCase((1, 6, 5), 3),
    "zero_samples": GroupNormCase((0, 6, 5), 3),
    "constant_group": GroupNormCase((2, 6, 5), 6, data="constant"),
    "large_mean_offset": GroupNormCase((2, 6, 64), 6, data="offset"),
    "large_mean_offset_float64": GroupNormCase((2, 6, 64), 6, dtype="float64", data="offset"),
    "large_mean_offset_two_pass": GroupNormCase((2, 6, 64), 6, data="offset", options=(("use_fast_variance", False),)),
    "tiny_eps": GroupNormCase((2, 6, 5), 3, eps=1e-12, data="constant"),
    "huge_eps": GroupNormCase((2, 6, 5), 3, eps=1e3),
    "nan_input": GroupNormCase((2, 6, 5), 3, data="nan"),
    "inf_input": GroupNormCase((2, 6, 5), 3, data="inf"),
    "eps_inexact_in_float32": GroupNormCase((2, 6, 5), 3, dtype="float64", eps=1e-4),
}
EDGE_CASES = {**_EDGE_CASES, **{f"{name}_clast": _channels_last(case) for name, case in _EDGE_CASES.items()}}
CONTRACT = [GroupNormCase((2, 6, 5), 3), GroupNormCase((2, 6, 5), 6), GroupNormCase((2, 3, 4, 6), 6, -1)]
# Production sizes: a diffusion U-Net's 32 groups of 64 channels over 64x64 images, both channel positions, and
# an image model's InstanceNorm over 128x128 (2**20 values, 2**14 per (sample, channel)).
LARGE = (((4, 64, 64, 64), 32, 1), ((4, 64, 64, 64), 32, -1), ((4, 16, 128, 128), 16, 1))


GRIDS = stateless_grids(layout_cases, option_cases, EDGE_CASES, CONTRACT,
                        [GroupNormCase(shape, groups, axis, dtype, data="large", steps=2)
              for shape, groups, axis in LARGE for dtype in ("float16", "bfloat16", "float32")])


def draw_case(draw, capabilities) -> GroupNormCase:
    """A random case within ``capabilities`` (Hypothesis): rank, sizes, channel position, groups (all channels
    where the implementation has no ``grouped``), dtype, eps, three steps."""
    from hypothesis import strategies as st

    rank = draw(st.sampled_from(sorted(r for r in capabilities.ranks if r >= 2)))
    axis = draw(st.sampled_from(sorted(capabilities.channel_axes)))
    channels_per_group = draw(st.integers(1, 3)) if "grouped" in capabilities.features else 1
    groups = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    shape[axis] = groups * channels_per_group
    dtype = draw(st.sampled_from(sorted(capabilities.dtypes & {"float32", "float64"})))
    eps = draw(st.sampled_from([2.0**-20, 2.0**-17, 2.0**-10, 2.0**-3]))
    return GroupNormCase(tuple(shape), groups, axis, dtype, eps=eps, steps=3)
