"""The CNN's reference side of a Mirror: :class:`NetworkReference`.

It drives the float64 :class:`.network.Network` in the implementation's convention record with the
implementation's own spec, and answers every call with the expected values and their tolerances from the
tolerance model (:mod:`.tolerances`). Inputs and ``dx`` keep the case's layout (the network runs channels
first); the state and the gradients are in PyTorch's layout whatever the framework's (:mod:`.spec`).
"""

from __future__ import annotations

import numpy as np

from reference import Convention

from ...core.comparison import Expected
from ...core.state import State
from .cases import NetworkCase
from .network import Network
from .spec import PARAMETERS, NetworkSpec
from .tolerances import NetworkTolerance

__all__ = ["NetworkReference"]


class NetworkReference:
    def __init__(self, case: NetworkCase, convention: Convention, spec: NetworkSpec) -> None:
        self.case, self.convention, self.spec = case, convention, spec
        self.network = Network(spec, convention)
        self.tolerance = NetworkTolerance(self.network, case.dtype)

    def _canonical(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.moveaxis(x, -1, 1) if self.case.channel_axis == -1 and x.ndim == 4 else x

    def _layout(self, a: np.ndarray) -> np.ndarray:
        return np.moveaxis(a, 1, -1) if self.case.channel_axis == -1 else a

    def _forward(self, x: np.ndarray, training: bool) -> Expected:
        y = self.network.forward(self._canonical(x), training)
        return Expected(y, self.tolerance.forward(training))

    # -- the ReferenceSide protocol --------------------------------------------------------------------
    def assign(self, held: State) -> None:
        for name, value in held.items():
            if value is not None:
                self.network.set(name, value)

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        return {"y": self._forward(x, training)}

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        expected = {"y": self._forward(x, training)}
        dx, grads = self.network.backward(dy)
        e_dx, e_grads = self.tolerance.backward(dy)
        expected["dx"] = Expected(self._layout(dx), self._layout(e_dx))
        return expected | {f"d{name}": Expected(grads[name], e_grads[name]) for name in PARAMETERS}

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict) -> dict[str, Expected]:
        raise NotImplementedError("the CNN operator has no second-order grid")

    def state(self, exact: bool = False) -> dict[str, Expected]:
        """Parameters exactly (no call changes them), each BatchNorm's running averages within their
        accumulated tolerance (or exactly with ``exact``), its counter exactly where reported."""
        counter = self.convention.counter
        expected = {}
        for name, value in self.network.state.items():
            block, _, field = name.partition("_")
            tolerance = 0.0
            if not exact and name not in PARAMETERS and field != counter:
                tolerance = self.tolerance.running_field(int(block.removeprefix("bn")), field, value)
            expected[name] = Expected(value, tolerance, optional=bool(counter) and field == counter)
        return expected

    def hyperparameters(self) -> dict[str, Expected]:
        """The BatchNorms' ``eps`` and ``momentum`` as built, within float32 rounding (as BatchNorm's)."""
        return {name: Expected(built, 0.0 if built is None else 2.0**-24 * abs(built))
                for name, built in (("eps", self.spec.eps), ("momentum", self.spec.momentum))}
