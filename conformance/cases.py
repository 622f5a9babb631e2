"""Cases, declared once as data: frozen records with stable readable ids, and seeded inputs.

A :class:`Case` fixes everything about one run except the implementation: shape, channel position,
dtype, layer options, the data's character and the number of training steps. A case gives the running
average's rate as ``new_batch_weight``, the weight ``w`` of the batch statistic in
``run = (1 - w) * run + w * batch`` (what PyTorch calls momentum); :meth:`Case.spec` converts it into the
implementation's own ``momentum`` (:attr:`LayerSpec.momentum`, e.g. ``1 - w`` for Keras, ONNX and Flax).
Inputs are seeded from the case id (adler32, as JAX seeds from test names), so every run and every
pytest-xdist worker sees the same numbers.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, replace

import numpy as np

from reference import convert_momentum

from .adapters.base import ALL_DTYPES, LayerSpec

__all__ = ["Case", "DATA_KINDS", "FRAMEWORK_OPTIONS", "LAYOUTS", "dtype_of", "layout_cases", "option_cases", "round_to"]

# Channels-first shapes per rank; channels-last cases move the channel axis to the end.
_SHAPES = {2: (16, 3), 3: (4, 3, 5), 4: (2, 3, 4, 5), 5: (2, 3, 2, 3, 4)}
LAYOUTS = tuple((rank, axis) for rank in _SHAPES for axis in (1, -1))

# How the data looks per channel: ``normal`` offsets in [-2, 2] and spreads in [0.5, 2];
# ``offset`` puts the mean 1e4 spreads away (|mean| / std ~ 1e4), hostile to one-pass variances;
# ``constant`` makes channel 0 constant (zero variance); ``nan`` and ``inf`` poison one value of channel 0;
# ``large`` is production-scale magnitudes: spreads 150-300 and offsets 3-10 spreads away (|x| from ~450
# to ~5000, where a float16 square already overflows: x**2 > 65504), |mean| / std kept <= 10 so that the
# bounds reject wrong answers even in bfloat16 (tests/test_harness_tolerances.py).
DATA_KINDS = ("normal", "offset", "constant", "nan", "inf", "large")


def dtype_of(name: str) -> np.dtype:
    """NumPy dtype for a dtype name; bfloat16 comes from ml_dtypes."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype``: both the implementation and the reference get exactly these."""
    return np.asarray(values).astype(dtype_of(dtype))


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]
    channel_axis: int = 1
    dtype: str = "float32"
    eps: float = 1e-3
    new_batch_weight: float | None = 0.1  # w in run = (1 - w) run + w batch; None: cumulative, w = 1 / step
    affine: bool = True
    track_running_stats: bool = True
    trainable: bool = True
    data: str = "normal"
    steps: int = 1
    options: tuple[tuple[str, object], ...] = ()  # framework options (LayerSpec.options), sorted by name

    def __post_init__(self) -> None:
        """A misspelt data kind or dtype would otherwise silently give normal data or fail only in a framework."""
        if self.data not in DATA_KINDS:
            raise ValueError(f"Case data {self.data!r} is not one of {DATA_KINDS}")
        if self.dtype not in ALL_DTYPES:
            raise ValueError(f"Case dtype {self.dtype!r} is not one of {ALL_DTYPES}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def accumulation_dtype(self) -> str:
        """The precision reductions must run in: at least float32 (every framework accumulates half-precision
        input in float32), unless an option asks for the input's own (Flax's ``force_float32_reductions``)."""
        if self.dtype in ("float16", "bfloat16") and dict(self.options).get("force_float32_reductions", True):
            return "float32"
        return self.dtype

    @property
    def num_features(self) -> int:
        return self.shape[self.channel_axis]

    @property
    def values_per_channel(self) -> int:
        return int(np.prod(self.shape)) // max(self.num_features, 1)

    @property
    def id(self) -> str:
        layout = "cfirst" if self.channel_axis == 1 else "clast"
        parts = ["x".join(map(str, self.shape)) or "scalar", layout, self.dtype]
        defaults = Case(self.shape)
        for name in ("eps", "new_batch_weight", "affine", "track_running_stats", "trainable", "data", "steps"):
            value = getattr(self, name)
            if value != getattr(defaults, name):
                parts.append(f"{name}={value}")
        parts += [f"{name}={value}" for name, value in self.options]
        return "-".join(parts)

    def params(self) -> dict:
        """Flat parameters for reports and deviation matching; each option is a parameter of its own."""
        params = {k: v for k, v in asdict(self).items() if k != "options"}
        return {**params, **dict(self.options), "shape": list(self.shape), "rank": self.rank}

    def spec(self, convention: str) -> LayerSpec:
        """The layer spec, with ``new_batch_weight`` expressed as ``convention``'s own momentum."""
        # The torch convention's momentum is the new batch's weight, so it converts from there.
        w = self.new_batch_weight
        momentum = None if w is None else convert_momentum(w, "torch", convention)
        return LayerSpec(
            num_features=self.num_features, rank=self.rank, channel_axis=self.channel_axis, eps=self.eps,
            momentum=momentum, affine=self.affine, track_running_stats=self.track_running_stats,
            trainable=self.trainable, dtype=self.dtype, options=self.options,
        )

    def rng(self, salt: str = "") -> np.random.Generator:
        return np.random.default_rng(zlib.adler32(f"{self.id}/{salt}".encode()))

    def batches(self) -> list[np.ndarray]:
        """``steps`` different inputs of this case's shape, rounded to its dtype."""
        rng = self.rng("x")
        c, axis = self.num_features, self.channel_axis % max(self.rank, 1)
        per_channel = [1] * self.rank
        per_channel[axis] = c
        out = []
        for _ in range(self.steps):
            # Production-size data is drawn in float32 (twice as fast; its values are rounded anyway).
            z = rng.standard_normal(self.shape, np.float32 if self.data == "large" else np.float64)
            spread = rng.uniform(0.5, 2.0, c).reshape(per_channel)
            offset = rng.uniform(-2.0, 2.0, c).reshape(per_channel)
            if self.data == "offset":
                offset = 1e4 * spread * np.sign(offset)
            elif self.data == "large":
                spread = 200 * (spread + 1) / 2  # in [150, 300]
                offset = spread * np.sign(offset) * rng.uniform(3.0, 10.0, c).reshape(per_channel)
            x = offset + spread * z
            channel0 = np.moveaxis(x, axis, 0)[0]  # a view: writes land in x
            if self.data == "constant":
                channel0[...] = offset.flat[0]
            elif self.data in ("nan", "inf") and channel0.size:
                channel0.flat[0] = np.nan if self.data == "nan" else np.inf
            out.append(round_to(x, self.dtype))
        return out

    def cotangent(self) -> np.ndarray:
        """The ``dy`` of the gradient checks."""
        return round_to(self.rng("dy").standard_normal(self.shape), self.dtype)

    def direction(self) -> dict[str, np.ndarray | None]:
        """The direction ``(vx, vgamma, vbeta)`` of the second-order checks (``None`` where there are no
        parameters); ``vx`` is rounded to the case's dtype, the parameters' components are float64 as
        parameters cross the protocol."""
        rng = self.rng("direction")
        vx = round_to(rng.standard_normal(self.shape), self.dtype)
        params = rng.standard_normal((2, self.num_features)) if self.affine else (None, None)
        return {"vx": vx, "vgamma": params[0], "vbeta": params[1]}

    def initial_state(self) -> dict[str, np.ndarray]:
        """Non-trivial gamma, beta and running statistics (so no term vanishes by accident)."""
        rng, c = self.rng("state"), self.num_features
        state = {}
        if self.affine:
            state |= {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.uniform(-0.5, 0.5, c)}
        if self.track_running_stats:
            state |= {"running_mean": rng.uniform(-1.0, 1.0, c), "running_var": rng.uniform(0.5, 2.0, c)}
        return state

    def with_(self, **changes) -> Case:
        return replace(self, **changes)


def _shape(rank: int, channel_axis: int, channels: int = 3) -> tuple[int, ...]:
    shape = list(_SHAPES[rank])
    shape[1] = channels
    return tuple(shape) if channel_axis == 1 else (shape[0], *shape[2:], shape[1])


def layout_cases(dtypes: tuple[str, ...] = ALL_DTYPES, **options) -> list[Case]:
    """Every rank and channel position, for each dtype."""
    return [Case(_shape(rank, axis), axis, dtype, **options) for rank, axis in LAYOUTS for dtype in dtypes]


# Framework options that change the numerics, each at its alternatives to the framework's default (the
# default is what every other case runs), with the dtypes where the alternative makes a difference.
# An implementation takes the ones it declares (Capabilities.options); the others skip these cases.
FRAMEWORK_OPTIONS: dict[str, tuple[tuple[object, ...], tuple[str, ...]]] = {
    # Flax: the variance as E[x^2] - E[x]^2 (default) or two-pass.
    "use_fast_variance": ((False,), ("float32", "float64")),
    # Flax linen: statistics and running averages at least float32 (default) or in the input's dtype.
    "force_float32_reductions": ((False,), ("float16", "bfloat16")),
    # Flax: parameters float32 (default) or in the input's dtype (``param_dtype``); the computation's dtype
    # inferred from input and parameters (default) or the input's (Flax's ``dtype``).
    "param_dtype": (("input",), ("float16", "bfloat16", "float64")),
    "compute_dtype": (("input",), ("float16", "bfloat16")),
}


def option_cases(**changes) -> list[Case]:
    """Every layout with each framework option at each of its alternatives."""
    return [
        case.with_(options=((name, value),))
        for name, (values, dtypes) in FRAMEWORK_OPTIONS.items()
        for value in values
        for case in layout_cases(dtypes, **changes)
    ]
