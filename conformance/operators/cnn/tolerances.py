"""The CNN's tolerance model: elementwise error bounds carried through the network with its values (a running
error analysis), each stage's own rounding added to the propagation of the errors of its inputs. One place; the
BatchNorm stages use BatchNorm's model (:mod:`..batchnorm.tolerances`: the same ``SAFETY``, :class:`Conditioning`,
:class:`RunningTolerance`), so the CNN's tolerances are that model composed, not numbers picked for a network
(it replaces the chained model of the former ``cnn.py``, one scalar per quantity scaled by its largest value).

Rounding. A reduction of ``n`` products in a dtype of unit roundoff ``u`` errs by at most ``rho(n) |.|``, the
same reduction over absolute values times ``rho(n) = SAFETY u sqrt(n)`` (BatchNorm's ``rho``: rounding errors
as independent random variables, whose sum grows like a random walk). Half-precision values accumulate in
float32, as BatchNorm's model has it: a forward reduction errs by ``SAFETY (u_acc sqrt(n) |.| + (u - u_acc)
|result|)``, the sum in float32 and the result rounded to the dtype once (products of half-precision values are
exact in float32); with the dtype's ``u`` for the sum, a float16 classifier's bound was 5 and a bfloat16 one's
20, past every logit, and with ``u`` on the sum of absolute values a bfloat16 fold of a variance 30% off passed.

Propagation. The same probabilistic model carries the errors of a stage's inputs through it: a product whose
every output sums terms ``w * a`` takes the root-sum-square of ``|w| E(a)`` (``E(t)`` bounds tensor ``t``'s
error elementwise; ``conv`` is the convolution, ``K`` a kernel's ``C_in * 9`` terms):

    conv       E(z) = rho(K) conv(|a|, |W|) + sqrt(conv(E(a)**2, W**2))
    BatchNorm  E(y) = BatchNorm's own y tolerance (Conditioning.y, batch or running statistics) + |gamma| E(xhat),
               E(xhat) = (E(z) + m) / sigma + |xhat| s, with the batch statistics' errors from the input's,
               coherent over a channel: m = rss(E(z)) / n for the mean, s = rss(xhat E(z)) / (n sigma) for sigma
               (relative); none in inference, whose running statistics' errors are Conditioning's
    ReLU, pool E(max(y, 0)) = E(y); a window's maximum: the largest E in the window (both 1-Lipschitz)
    linear     E(logits) = rho(F + 1) (|f| |W|^T + |b|) + sqrt(E(f)**2 (W**2)^T)

Backward from the exact ``dy``: the transposed products likewise (the classifier's over ``N`` and ``classes``
terms, a kernel's gradient over ``N H W``, an input's over ``C_out * 9``), each factor's forward error times the
other factor root-sum-square. A BatchNorm's backward adds to its own tolerances (Conditioning.dx, .dgamma,
.dbeta) the incoming gradient's error carried through ``dz = gamma / sigma (g - mean g - xhat mean(g xhat))``,
and its input's forward error: ``sum(g delta_xhat)`` is ``rss(g E(z)) / sigma`` elementwise plus the coherent
``m / sigma |dbeta| + s |dgamma|`` (the statistics' errors meet the gradient's own sums).

Kinks. ReLU and max-pool are exact, but where the forward's error could move a value across ReLU's zero or
change a window's maximum, the gradient may go elsewhere: there the whole gradient is within tolerance (``|g| +
E(g)`` at every position in reach). A window's order can only change by the errors that differ between its
values (BatchNorm's per-element roundings and its input's errors), not by its statistics', which move a whole
channel alike. Data far from the kinks keeps the tight bounds; the few positions near one dominate the
gradients' tolerances upstream of them.

Running state: BatchNorm's :class:`RunningTolerance` per block (the rounding of each step), plus each step's
coherent error of the batch mean (``m``) and variance (``2 sigma**2 s``, times ``n / (n - 1)``), summed over the
steps as BatchNorm's model sums its own; inference reads them back through
:meth:`RunningTolerance.statistics_error`. Parameters are exact: no call changes them.

``tests/test_cnn_network.py`` checks that the logits' bounds cover a float32 emulation of the network and reject
a classifier with its inputs transposed instead of permuted; the frameworks' error ratios are in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.dtypes import unit_roundoff
from ..batchnorm.tolerances import SAFETY, Conditioning, RunningTolerance
from .network import Network, convolve, input_gradient, kernel_gradient, patches, pool, unpool
from .spec import BLOCKS, CLASSES

__all__ = ["NetworkTolerance"]

HALF = ("float16", "bfloat16")


def _last(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, -1)


def _first(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, -1, 1)


def _rss(product, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A product (``convolve``, a matrix product, ...) whose every output sums terms ``a * b``, root-sum-square:
    ``sqrt(product(a**2, b**2))``."""
    return np.sqrt(product(a**2, b**2))


def _rss_sum(a: np.ndarray) -> np.ndarray:
    """Per-channel root-sum-square over everything but the last axis (channels last)."""
    return np.sqrt(np.sum(a**2, axis=tuple(range(a.ndim - 1))))


def _rms_mean(a: np.ndarray) -> np.ndarray:
    """The per-channel mean of independent errors bounded by ``a``: their root-sum-square over their count."""
    return _rss_sum(a) / max(a[..., 0].size, 1)


@dataclass
class _Forward:
    """One BatchNorm's forward bounds, channels last where per channel: its block's input error ``e_a`` (NCHW),
    the convolution's ``e_z`` (channels last), the conditioning ``cond`` and ``xhat`` of the statistics it
    normalized with, the coherent errors of those statistics propagated from ``e_z`` (``m``: the mean's, ``s``:
    sigma's, relative; zero in inference, whose statistics' own errors are in ``cond``), ``e_xhat`` and the
    output's ``e_y`` (NCHW), and ``e_order``, the part of ``e_y`` that differs between a channel's values (all
    but the statistics' errors, which move a channel's values alike and keep their order)."""

    e_a: np.ndarray
    e_z: np.ndarray
    cond: Conditioning
    xhat: np.ndarray
    m: np.ndarray
    s: np.ndarray
    e_xhat: np.ndarray
    e_y: np.ndarray
    e_order: np.ndarray


class NetworkTolerance:
    """The tolerances of one :class:`Network`'s calls in ``dtype``: call :meth:`forward` after each of the
    network's forwards and :meth:`backward` after its backward; the running state's errors accumulate."""

    def __init__(self, network: Network, dtype: str) -> None:
        self.net, self.dtype, self.u = network, dtype, unit_roundoff(dtype)
        # Reductions of half-precision values accumulate in float32 (convolutions, BatchNorm's statistics).
        self.accumulation = "float32" if dtype in HALF else dtype
        self.u_acc = unit_roundoff(self.accumulation)
        self.running = [RunningTolerance(dtype, network.convention, network.spec.momentum) for _ in BLOCKS]
        self.blocks: list[_Forward] = []
        self.e_features = np.zeros(0)

    def rho(self, n: int) -> float:
        """A reduction's relative error over ``n`` terms: BatchNorm's ``rho``, the result's rounding in the dtype
        and the sum's in the accumulation dtype (``SAFETY u sqrt(n)`` where they are the same)."""
        return SAFETY * (self.u + self.u_acc * (np.sqrt(max(n, 1)) - 1))

    def reduced(self, n: int, magnitude: np.ndarray, result: np.ndarray) -> np.ndarray:
        """The error of a forward reduction over ``n`` terms whose absolute values sum to ``magnitude``: the sum's
        in the accumulation dtype, then the result's rounding to the dtype, ``u |result|`` beyond the sum's
        (``rho(n) magnitude`` where they are the same dtype; half-precision products are exact in float32)."""
        return SAFETY * (self.u_acc * np.sqrt(max(n, 1)) * magnitude + (self.u - self.u_acc) * np.abs(result))

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, training: bool) -> np.ndarray:
        """The logits' tolerance for the network's last forward; a training forward adds its step's errors
        to the running state's."""
        net, e_a, self.blocks = self.net, np.zeros_like(self.net.trace[0].a), []
        for index, block in enumerate(net.trace):
            kernel = np.abs(net.weights[f"conv{index + 1}"])
            e_z = (self.reduced(kernel[0].size, convolve(np.abs(block.cols), kernel), block.z)
                   + _rss(convolve, patches(e_a), kernel))
            bounds = self._batchnorm(index, block, e_a, _last(e_z), training)
            self.blocks.append(bounds)
            e_a = pool(bounds.e_y)[0]
        f, weight, bias = net.features, np.abs(net.weights["fc_weight"]), np.abs(net.weights["fc_bias"])
        self.e_features = e_a.reshape(f.shape)
        logits = f @ net.weights["fc_weight"].T + net.weights["fc_bias"]
        return (self.reduced(f.shape[1] + 1, np.abs(f) @ weight.T + bias, logits)
                + _rss(np.matmul, self.e_features, weight.T))

    def _batchnorm(self, index: int, block, e_a: np.ndarray, ez: np.ndarray, training: bool) -> _Forward:
        bn, running = self.net.bn[index], self.running[index]
        if block.batch:
            n = block.z.size // block.z.shape[1]
            cond = Conditioning(self.dtype, n, block.mean, block.var, bn.eps, bn.gamma, self.accumulation)
            xhat = (_last(block.z) - block.mean) / cond.sigma
            m, s = _rms_mean(ez), _rms_mean(xhat * ez) / cond.sigma
            if training:
                self._running_step(running, cond, bn.state, n, m, 2 * cond.sigma**2 * s)
        else:
            mean_error, var_error = running.statistics_error(bn.state)
            cond = Conditioning(self.dtype, 1, block.mean, block.var, bn.eps, bn.gamma, mean_error=mean_error,
                                var_error=var_error)
            xhat = (_last(block.z) - block.mean) / cond.sigma
            m = s = np.zeros_like(cond.sigma)
        e_xhat = (ez + m) / cond.sigma + np.abs(xhat) * s
        y, gamma = _last(block.y), np.abs(bn.gamma)
        e_y = cond.y(y, xhat) + gamma * e_xhat
        # BatchNorm's per-element roundings (its model with no reduction) and the input's own errors.
        elementwise = Conditioning(self.dtype, 1, block.mean, block.var, bn.eps, bn.gamma).y(y, xhat)
        e_order = elementwise + gamma * ez / cond.sigma
        return _Forward(e_a, ez, cond, xhat, m, s, e_xhat, _first(e_y), _first(e_order))

    @staticmethod
    def _running_step(running: RunningTolerance, cond: Conditioning, state: dict, n: int, mean_error: np.ndarray,
                      var_error: np.ndarray) -> None:
        """One training step: BatchNorm's rounding, plus the batch statistics' error propagated from the
        BatchNorm's input (the variance's as stored: times ``n / (n - 1)`` at most; its square root's where
        the convention averages the standard deviation)."""
        running.add_step(cond, state, n)
        running.accumulated["running_mean"] = running.accumulated["running_mean"] + mean_error
        spread, var_error = running.convention.spread_field, var_error * n / max(n - 1, 1)
        if spread == "running_std":
            exact = np.sqrt(cond.var)
            with np.errstate(divide="ignore", invalid="ignore"):
                var_error = np.minimum(np.where(exact > 0, var_error / exact, np.inf), np.sqrt(var_error))
        running.accumulated[spread] = running.accumulated[spread] + var_error

    # -- backward ----------------------------------------------------------------------------------
    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The tolerances of ``dx`` and of every parameter's gradient (by name) for the network's last
        backward, from the exact ``dy`` (N, classes)."""
        net, ady = self.net, np.abs(np.asarray(dy, dtype=np.float64))
        f, weight = np.abs(net.features), np.abs(net.weights["fc_weight"])
        n = f.shape[0]
        out = {"fc_weight": self.rho(n) * (ady.T @ f) + _rss(np.matmul, ady.T, self.e_features),
               "fc_bias": self.rho(n) * ady.sum(0)}
        e_d = (self.rho(CLASSES) * (ady @ weight)).reshape(net.trace[-1].p.shape)
        for index in (1, 0):
            block, bounds = net.trace[index], self.blocks[index]
            e_g = self._kinks(block, bounds, e_d)
            e_dz, out[f"bn{index + 1}_gamma"], out[f"bn{index + 1}_beta"] = self._batchnorm_backward(
                index, block, bounds, _last(e_g))
            kernel = np.abs(net.weights[f"conv{index + 1}"])
            cols, adz = np.abs(block.cols), np.abs(block.dz)
            out[f"conv{index + 1}"] = (self.rho(block.dz[:, 0].size) * kernel_gradient(adz, cols)
                                       + _rss(kernel_gradient, e_dz, cols)
                                       + _rss(kernel_gradient, adz, patches(bounds.e_a))).reshape(kernel.shape)
            e_d = self.rho(kernel.shape[0] * 9) * input_gradient(adz, kernel) + _rss(input_gradient, e_dz, kernel)
        return e_d, out

    @staticmethod
    def _kinks(block, bounds: _Forward, e_d: np.ndarray) -> np.ndarray:
        """The error of the gradient at the BatchNorm's output: the pool's and ReLU's routing of the error
        ``e_d`` at the pool's output, and the whole gradient wherever the forward's error could have routed
        it elsewhere (a window's runner-up within reach of its maximum, a ReLU input within reach of 0). A
        window's order can only change by the errors that differ between its values (``e_order``)."""
        e_windows = pool(bounds.e_order)[1]  # ReLU passes y's error on
        top = (block.windows * block.argmax).sum(-1, keepdims=True)
        e_top = (e_windows * block.argmax).sum(-1, keepdims=True)
        reach = block.windows >= top - (e_top + e_windows)
        contested = reach.sum(-1) > 1
        d = np.abs(block.dp)
        e_r = unpool(e_d, block.argmax) + unpool((d + e_d) * contested, reach)
        dr = unpool(d, block.argmax)
        near = np.abs(block.y) <= bounds.e_y
        return np.where(near, dr + e_r, e_r * (block.y > 0))

    def _batchnorm_backward(self, index: int, block, bounds: _Forward, eg: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(E(dz), E(dgamma), E(dbeta))``: BatchNorm's own tolerances, the incoming gradient's error ``eg``
        (channels last) carried through, and the forward's errors of ``xhat`` (elementwise ``e_z / sigma``,
        coherent ``m`` and ``s``, which meet the gradient's sums ``dbeta`` and ``dgamma`` themselves)."""
        bn, cond, xhat, m, s = self.net.bn[index], bounds.cond, bounds.xhat, bounds.m, bounds.s
        g, dz, sigma = _last(block.g), _last(block.dz), bounds.cond.sigma
        scale, n = np.abs(bn.gamma) / sigma, g[..., 0].size
        # sum(g * delta xhat): its elementwise part, and the coherent parts times sum(g) and sum(g * xhat).
        moved = _rss_sum(g * bounds.e_z) / sigma + m / sigma * np.abs(bn.dbeta) + s * np.abs(bn.dgamma)
        e_dgamma = cond.dgamma(bn.dgamma, g, xhat) + _rss_sum(xhat * eg) + moved
        e_dbeta = cond.dbeta(bn.dbeta, g) + _rss_sum(eg)
        e_dz = cond.dx(dz, g, xhat) + scale * eg
        if block.batch:  # dz = scale (g - mean g - xhat mean(g xhat)): the means move with g, xhat and sigma
            e_dz = (e_dz + scale * (_rss_sum(eg) + np.abs(xhat) * _rss_sum(xhat * eg) + np.abs(xhat) * moved) / n
                    + scale * bounds.e_xhat * np.abs(bn.dgamma) / n + np.abs(dz) * s)
        return _first(e_dz), e_dgamma, e_dbeta

    # -- state -------------------------------------------------------------------------------------
    def running_field(self, block: int, field: str, value: np.ndarray) -> np.ndarray:
        """The tolerance of BatchNorm ``block``'s (1 or 2) running field ``field`` against ``value``."""
        return self.running[block - 1].tolerance(field, value)
