"""LayerNorm's reference side of a Mirror: :class:`LayerNormReference`.

It computes :func:`reference.layer_norm` and its derivatives in float64 with the layer's spec (eps, the
normalized axes, which parameters exist) and its convention's eps placement, and answers each call with the
expected values and their tolerances (:mod:`.tolerances`). LayerNorm keeps no running state and behaves the
same in training and inference: its state is gamma and beta, which no call may change.
"""

from __future__ import annotations

import numpy as np

import reference
from reference import LayerNormConvention

from ...core.comparison import Expected
from ...core.dtypes import framework_input
from ...core.state import State
from .cases import LayerNormCase
from .spec import LayerNormSpec
from .tolerances import LayerNormTolerance

__all__ = ["LayerNormReference"]

# eps as held may be stored in float32 (ONNX attributes are): that rounding is allowed.
_HYPERPARAMETER_RTOL = 2.0**-24


class LayerNormReference:
    def __init__(self, case: LayerNormCase, convention: LayerNormConvention, spec: LayerNormSpec) -> None:
        self.case, self.convention, self.spec = case, convention, spec
        shape = spec.normalized_shape
        self.params = {"gamma": np.ones(shape) if spec.affine else None, "beta": np.zeros(shape) if spec.bias else None}

    def _input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the reference takes it, raising where the layer should: a wrong normalized shape is an
        error even for a layer without parameters (it was built for that shape)."""
        x = framework_input(x)[0]
        shape = self.spec.normalized_shape
        if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise ValueError(f"expected trailing axes {shape}, got an input of shape {x.shape}")
        return x

    def _rows(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        h = int(np.prod(self.spec.normalized_shape))
        return a.reshape(-1, h)

    def _tolerance(self, x: np.ndarray) -> LayerNormTolerance:
        return LayerNormTolerance(self._rows(x), self.params["gamma"], self.spec.eps, self.convention.eps_placement,
                                  self.case.dtype, self.case.accumulation_dtype, self.convention.centered,
                                  beta=self.params["beta"])

    def _y(self, x: np.ndarray) -> tuple[np.ndarray, LayerNormTolerance, Expected]:
        x = self._input(x)
        y = reference.layer_norm(x, self.params["gamma"], self.params["beta"], self.spec.eps, self.spec.begin_axis,
                                 self.convention.eps_placement, self.convention.centered)
        tol = self._tolerance(x)
        return x, tol, Expected(y, tol.y(self._rows(y)).reshape(y.shape))

    # -- the ReferenceSide protocol --------------------------------------------------------------------
    def assign(self, held: State) -> None:
        for name in self.params:
            if held.get(name) is not None and self.params[name] is not None:
                self.params[name] = np.asarray(held[name], dtype=np.float64)

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        return {"y": self._y(x)[2]}

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        x, tol, y = self._y(x)
        dy = framework_input(dy)[0]
        dx, dgamma, dbeta = reference.layer_norm_backward(dy, x, self.params["gamma"], self.spec.eps,
                                                          self.spec.begin_axis, self.convention.eps_placement,
                                                          self.convention.centered)
        dy_rows = self._rows(dy)
        shape = self.spec.normalized_shape
        expected = {"y": y, "dx": Expected(dx, tol.dx(self._rows(dx), dy_rows).reshape(dx.shape))}
        expected["dgamma"] = (Expected(dgamma, tol.dgamma(dgamma.ravel(), dy_rows).reshape(shape))
                              if self.spec.affine else Expected(None))
        expected["dbeta"] = (Expected(dbeta, tol.dbeta(dbeta.ravel(), dy_rows).reshape(shape))
                             if self.spec.bias else Expected(None))
        return expected

    def double_backward(self, x: np.ndarray, dy: np.ndarray, direction: dict[str, np.ndarray | None]
                        ) -> dict[str, Expected]:
        x = self._input(x)
        dy, vx, vgamma = np.asarray(dy, np.float64), np.asarray(direction["vx"], np.float64), direction["vgamma"]
        hx, hgamma, hbeta = reference.layer_norm_hvp(dy, x, self.params["gamma"], self.spec.eps, vx, vgamma,
                                                     self.spec.begin_axis, self.convention.eps_placement,
                                                     self.convention.centered)
        tx, tgamma = self._tolerance(x).second_order(self._rows(hx), hgamma.ravel(), self._rows(dy), self._rows(vx),
                                                     vgamma)
        shape = self.spec.normalized_shape
        return {"hvp_x": Expected(hx, tx.reshape(hx.shape)),
                "hvp_gamma": Expected(hgamma, tgamma.reshape(shape)) if self.spec.affine else Expected(None),
                "hvp_beta": Expected(hbeta) if self.spec.bias else Expected(None)}

    def state(self, exact: bool = False) -> dict[str, Expected]:
        """gamma and beta, exactly: no call changes them."""
        return {name: Expected(value) for name, value in self.params.items()}

    def hyperparameters(self) -> dict[str, Expected]:
        return {"eps": Expected(self.spec.eps, _HYPERPARAMETER_RTOL * self.spec.eps)}
