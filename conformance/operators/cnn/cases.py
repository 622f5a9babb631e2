"""The CNN's cases: the case record (:class:`NetworkCase`) and which cases each check runs (:data:`GRIDS`).

A case is a batch of images (``shape``: ``(N, 3, H, W)`` channels first or ``(N, H, W, 3)`` channels last),
the BatchNorms' ``eps`` and ``new_batch_weight`` (as BatchNorm's cases: each convention's own momentum comes
from it), the dtype, the data's character and the number of training steps. Its numbers do not depend on
the layout: batches, state and ``dy`` are drawn for the channels-first twin (:attr:`NetworkCase.canonical`)
and moved, so a channels-first and a channels-last framework run the same network on the same images.

The grids hold the seeds' batch (8 images of 3x32x32, PyTorch's eps 1e-5 and momentum 0.1) in both layouts,
and a non-square one (16x24) where a classifier permuted with height and width swapped would show;
inference also from an extreme state (``state="extreme"``: zero, negative, tiny and large scales, zero and
tiny variances, running means far from the batch's), where folding a BatchNorm into its convolution is
least forgiving. Checks
the CNN has no grid for (edge cases, the contract's bad input, second order, state from construction: its
weights are each framework's random initialisation, ...) are not generated for it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from reference import Convention

from ...core.case import ChannelCase
from ...core.dtypes import round_to
from .spec import BLOCKS, CLASSES, IN_CHANNELS, NetworkSpec, bn_field

__all__ = ["GRIDS", "NetworkCase", "draw_case", "seeds"]


@dataclass(frozen=True)
class NetworkCase(ChannelCase):
    """One run of the network except the implementation (see the module docstring)."""

    shape: tuple[int, ...]
    channel_axis: int = 1
    dtype: str = "float32"
    eps: float = 1e-5
    new_batch_weight: float | None = 0.1
    data: str = "normal"
    steps: int = 1
    options: tuple[tuple[str, object], ...] = ()
    state: str = "normal"  # the BatchNorms' parameters and running statistics: one of STATES

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state not in STATES:
            raise ValueError(f"a CNN case's state is one of {STATES}, got {self.state!r}")
        if len(self.shape) != 4 or self.shape[self.channel_axis] != IN_CHANNELS:
            raise ValueError(f"a CNN case is a batch of {IN_CHANNELS}-channel images, got shape {self.shape} with "
                             f"channel_axis={self.channel_axis}")
        if self.height % 4 or self.width % 4:
            raise ValueError(f"two 2x2 pools need a height and width divisible by 4, got {self.height}x{self.width}")

    @property
    def height(self) -> int:
        return self.shape[2] if self.channel_axis == 1 else self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[3] if self.channel_axis == 1 else self.shape[2]

    @property
    def canonical(self) -> NetworkCase:
        """The same case channels first: whose id seeds the numbers of both layouts."""
        n = self.shape[0]
        return self.with_(shape=(n, IN_CHANNELS, self.height, self.width), channel_axis=1)

    def rng(self, salt: str = "") -> np.random.Generator:
        return np.random.default_rng(zlib.adler32(f"{self.canonical.id}/{salt}".encode()))

    def batches(self) -> list[np.ndarray]:
        if self.channel_axis == 1:
            return super().batches()
        return [np.ascontiguousarray(np.moveaxis(x, 1, -1)) for x in self.canonical.batches()]

    def cotangent(self) -> np.ndarray:
        """The ``dy`` of the gradient checks: one per logit, (N, classes)."""
        return round_to(self.rng("dy").standard_normal((self.shape[0], CLASSES)), self.dtype)

    def spec(self, convention: Convention) -> NetworkSpec:
        return NetworkSpec(self.height, self.width, self.eps, convention.momentum_for(self.new_batch_weight),
                           self.channel_axis, self.dtype)

    def initial_state(self, convention: Convention) -> dict[str, np.ndarray]:
        """Every parameter in PyTorch's layout (kernels scaled by 1/sqrt(fan-in), as initialisers do) and
        non-trivial BatchNorm parameters and running statistics, in ``convention``'s fields; counters stay
        as built."""
        rng, features = self.rng("state"), BLOCKS[-1] * (self.height // 4) * (self.width // 4)
        state = {"conv1": rng.standard_normal((BLOCKS[0], IN_CHANNELS, 3, 3)) / np.sqrt(IN_CHANNELS * 9),
                 "conv2": rng.standard_normal((BLOCKS[1], BLOCKS[0], 3, 3)) / np.sqrt(BLOCKS[0] * 9),
                 "fc_weight": rng.standard_normal((CLASSES, features)) / np.sqrt(features),
                 "fc_bias": rng.uniform(-0.1, 0.1, CLASSES)}
        for block, c in enumerate(BLOCKS, 1):
            gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
            mean, var = rng.uniform(-1.0, 1.0, c), rng.uniform(0.5, 2.0, c)
            if self.state == "extreme":
                gamma, beta, mean, var = (np.resize(values, c) for values in _EXTREME)
            spread = np.sqrt(var) if convention.averaged_spread == "std" else var
            state |= {bn_field(block, "gamma"): gamma, bn_field(block, "beta"): beta,
                      bn_field(block, "running_mean"): mean, bn_field(block, convention.spread_field): spread}
        return state


STATES = ("normal", "extreme")
# The extreme state's (gamma, beta, running mean, running variance), cycled over each BatchNorm's channels
# (lengths 5, 3, 4, 6: every combination recurs within 60 channels): values training reaches and folding
# for deployment must carry (a zero or negative scale, a variance at zero beside eps, running statistics far
# from the batch's).
_EXTREME = ((-1.5, 0.0, 1e-6, 1e3, 1.0), (0.0, 1e3, -0.5), (0.0, 1e3, -1e3, 0.5),
            (0.0, 1e-8, 1e4, 1.0, 1e-3, 2.0))
SEEDS = (8, IN_CHANNELS, 32, 32)  # seed 002's batch
NON_SQUARE = (4, IN_CHANNELS, 16, 24)


def seeds(dtypes: tuple[str, ...] = ("float32", "float64"), shape: tuple[int, ...] = SEEDS,
          **changes) -> list[NetworkCase]:
    """The batch ``shape`` (channels first) in both layouts, for each dtype."""
    n, c, h, w = shape
    return [NetworkCase(shape if axis == 1 else (n, h, w, c), axis, dtype, **changes)
            for axis in (1, -1) for dtype in dtypes]


# Which cases each check runs, by check name (BatchNorm's check names: the same generic bodies).
GRIDS = {
    "training_output": seeds,
    "inference_output": lambda: seeds() + seeds(state="extreme"),
    "inference_after_training": lambda: seeds(steps=3),
    "gradients": lambda: seeds() + seeds(("float32",), NON_SQUARE),
    "running_statistics": lambda: [c for w in (0.1, None) for c in seeds(new_batch_weight=w, steps=3)],
    "train_eval_train": lambda: seeds(("float32",), steps=4),
    "caller_arrays_unmodified": lambda: seeds(("float32",)),
}


def draw_case(draw, capabilities) -> NetworkCase:
    """A random case within ``capabilities`` (Hypothesis): batch size, height and width (multiples of 4, so
    also non-square), layout, dtype, eps, new-batch weight, three steps."""
    from hypothesis import strategies as st

    axis = draw(st.sampled_from(sorted(capabilities.channel_axes)))
    n, h, w = draw(st.integers(2, 6)), 4 * draw(st.integers(1, 3)), 4 * draw(st.integers(1, 3))
    return NetworkCase(
        (n, IN_CHANNELS, h, w) if axis == 1 else (n, h, w, IN_CHANNELS), axis,
        draw(st.sampled_from(sorted(capabilities.dtypes & {"float32", "float64"}))),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])), new_batch_weight=draw(st.sampled_from([0.1, 0.5, 0.9, 1.0])),
        steps=3,
    )
