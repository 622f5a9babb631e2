"""LayerNorm: the specification's fast functions and its conventions as records.

The same functions as :mod:`reference.layernorm_textbook` (read that first), with argument checks, in
bounded memory: the input is viewed as ``(rows, H)`` (the leading axes, the normalized ones) and every
formula runs over blocks of whole rows of about :data:`reference.engine.BLOCK` values, so no float64
temporary is larger than a block whatever the input's size. The backward and the second derivative are
written for any ``sigma(var)`` through its first and second derivatives (``r = 1 / sigma``):

    d = x - mu,  G = g - mean(g),  M = mean(g d),  g = gamma dy
    dx     = r G + 2 r'(var) M d
    dgamma = sum_rows dy d r,   dbeta = sum_rows dy

and the derivative of ``(dx, dgamma, dbeta)`` along ``(vx, vgamma, vbeta)`` (the Hessian-vector product of
``sum(y * dy)``, as a double backward computes it): with ``td = vx - mean(vx)``, ``tv = 2 mean(d vx)``,
``tg = vgamma dy`` and ``tM = mean(tg d + g td)``,

    hvp_x     = r' tv G + r (tg - mean(tg)) + 2 (r'' tv M d + r' tM d + r' M td)
    hvp_gamma = sum_rows dy (td r + d r' tv)
    hvp_beta  = 0

:class:`LayerNormConvention` holds what differs between frameworks while the normalization is the same:
the eps default and where eps goes, the default normalized axes, and the affine parameters' defaults.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .conventions import REQUIRED
from .engine import BLOCK

__all__ = ["DTYPE_EPSILON", "EPS_PLACEMENTS", "LAYERNORM_CONVENTIONS", "LayerNormConvention", "layer_norm",
           "layer_norm_backward", "layer_norm_hvp", "layer_norm_jvp", "layer_norm_statistics", "normalized_shape"]

# A default eps that is the input dtype's machine epsilon (PyTorch's RMSNorm, eps=None: torch.finfo(x.dtype).eps):
# a word, not a number, so that it crosses processes and reports as it reads.
DTYPE_EPSILON = "dtype epsilon"

# Where eps goes: inside the square root (sqrt(var + eps): PyTorch, Keras, Flax, ONNX) or added to the
# standard deviation (sqrt(var) + eps: the Annotated Transformer's and other model code's LayerNorm).
EPS_PLACEMENTS = ("variance", "std")


@dataclass(frozen=True)
class LayerNormConvention:
    """How one framework's LayerNorm is built by default; checked on construction (``ValueError`` naming the
    field).

    Attributes:
        name: an identifier, unique among the conventions of a run.
        default_eps: the constructor's eps (:data:`REQUIRED` where it has none, :data:`DTYPE_EPSILON` where it is
            the input dtype's machine epsilon).
        eps_placement: one of :data:`EPS_PLACEMENTS`.
        default_axes: the normalized axes by default, as the first of the trailing axes (``-1``: the last
            axis); :data:`REQUIRED` where the constructor needs them (PyTorch's ``normalized_shape``).
        default_affine: a learnable scale by default (PyTorch ``elementwise_affine``, Keras ``scale``, Flax
            ``use_scale``; ONNX: the ``Scale`` input is required).
        default_bias: a learnable offset by default (PyTorch ``bias``, Keras ``center``, Flax ``use_bias``; ONNX:
            the optional ``B`` input).
        centered: whether the normalization re-centers (LayerNorm); False: RMSNorm, which divides by the root
            mean square and keeps the mean.
        frameworks: who uses it, for the report.
    """

    name: str
    default_eps: float | object
    eps_placement: str = "variance"
    default_axes: int | object = -1
    default_affine: bool = True
    default_bias: bool = True
    centered: bool = True
    frameworks: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"LayerNormConvention name must be an identifier, got {self.name!r}")
        if self.default_eps is not REQUIRED and self.default_eps != DTYPE_EPSILON and not (
                isinstance(self.default_eps, numbers.Real) and not isinstance(self.default_eps, bool)
                and self.default_eps > 0):
            raise ValueError(f"LayerNormConvention default_eps must be a positive number, REQUIRED or DTYPE_EPSILON, "
                             f"got {self.default_eps!r}")
        if self.eps_placement not in EPS_PLACEMENTS:
            raise ValueError(f"LayerNormConvention eps_placement must be one of {EPS_PLACEMENTS}, "
                             f"got {self.eps_placement!r}")
        if self.default_axes is not REQUIRED and not (isinstance(self.default_axes, int) and self.default_axes < 0):
            raise ValueError(f"LayerNormConvention default_axes must be a negative axis or REQUIRED, "
                             f"got {self.default_axes!r}")
        for name in ("default_affine", "default_bias", "centered"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"LayerNormConvention {name} must be a bool, got {getattr(self, name)!r}")

    def defaults(self) -> dict[str, object]:
        """What the constructor has by default, as an implementation's ``defaults()`` reports it."""
        return {"eps": self.default_eps, "axes": self.default_axes, "affine": self.default_affine,
                "bias": self.default_bias}

    def as_dict(self) -> dict:
        """For the report's JSON: a missing default is ``"required"``."""
        return {k: "required" if v is REQUIRED else v for k, v in asdict(self).items()}


# Each read in the framework's source (docs/conventions.md cites the lines).
LAYERNORM_CONVENTIONS = {c.name: c for c in (
    LayerNormConvention("torch_layernorm", 1e-5, default_axes=REQUIRED,
                        frameworks="PyTorch nn.LayerNorm, F.layer_norm (normalized_shape required)"),
    LayerNormConvention("keras_layernorm", 1e-3, frameworks="Keras 3 and tf-keras LayerNormalization (axis=-1)"),
    LayerNormConvention("flax_layernorm", 1e-6, frameworks="flax.linen.LayerNorm, flax.nnx.LayerNorm"),
    LayerNormConvention("onnx_layernorm", 1e-5, frameworks="ONNX LayerNormalization (opset 17, axis=-1)"),
    # RMSNorm: a scale, no offset, no re-centering.
    LayerNormConvention("torch_rmsnorm", DTYPE_EPSILON, default_axes=REQUIRED, default_bias=False, centered=False,
                        frameworks="PyTorch nn.RMSNorm, F.rms_norm (eps=None: the input dtype's machine epsilon)"),
    LayerNormConvention("keras_rmsnorm", 1e-6, default_bias=False, centered=False,
                        frameworks="Keras 3 RMSNormalization (axis=-1)"),
    LayerNormConvention("flax_rmsnorm", 1e-6, default_bias=False, centered=False,
                        frameworks="flax.linen.RMSNorm, flax.nnx.RMSNorm"),
    LayerNormConvention("onnx_rmsnorm", 1e-5, default_bias=False, centered=False,
                        frameworks="ONNX RMSNormalization (opset 23, axis=-1)"),
)}


def normalized_shape(shape: tuple[int, ...], begin_axis: int) -> tuple[int, ...]:
    """The shape of the normalized axes (and of gamma and beta)."""
    return tuple(shape[begin_axis % len(shape):]) if shape else ()


def _check(x: object, begin_axis: int, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
    if isinstance(begin_axis, bool) or not isinstance(begin_axis, numbers.Integral) or begin_axis >= 0:
        raise ValueError(f"begin_axis must be a negative integer (the first of the trailing axes), got {begin_axis!r}")
    if x.ndim < -begin_axis:
        raise ValueError(f"{name} of shape {x.shape} has fewer than the {-begin_axis} normalized axes")
    return x


def _parameter(v: object | None, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float64)
    if v.shape != shape:
        raise ValueError(f"{name} must have the normalized shape {shape}, got {v.shape}")
    return v.reshape(-1)


def _same_shape(v: object, x: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype.kind != "f":
        raise TypeError(f"{name} must have a real floating dtype, got {v.dtype}")
    if v.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {x.shape}, got {v.shape}")
    return v


def _derivatives(var: np.ndarray, eps: float, eps_placement: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``r = 1 / sigma(var)`` and its first and second derivatives in ``var``."""
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant row under "std": infinite derivatives
        if eps_placement == "variance":
            r = 1 / np.sqrt(var + eps)
            return r, -0.5 * r**3, 0.75 * r**5
        s = np.sqrt(var)
        r = 1 / (s + eps)
        return r, -0.5 * r**2 / s, 0.25 * r**2 / s**3 + 0.5 * r**3 / s**2


def _rows_view(a: np.ndarray, begin: int) -> np.ndarray:
    return a.reshape(int(np.prod(a.shape[:begin])), int(np.prod(a.shape[begin:])))


def _over_rows(x: np.ndarray, begin_axis: int, body: Callable[..., tuple], *others: np.ndarray
               ) -> tuple[list[np.ndarray], int]:
    """Run ``body(x_rows, *other_rows)`` (float64 blocks of whole rows) over the rows in order; its results
    per block, and the rows' length H."""
    begin = begin_axis % x.ndim
    rows = [_rows_view(a, begin) for a in (x, *others)]
    n, h = rows[0].shape
    step = max(1, BLOCK // max(h, 1))
    results = [body(*(np.asarray(r[i:i + step], dtype=np.float64) for r in rows)) for i in range(0, n, step)]
    return results, h


def _stats(xb: np.ndarray, centered: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two-pass mean and biased variance of each row, as columns (exact to |mean|/std ~ 1e7 in float64); not
    ``centered`` (RMSNorm): a zero mean and the mean square."""
    mu = xb.mean(axis=1, keepdims=True) if centered else np.zeros((xb.shape[0], 1))
    d = xb - mu
    return mu, np.einsum("ij,ij->i", d, d)[:, None] / max(xb.shape[1], 1)


def _centre(v: np.ndarray, centered: bool) -> np.ndarray:
    """``v`` less its row means, where the normalization re-centers (the derivative of ``x - mean(x)``)."""
    return v - v.mean(axis=1, keepdims=True) if centered else v


def layer_norm_statistics(x: np.ndarray, begin_axis: int = -1, centered: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean (0 when not ``centered``) and biased variance about it, of the leading axes' shape."""
    x = _check(x, begin_axis)
    results, _ = _over_rows(x, begin_axis, lambda xb: tuple(a[:, 0] for a in _stats(xb, centered)))
    lead = x.shape[:begin_axis % x.ndim]
    if not results:
        return np.zeros(lead), np.zeros(lead)
    return tuple(np.concatenate([r[i] for r in results]).reshape(lead) for i in range(2))


def layer_norm(x: np.ndarray, gamma: np.ndarray | None = None, beta: np.ndarray | None = None, eps: float = 1e-5,
               begin_axis: int = -1, eps_placement: str = "variance", centered: bool = True) -> np.ndarray:
    """``y`` in float64, of the shape of ``x``; gamma and beta (``None``: none) of the normalized shape."""
    x = _check(x, begin_axis)
    shape = normalized_shape(x.shape, begin_axis)
    g, b = _parameter(gamma, shape, "gamma"), _parameter(beta, shape, "beta")

    def body(xb: np.ndarray) -> np.ndarray:
        mu, var = _stats(xb, centered)
        y = (xb - mu) * _derivatives(var, eps, eps_placement)[0]
        if g is not None:
            y *= g
        if b is not None:
            y += b
        return y

    results, h = _over_rows(x, begin_axis, body)
    return (np.concatenate(results) if results else np.zeros((0, h))).reshape(x.shape)


def layer_norm_backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None = None, eps: float = 1e-5,
                        begin_axis: int = -1, eps_placement: str = "variance", centered: bool = True
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of ``sum(y * dy)``; the parameters' gradients of the normalized shape (whether
    or not the layer has them: the caller drops what it lacks)."""
    x = _check(x, begin_axis)
    dy = _same_shape(dy, x, "dy")
    shape = normalized_shape(x.shape, begin_axis)
    g = _parameter(gamma, shape, "gamma")

    def body(xb: np.ndarray, dyb: np.ndarray) -> tuple:
        mu, var = _stats(xb, centered)
        r, r1, _ = _derivatives(var, eps, eps_placement)
        d = xb - mu
        gb = dyb * g if g is not None else dyb
        dx = r * _centre(gb, centered) + 2 * r1 * (gb * d).mean(axis=1, keepdims=True) * d
        return dx, (dyb * d * r).sum(axis=0), dyb.sum(axis=0)

    results, h = _over_rows(x, begin_axis, body, dy)
    if not results:
        return np.zeros(x.shape), np.zeros(shape), np.zeros(shape)
    dx = np.concatenate([r[0] for r in results]).reshape(x.shape)
    return dx, sum(r[1] for r in results).reshape(shape), sum(r[2] for r in results).reshape(shape)


def layer_norm_jvp(x: np.ndarray, vx: np.ndarray, eps: float = 1e-5, begin_axis: int = -1,
                   eps_placement: str = "variance", centered: bool = True) -> np.ndarray:
    """The derivative of ``xhat`` (the normalized ``x``, before any scale and offset) along ``vx``:
    ``td r + d r'(var) tv`` (the module docstring's names), of the shape of ``x``. GroupNorm's scale gradient
    moves along it (:func:`reference.group_norm_hvp`)."""
    x = _check(x, begin_axis)
    vx = _same_shape(vx, x, "vx")

    def body(xb: np.ndarray, vxb: np.ndarray) -> np.ndarray:
        mu, var = _stats(xb, centered)
        r, r1, _ = _derivatives(var, eps, eps_placement)
        d = xb - mu
        return _centre(vxb, centered) * r + d * r1 * 2 * (d * vxb).mean(axis=1, keepdims=True)

    results, h = _over_rows(x, begin_axis, body, vx)
    return (np.concatenate(results) if results else np.zeros((0, h))).reshape(x.shape)


def layer_norm_hvp(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, eps: float, vx: np.ndarray,
                   vgamma: np.ndarray | None = None, begin_axis: int = -1, eps_placement: str = "variance",
                   centered: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The derivative of ``(dx, dgamma, dbeta)`` along ``(vx, vgamma, vbeta)`` (nothing depends on beta, so
    its direction does not enter): ``(hvp_x, hvp_gamma, hvp_beta)`` (see the module docstring)."""
    x = _check(x, begin_axis)
    dy, vx = _same_shape(dy, x, "dy"), _same_shape(vx, x, "vx")
    shape = normalized_shape(x.shape, begin_axis)
    g, vg = _parameter(gamma, shape, "gamma"), _parameter(vgamma, shape, "vgamma")

    def body(xb: np.ndarray, dyb: np.ndarray, vxb: np.ndarray) -> tuple:
        mu, var = _stats(xb, centered)
        r, r1, r2 = _derivatives(var, eps, eps_placement)
        d = xb - mu
        gb = dyb * g if g is not None else dyb
        tg = dyb * vg if vg is not None else np.zeros_like(dyb)
        td = _centre(vxb, centered)
        tv = 2 * (d * vxb).mean(axis=1, keepdims=True)
        m, tm = (gb * d).mean(axis=1, keepdims=True), (tg * d + gb * td).mean(axis=1, keepdims=True)
        hx = r1 * tv * _centre(gb, centered) + r * _centre(tg, centered) + 2 * (r2 * tv * m * d + r1 * tm * d
                                                                              + r1 * m * td)
        return hx, (dyb * (td * r + d * r1 * tv)).sum(axis=0)

    results, h = _over_rows(x, begin_axis, body, dy, vx)
    if not results:
        return np.zeros(x.shape), np.zeros(shape), np.zeros(shape)
    hx = np.concatenate([r[0] for r in results]).reshape(x.shape)
    return hx, sum(r[1] for r in results).reshape(shape), np.zeros(shape)
