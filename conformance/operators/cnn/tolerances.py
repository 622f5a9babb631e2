"""The CNN's tolerance model: elementwise error bounds carried through the network with its values
(running error analysis), every stage's own rounding added to the first-order propagation of the errors of
its inputs. One place; the BatchNorm stages use BatchNorm's model (:mod:`..batchnorm.tolerances`: the same
``SAFETY``, :class:`Conditioning`, :class:`RunningTolerance`), so the CNN's tolerances are that model
composed, not numbers picked for a network.

An implementation computing in a dtype of unit roundoff ``u`` makes, in a reduction of ``n`` products, an
error of at most ``rho(n) |.|`` where ``|.|`` is the same reduction over absolute values and ``rho(n) =
SAFETY u sqrt(n)`` (BatchNorm's ``rho``: the sum's errors grow like a random walk; pairwise, blocked or
im2col-GEMM sums do better). With ``E(t)`` the bound on tensor ``t``'s error (``|a|`` elementwise absolute
values, ``conv``/``conv^T`` the convolution and its transpose, ``K`` a kernel's ``C_in * 9`` terms):

    conv       E(z) = rho(K) conv(|a|, |W|) + conv(E(a), |W|)
    BatchNorm  E(y) = BatchNorm's own y tolerance (Conditioning.y: batch or running statistics)
                      + |gamma| E(xhat), E(xhat) = (E(z) + mean E(z) + |xhat| mean(|xhat| E(z))) / sigma in
                      training (the batch statistics move with the input), E(z) / sigma in inference
    ReLU, pool E(max(y, 0)) = E(y); a window's maximum: the largest E in the window (both 1-Lipschitz)
    linear     E(logits) = rho(F + 1) (|f| |W|^T + |b|) + E(f) |W|^T

and backward, from the exact ``dy``, the transposed products the same way (the classifier's over ``N`` and
``classes`` terms, a kernel's gradient over ``N H W``, an input's over ``C_out * 9``), plus for each product
the factor's forward error times the other factor. A BatchNorm's backward adds to its own tolerances
(Conditioning.dx, .dgamma, .dbeta) the propagation of the incoming gradient's error and of its input's
forward error (through ``xhat`` and ``sigma``), first order:

    E(dz) += |gamma| / sigma (E(g) + mean E(g) + |xhat| mean(|xhat| E(g)) + E(xhat) mean|g xhat|
             + |xhat| mean(|g| E(xhat))) + |dz| mean(|xhat| E(z)) / sigma
    E(dgamma) += sum(E(g) |xhat| + |g| E(xhat)),  E(dbeta) += sum E(g)

Kinks. ReLU and max-pool are exact, but where the forward's error could move a value across ReLU's zero or
change a window's maximum, the gradient may go elsewhere: there the whole gradient is within tolerance
(``|g| + E(g)`` at every position in reach). Data far from the kinks keeps the tight bounds.

Running state: BatchNorm's :class:`RunningTolerance` per block (the rounding of each step), plus each step's
propagated error of the batch mean (``mean E(z)``) and variance (``2 sigma mean(|xhat| E(z))``, times
``n / (n - 1)``), summed over the steps as BatchNorm's model sums its own; inference reads them back through
:meth:`RunningTolerance.statistics_error`. Parameters are exact: no call changes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.dtypes import unit_roundoff
from ..batchnorm.tolerances import SAFETY, Conditioning, RunningTolerance
from .network import Network, convolve, input_gradient, kernel_gradient, patches, pool, unpool
from .spec import BLOCKS, CLASSES

__all__ = ["NetworkTolerance"]


def _last(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, -1)


def _first(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, -1, 1)


def _mean(a: np.ndarray) -> np.ndarray:
    """Per-channel mean over everything but the last axis (channels last)."""
    return a.mean(axis=tuple(range(a.ndim - 1)))


def _rss(product, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``product`` of two error-scale arrays combined root-sum-square: ``sqrt(product(a**2, b**2))``."""
    return np.sqrt(product(a**2, b**2))


def _sum(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=tuple(range(a.ndim - 1)))


@dataclass
class _Forward:
    """One block's forward bounds, channels last where per channel: the input's ``e_a``, the convolution's
    ``e_z``, the BatchNorm's conditioning ``cond``, ``xhat`` and its error ``e_xhat``, the relative error
    ``e_sigma`` of its sigma from its input's, its output's ``e_y`` (NCHW)."""

    e_a: np.ndarray
    e_z: np.ndarray
    cond: Conditioning
    xhat: np.ndarray
    e_xhat: np.ndarray
    e_sigma: np.ndarray
    e_y: np.ndarray


class NetworkTolerance:
    """The tolerances of one :class:`Network`'s calls in ``dtype``: call :meth:`forward` after each of the
    network's forwards and :meth:`backward` after its backward; the running state's errors accumulate."""

    def __init__(self, network: Network, dtype: str) -> None:
        self.net, self.dtype, self.u = network, dtype, unit_roundoff(dtype)
        self.running = [RunningTolerance(dtype, network.convention, network.spec.momentum) for _ in BLOCKS]
        self.blocks: list[_Forward] = []
        self.e_features = np.zeros(0)

    def rho(self, n: int) -> float:
        """A reduction's relative error over ``n`` terms (BatchNorm's ``rho`` where it accumulates in its dtype)."""
        return SAFETY * self.u * np.sqrt(max(n, 1))

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, training: bool) -> np.ndarray:
        """The logits' tolerance for the network's last forward; a training forward adds its step's errors
        to the running state's."""
        net, e_a, self.blocks = self.net, np.zeros_like(self.net.trace[0].a), []
        for index, block in enumerate(net.trace):
            kernel = np.abs(net.weights[f"conv{index + 1}"])
            e_z = self.rho(kernel[0].size) * convolve(np.abs(block.cols), kernel) + _rss(convolve, patches(e_a), kernel)
            bounds = self._batchnorm(index, block, e_a, e_z, training)
            self.blocks.append(bounds)
            e_a = pool(bounds.e_y)[0]
        f, weight, bias = net.features, np.abs(net.weights["fc_weight"]), np.abs(net.weights["fc_bias"])
        self.e_features = e_a.reshape(f.shape)
        return self.rho(f.shape[1] + 1) * (np.abs(f) @ weight.T + bias) + np.sqrt(self.e_features**2 @ weight.T**2)

    def _batchnorm(self, index: int, block, e_a: np.ndarray, e_z: np.ndarray, training: bool) -> _Forward:
        bn, running, ez = self.net.bn[index], self.running[index], _last(e_z)
        gamma = np.abs(bn.gamma)
        if block.batch:
            n = block.z.size // block.z.shape[1]
            cond = Conditioning(self.dtype, n, block.mean, block.var, bn.eps, bn.gamma)
            xhat = (_last(block.z) - block.mean) / cond.sigma
            shift = _mean(np.abs(xhat) * ez)
            e_xhat = (ez + _mean(ez) + np.abs(xhat) * shift) / cond.sigma
            e_sigma = shift / cond.sigma
            if training:
                self._running_step(running, cond, bn.state, n, _mean(ez), 2 * cond.sigma * shift)
        else:
            mean_error, var_error = running.statistics_error(bn.state)
            cond = Conditioning(self.dtype, 1, block.mean, block.var, bn.eps, bn.gamma, mean_error=mean_error,
                                var_error=var_error)
            xhat = (_last(block.z) - block.mean) / cond.sigma
            e_xhat = (ez + mean_error + np.abs(xhat) * var_error / (2 * cond.sigma)) / cond.sigma
            e_sigma = np.zeros_like(cond.sigma)  # the statistics' own error is in Conditioning's dx
        e_y = cond.y(_last(block.y), xhat) + gamma * (e_xhat if block.batch else ez / cond.sigma)
        return _Forward(e_a, e_z, cond, xhat, e_xhat, e_sigma, _first(e_y))

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
                index, block, bounds, e_g)
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
        it elsewhere (a window's runner-up within reach of its maximum, a ReLU input within reach of 0)."""
        e_windows = pool(bounds.e_y)[1]  # ReLU passes y's error on
        top = (block.windows * block.argmax).sum(-1, keepdims=True)
        e_top = (e_windows * block.argmax).sum(-1, keepdims=True)
        reach = block.windows >= top - (e_top + e_windows)
        contested = reach.sum(-1) > 1
        d = np.abs(block.dp)
        e_r = unpool(e_d, block.argmax) + unpool((d + e_d) * contested, reach)
        dr = unpool(d, block.argmax)
        near = np.abs(block.y) <= bounds.e_y
        return np.where(near, dr + e_r, e_r * (block.y > 0))

    def _batchnorm_backward(self, index: int, block, bounds: _Forward, e_g: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(E(dz), E(dgamma), E(dbeta))``: BatchNorm's own tolerances plus the propagated errors."""
        bn, cond, xhat = self.net.bn[index], bounds.cond, bounds.xhat
        g, eg, dz, axhat = _last(block.g), _last(e_g), _last(block.dz), np.abs(bounds.xhat)
        scale = np.abs(bn.gamma) / cond.sigma
        if block.batch:
            e_xhat = bounds.e_xhat
            moved = (eg + _mean(eg) + axhat * _mean(axhat * eg) + e_xhat * _mean(np.abs(g) * axhat)
                     + axhat * _mean(np.abs(g) * e_xhat))
            e_dz = cond.dx(dz, g, xhat) + scale * moved + np.abs(dz) * bounds.e_sigma
        else:
            e_xhat = _last(bounds.e_z) / cond.sigma  # the statistics' own error is in Conditioning's dgamma
            e_dz = cond.dx(dz, g, xhat) + scale * eg
        e_dgamma = cond.dgamma(bn.dgamma, g, xhat) + _sum(eg * axhat + np.abs(g) * e_xhat)
        e_dbeta = cond.dbeta(bn.dbeta, g) + _sum(eg)
        return _first(e_dz), e_dgamma, e_dbeta

    # -- state -------------------------------------------------------------------------------------
    def running_field(self, block: int, field: str, value: np.ndarray) -> np.ndarray:
        """The tolerance of BatchNorm ``block``'s (1 or 2) running field ``field`` against ``value``."""
        return self.running[block - 1].tolerance(field, value)
