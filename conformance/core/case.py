"""Cases, declared once as data: frozen records with stable readable ids, and the seeded data they run on.

An operator declares its case record as a frozen dataclass deriving from :class:`Case`, with at least the
fields ``shape``, ``dtype``, ``data``, ``steps`` and ``options`` (framework options that change the
numerics, sorted ``(name, value)`` pairs) besides its own settings; this base gives every such record its
id, its parameters and its data. Inputs are seeded from the case id (adler32, as JAX seeds from test
names), so every run and every pytest-xdist worker sees the same numbers.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, fields, replace

import numpy as np

from .dtypes import ALL_DTYPES, round_to

__all__ = ["DATA_KINDS", "Case", "ChannelCase", "StatelessCase", "contract_grids", "stateless_grids"]

# How the data looks per statistics group (a channel, for BatchNorm): ``normal`` offsets in [-2, 2] and
# spreads in [0.5, 2]; ``offset`` puts the mean 1e4 spreads away (|mean| / std ~ 1e4), hostile to one-pass
# variances; ``constant`` makes group 0 constant (zero variance); ``nan`` and ``inf`` poison one value of
# group 0; ``large`` is production-scale magnitudes: spreads 150-300 and offsets 3-10 spreads away (|x| from
# ~450 to ~5000, where a float16 square already overflows: x**2 > 65504), except group 0 at 100 spreads (as
# real activations reach; |x| up to ~3e4). The bounds reject wrong answers at 100 spreads in float16 and
# float32, in bfloat16 only up to ~10 (tests/test_harness_tolerances.py): the other groups.
DATA_KINDS = ("normal", "offset", "constant", "nan", "inf", "large")


class Case:
    """The behaviour every operator's case record shares. Subclasses say which axes index the statistics
    groups (:attr:`group_axes`: offsets and spreads are drawn per group) and, optionally, a :attr:`layout`
    word for the id and the fields that word stands for (:attr:`LAYOUT_FIELDS`)."""

    LAYOUT_FIELDS: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """A misspelt data kind or dtype would otherwise silently give normal data or fail only in a framework."""
        if self.data not in DATA_KINDS:
            raise ValueError(f"Case data {self.data!r} is not one of {DATA_KINDS}")
        if self.dtype not in ALL_DTYPES:
            raise ValueError(f"Case dtype {self.dtype!r} is not one of {ALL_DTYPES}")

    @property
    def group_axes(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def layout(self) -> str:
        return ""

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def id(self) -> str:
        """``shape-layout-dtype``, then every other field that differs from its default, then the options."""
        parts = ["x".join(map(str, self.shape)) or "scalar", *([self.layout] if self.layout else []), self.dtype]
        head = {"shape", "dtype", "options", *self.LAYOUT_FIELDS}
        for f in fields(self):
            if f.name not in head and (value := getattr(self, f.name)) != f.default:
                parts.append(f"{f.name}={value}")
        parts += [f"{name}={value}" for name, value in self.options]
        return "-".join(parts)

    def params(self) -> dict:
        """Flat parameters for reports and deviation matching; each option is a parameter of its own."""
        params = {k: v for k, v in asdict(self).items() if k != "options"}
        return {**params, **dict(self.options), "shape": list(self.shape), "rank": self.rank}

    def rng(self, salt: str = "") -> np.random.Generator:
        return np.random.default_rng(zlib.adler32(f"{self.id}/{salt}".encode()))

    def batches(self) -> list[np.ndarray]:
        """``steps`` different inputs of this case's shape, rounded to its dtype."""
        rng = self.rng("x")
        axes = [a % max(self.rank, 1) for a in self.group_axes]
        per_group = [self.shape[a] if a in axes else 1 for a in range(self.rank)]
        groups = int(np.prod([self.shape[a] for a in axes]))
        out = []
        for _ in range(self.steps):
            # Production-size data is drawn in float32 (twice as fast; its values are rounded anyway).
            z = rng.standard_normal(self.shape, np.float32 if self.data == "large" else np.float64)
            spread = rng.uniform(0.5, 2.0, groups).reshape(per_group)
            offset = rng.uniform(-2.0, 2.0, groups).reshape(per_group)
            if self.data == "offset":
                offset = 1e4 * spread * np.sign(offset)
            elif self.data == "large":
                spread = 200 * (spread + 1) / 2  # in [150, 300]
                offset = spread * np.sign(offset) * rng.uniform(3.0, 10.0, groups).reshape(per_group)
                offset.flat[0] = 100 * spread.flat[0] * np.sign(offset.flat[0])
            x = offset + spread * z
            group0 = np.moveaxis(x, axes, range(len(axes)))[(0,) * len(axes)]  # a view: writes land in x
            if self.data == "constant":
                group0[...] = offset.flat[0]
            elif self.data in ("nan", "inf") and group0.size:
                group0.flat[0] = np.nan if self.data == "nan" else np.inf
            out.append(round_to(x, self.dtype))
        return out

    def cotangent(self) -> np.ndarray:
        """The ``dy`` of the gradient checks."""
        return round_to(self.rng("dy").standard_normal(self.shape), self.dtype)

    def with_(self, **changes) -> Case:
        return replace(self, **changes)


class ChannelCase(Case):
    """A case whose statistics groups and parameters are its channels, at ``channel_axis`` (a field of the
    record): the id says ``cfirst`` (axis 1) or ``clast``."""

    LAYOUT_FIELDS = ("channel_axis",)

    @property
    def layout(self) -> str:
        return "cfirst" if self.channel_axis == 1 else "clast"

    @property
    def group_axes(self) -> tuple[int, ...]:
        return (self.channel_axis,)

    @property
    def parameter_axis(self) -> int:
        """The axis whose size the parameters have (the contract's wrong-size input adds one along it)."""
        return self.channel_axis


def contract_grids(contract: list[Case]) -> dict:
    """The contract checks' grids over an operator's ``contract`` cases (its GRIDS entries): bad input and a
    mismatched dy on each, the output's dtype in every dtype, the caller's arrays in float32 and float16."""
    return {
        "bad_input": lambda: contract,
        "mismatched_dy": lambda: contract,
        "output_policy": lambda: [case.with_(dtype=dtype) for case in contract for dtype in ALL_DTYPES],
        "caller_arrays_unmodified": lambda: [case.with_(dtype=dtype) for case in contract
                                             for dtype in ("float32", "float16")],
    }


class StatelessCase(Case):
    """A case of a normalization without running state (LayerNorm's, GroupNorm's): statistics per row of each
    input, accumulated in at least float32 for half-precision input."""

    @property
    def accumulation_dtype(self) -> str:
        """At least float32 for half-precision input (every framework here computes it so), unless an option
        asks for the input's own precision (Flax's ``force_float32_reductions=False``)."""
        if self.dtype in ("float16", "bfloat16") and dict(self.options).get("force_float32_reductions", True):
            return "float32"
        return self.dtype

    def batches(self) -> list[np.ndarray]:
        """The base's seeded batches; an input without rows has no row to draw statistics for."""
        if 0 in self.shape:
            return [round_to(np.zeros(self.shape), self.dtype) for _ in range(self.steps)]
        return super().batches()


# The parameters a stateless normalization's layer may lack, as (affine, bias): neither, a scale only, an offset only.
PARAMETER_SETS = ((False, False), (True, False), (False, True))


def stateless_grids(layout_cases, option_cases, edge_cases: dict, contract: list[Case], production: list[Case]
                    ) -> dict:
    """The grids of a normalization without running state (LayerNorm's, GroupNorm's): ``layout_cases(dtypes,
    **changes)`` and ``option_cases(**changes)`` make the operator's layouts in each dtype and at each framework
    option; every parameter set (:data:`PARAMETER_SETS`) runs in float32."""
    def parameter_sets(**changes) -> list[Case]:
        return [c for a, b in PARAMETER_SETS for c in layout_cases(("float32",), affine=a, bias=b, **changes)]

    return {
        "training_output": layout_cases,
        "inference_output": layout_cases,
        "inference_after_training": lambda: layout_cases(steps=3),
        "layer_options": lambda: parameter_sets(steps=2) + option_cases(steps=2),
        "gradients": lambda: layout_cases() + parameter_sets() + option_cases(),
        "hessian_vector_product": lambda: layout_cases(("float64", "float32")) + parameter_sets(),
        "state_from_construction": lambda: layout_cases(steps=3),
        "edge_case": lambda: edge_cases,
        **contract_grids(contract),
        "production_size": lambda: production,
    }
