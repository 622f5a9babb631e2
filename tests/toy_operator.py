"""A second operator, declared entirely here, to hold the spine to being operator-neutral
(``tests/test_operators.py``): ``Scale``, ``y = gamma * x + beta`` per channel, with no statistics and a
convention record of its own kind (a default channel axis). Its correct NumPy implementation must pass every
generic check its grids reach; ``forgets_beta`` must fail them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, State
from conformance.core.case import Case
from conformance.core.comparison import Expected
from conformance.core.dtypes import ALL_DTYPES, round_to, unit_roundoff
from conformance.operators import Operator, Vocabulary


@dataclass(frozen=True)
class ScaleConvention:
    name: str
    channel_axis: int

    def defaults(self) -> dict[str, object]:
        return {"channel_axis": self.channel_axis}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScaleSpec:
    num_features: int
    rank: int
    channel_axis: int
    dtype: str

    def requirements(self) -> list[tuple[str, object, str]]:
        return [("dtypes", self.dtype, f"dtype {self.dtype}"), ("ranks", self.rank, f"rank {self.rank} input"),
                ("channel_axes", self.channel_axis, f"channel_axis={self.channel_axis}")]


@dataclass(frozen=True)
class ScaleCase(Case):
    shape: tuple[int, ...]
    channel_axis: int = 1
    dtype: str = "float32"
    data: str = "normal"
    steps: int = 1
    options: tuple[tuple[str, object], ...] = ()

    @property
    def group_axes(self) -> tuple[int, ...]:
        return (self.channel_axis,)

    @property
    def parameter_axis(self) -> int:
        return self.channel_axis

    def spec(self, convention: ScaleConvention) -> ScaleSpec:
        return ScaleSpec(self.shape[self.channel_axis], self.rank, self.channel_axis, self.dtype)

    def initial_state(self, convention: ScaleConvention) -> dict[str, np.ndarray]:
        c = self.shape[self.channel_axis]
        rng = self.rng("state")
        return {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.uniform(-0.5, 0.5, c)}

    def direction(self) -> dict[str, np.ndarray]:
        rng = self.rng("direction")
        c = self.shape[self.channel_axis]
        return {"vx": round_to(rng.standard_normal(self.shape), self.dtype), "vgamma": rng.standard_normal(c),
                "vbeta": rng.standard_normal(c)}


def _column(v: np.ndarray, case_or_layer) -> np.ndarray:
    shape = [1] * case_or_layer.rank
    shape[case_or_layer.channel_axis] = -1
    return np.reshape(v, shape)


class ScaleReference:
    """``y = gamma x + beta`` in float64; every result of a dtype with unit roundoff ``u`` holds a rounding of
    each operand and of the result, and a sum of ``n`` terms ``n u`` of their magnitudes."""

    def __init__(self, case: ScaleCase, convention: ScaleConvention, spec: ScaleSpec) -> None:
        self.case, self.spec = case, spec
        self.rank, self.channel_axis = case.rank, case.channel_axis
        self.u = 4 * unit_roundoff(case.dtype)
        self.state_now = {"gamma": np.ones(spec.num_features), "beta": np.zeros(spec.num_features)}

    def assign(self, held: State) -> None:
        self.state_now |= {k: np.asarray(v, np.float64) for k, v in held.assigned().items()}

    def _check(self, x: np.ndarray) -> np.ndarray:
        if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
            raise TypeError(f"x must be floating, got {x.dtype}")
        if x.ndim != self.rank or x.shape[self.channel_axis] != self.spec.num_features:
            raise ValueError(f"expected rank {self.rank} with {self.spec.num_features} channels, got {x.shape}")
        return np.asarray(x, np.float64)

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        x = self._check(x)
        g, b = _column(self.state_now["gamma"], self), _column(self.state_now["beta"], self)
        y = g * x + b
        return {"y": Expected(y, self.u * (np.abs(g * x) + np.abs(b) + np.abs(y)))}

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        out = self.forward(x, training)
        x, dy = self._check(x), np.asarray(dy, np.float64)
        if dy.shape != x.shape:
            raise ValueError(f"dy must have the shape of x {x.shape}, got {dy.shape}")
        axes = tuple(a for a in range(x.ndim) if a != self.channel_axis % x.ndim)
        n = x.size // self.spec.num_features
        dx = _column(self.state_now["gamma"], self) * dy
        return out | {"dx": Expected(dx, self.u * np.abs(dx)),
                      "dgamma": Expected((dy * x).sum(axis=axes), n * self.u * np.abs(dy * x).sum(axis=axes)),
                      "dbeta": Expected(dy.sum(axis=axes), n * self.u * np.abs(dy).sum(axis=axes))}

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict) -> dict[str, Expected]:
        x, dy = self._check(x), np.asarray(dy, np.float64)
        axes = tuple(a for a in range(x.ndim) if a != self.channel_axis % x.ndim)
        hx = _column(direction["vgamma"], self) * dy  # d(dx)/dgamma along vgamma
        hgamma = (dy * np.asarray(direction["vx"], np.float64)).sum(axis=axes)
        n = x.size // self.spec.num_features
        return {"hvp_x": Expected(hx, self.u * np.abs(hx)),
                "hvp_gamma": Expected(hgamma, n * self.u * np.abs(dy * direction["vx"]).sum(axis=axes)),
                "hvp_beta": Expected(np.zeros(self.spec.num_features))}

    def state(self, exact: bool = False) -> dict[str, Expected]:
        return {k: Expected(v.copy()) for k, v in self.state_now.items()}

    def hyperparameters(self) -> dict[str, Expected]:
        return {}


def _layouts() -> list[ScaleCase]:
    return [ScaleCase((4, 3) if rank == 2 else (2, 3, 4, 5), 1, dtype) for rank in (2, 4)
            for dtype in ("float64", "float32")]


SCALE = Operator(
    name="scale", parameters=("gamma", "beta"), case=ScaleCase, convention=ScaleConvention, conventions={},
    grids={"training_output": _layouts, "inference_output": _layouts, "gradients": _layouts,
           "hessian_vector_product": _layouts, "output_policy": _layouts, "caller_arrays_unmodified": _layouts},
    reference=ScaleReference, draw_case=lambda draw, capabilities: _layouts()[0],
    vocabulary=Vocabulary(conventions=lambda conv, observed, behaviour: {}, translation=lambda src, dst: {}),
)
CHANNELS_FIRST = ScaleConvention("scale_channels_first", 1)


class ScaleLayer:
    def __init__(self, spec: ScaleSpec, forgets_beta: bool) -> None:
        self.spec, self.forgets_beta = spec, forgets_beta
        self.gamma, self.beta = np.ones(spec.num_features), np.zeros(spec.num_features)

    def _col(self, v: np.ndarray, dtype) -> np.ndarray:
        shape = [1] * self.spec.rank
        shape[self.spec.channel_axis] = -1
        return np.reshape(v, shape).astype(dtype)

    def set_state(self, state: State) -> None:
        self.gamma, self.beta = (np.array(state.get(k, getattr(self, k)), np.float64) for k in ("gamma", "beta"))

    def get_state(self) -> State:
        return State(gamma=self.gamma.copy(), beta=self.beta.copy())

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if x.dtype.kind != "f" or x.ndim != self.spec.rank or x.shape[self.spec.channel_axis] != self.gamma.size:
            raise ValueError(f"bad input {x.dtype} {x.shape}")
        y = self._col(self.gamma, x.dtype) * x
        return y if self.forgets_beta else y + self._col(self.beta, x.dtype)

    def forward_backward(self, x, dy, training):
        axes = tuple(a for a in range(x.ndim) if a != self.spec.channel_axis % x.ndim)
        y = self.forward(x, training)
        return y, self._col(self.gamma, x.dtype) * dy, (dy.astype(np.float64) * x).sum(axis=axes), dy.sum(
            axis=axes, dtype=np.float64)

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        axes = tuple(a for a in range(x.ndim) if a != self.spec.channel_axis % x.ndim)
        return self._col(vgamma, np.float64) * dy, (dy.astype(np.float64) * vx).sum(axis=axes), np.zeros_like(vbeta)


class ScaleImplementation(Implementation):
    family = "scale"
    framework = "numpy"
    operator = SCALE
    convention = CHANNELS_FIRST
    isolated = False
    capabilities = Capabilities(dtypes=frozenset(ALL_DTYPES) - {"bfloat16"}, ranks=frozenset({2, 4}),
                                channel_axes=frozenset({1}), double_backward=True)

    def __init__(self, forgets_beta: bool = False) -> None:
        self.forgets_beta = forgets_beta
        self.name = "scale.forgets_beta" if forgets_beta else "scale.numpy"

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        return {"channel_axis": 1}

    def build(self, spec: ScaleSpec) -> ScaleLayer:
        return ScaleLayer(spec, self.forgets_beta)


CORRECT = [ScaleImplementation()]
BUGGY = [ScaleImplementation(forgets_beta=True)]
