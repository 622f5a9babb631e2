"""The correct baseline of the mutation self-test: a small NumPy BatchNorm written as a framework would
write one, with every step a method that a mutant (``mutants/catalogue.py``) overrides to carry one bug.

It follows the reference's contract as PyTorch and Keras layers do: float16/bfloat16 inputs are computed
with float32 arithmetic (float32 accumulation) and returned in the input's dtype, float32 in float32,
float64 in float64; parameters and running statistics are held in float64 (what crosses the adapter
protocol); bad input raises before anything changes. Statistics are two-pass. Work happens on a
``(N, C, L)`` view with the channels second and everything after them flattened.

The baseline must pass every check of the suite without a single deviation; ``mutants.verdict`` fails
the run otherwise.
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import LayerSpec, State
from reference import Convention, get_convention

__all__ = ["BatchNorm"]


class BatchNorm:
    """A BatchNorm layer behind the adapter protocol (:class:`conformance.adapters.base.Layer`).

    Hooks, in the order a call meets them: construction (:meth:`hyperparameters`, :meth:`initial_state`);
    input checks (:meth:`validate` with :meth:`check_channels`, :meth:`validate_dy`, :meth:`check_batch`);
    the modes (:meth:`effective_training`, :meth:`batch_mode`, :meth:`updates_running`); the dtype policy
    (:meth:`compute_dtype`, :meth:`output_dtype`); :meth:`statistics` (means by :meth:`channel_mean` over
    :attr:`statistic_axes`) or :meth:`held_statistics`, :meth:`normalize`, :meth:`scale`;
    the running update (:meth:`new_batch_weight`, :meth:`bessel_factor` of
    :meth:`values_per_channel`, :meth:`update_running`); gradients (:meth:`backward_training`,
    :meth:`backward_inference`, :meth:`parameter_gradients`); second order
    (:meth:`hessian_vector_product` with :meth:`tangents`). ``input_dtype`` is the last forward's.
    """

    # Axes of the (N, C, L) view that the batch statistics reduce over.
    statistic_axes = (0, 2)

    def __init__(self, spec: LayerSpec, convention: str | Convention) -> None:
        self.spec = spec
        self.convention = get_convention(convention)
        self.eps, self.momentum = self.hyperparameters(spec)
        state = self.initial_state(spec)
        self.gamma, self.beta = state.gamma, state.beta
        self.running_mean, self.running_var = state.running_mean, state.running_var
        # The batch counter, under whatever name the convention gives it (PyTorch's num_batches_tracked).
        self.num_batches_tracked = state.get(self.convention.counter) if self.convention.counter else None
        self.saved: dict | None = None

    # -- construction ----------------------------------------------------------------------------
    def hyperparameters(self, spec: LayerSpec) -> tuple[float, float | None]:
        """``(eps, momentum)`` as the layer keeps them."""
        return spec.eps, spec.momentum

    def initial_state(self, spec: LayerSpec) -> State:
        c = spec.num_features
        affine = (np.ones(c), np.zeros(c)) if spec.affine else (None, None)
        running = (np.zeros(c), np.ones(c)) if spec.track_running_stats else (None, None)
        # Keras keeps no batch counter; PyTorch keeps one where it keeps running statistics.
        counter = {self.convention.counter: 0 if spec.track_running_stats else None} if self.convention.counter else {}
        return State(**dict(zip(_ARRAYS, (*affine, *running))), **counter)

    # -- the adapter protocol --------------------------------------------------------------------
    def set_state(self, state: State) -> None:
        for name in _ARRAYS:
            if state.get(name) is not None:
                setattr(self, name, np.array(state[name], dtype=np.float64))
        if self.convention.counter and state.get(self.convention.counter) is not None:
            self.num_batches_tracked = int(state[self.convention.counter])  # a port carries it

    def get_state(self) -> State:
        arrays = {name: None if (a := getattr(self, name)) is None else a.copy() for name in _ARRAYS}
        counter = {self.convention.counter: self.num_batches_tracked} if self.convention.counter else {}
        return State(**arrays, **counter, eps=self.eps, momentum=self.momentum)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        x3 = self.validate(x)
        self.input_dtype = x.dtype
        batch_mode, updating = self.batch_mode(training), self.updates_running(training)
        xc = self._compute(x3, self.compute_dtype(x.dtype))
        if batch_mode or updating:
            self.check_batch(x3)
            batch = self.statistics(xc)
        mean, var = batch if batch_mode else self.held_statistics(x.dtype, xc.dtype)
        xhat, r = self.normalize(xc, mean, var)
        gamma = self.scale(x3.shape[1])
        beta = np.zeros(x3.shape[1]) if self.beta is None else self.beta
        y = xhat * self._column(gamma, xc.dtype) + self._column(beta, xc.dtype)
        if updating:
            self.update_running(*(_per_channel(a) for a in batch), self.values_per_channel(x3))
        self.saved = {"x": xc, "xhat": xhat, "r": r, "batch_mode": batch_mode, "gamma": gamma}
        return self._restore(y.astype(self.output_dtype(x.dtype)), x)

    def forward_backward(self, x, dy, training):
        self.validate_dy(dy, x)  # before the forward's side effects
        y = self.forward(x, training)
        saved = self.saved
        dy3 = self._compute(self.view(dy), saved["x"].dtype)
        gamma = self._column(saved["gamma"], dy3.dtype)
        backward = self.backward_training if saved["batch_mode"] else self.backward_inference
        dx = backward(dy3, saved["xhat"], saved["r"], gamma)
        dgamma, dbeta = self.parameter_gradients(dy3, saved["xhat"])
        return y, self._restore(dx.astype(self.output_dtype(x.dtype)), x), dgamma, dbeta

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        x3 = self.validate(x)
        self.check_batch(x3)
        dtype = self.compute_dtype(x.dtype)
        xc = self._compute(x3, dtype)
        dy3, vx3 = (self._compute(self.view(self.validate_dy(a, x)), dtype) for a in (dy, vx))
        xhat, r = self.normalize(xc, *self.statistics(xc))
        gamma = self._column(np.ones(x3.shape[1]) if self.gamma is None else self.gamma, dtype)
        vgamma3 = self._column(np.zeros(x3.shape[1]) if vgamma is None else vgamma, dtype)
        hx, hgamma = self.hessian_vector_product(dy3, xhat, r, gamma, vx3, vgamma3)
        hx = self._restore(hx.astype(self.output_dtype(x.dtype)), x)
        if self.gamma is None:
            return hx, None, None
        return hx, hgamma.astype(np.float64), np.zeros(x3.shape[1])

    # -- input checks ----------------------------------------------------------------------------
    def validate(self, x: np.ndarray) -> np.ndarray:
        """``x`` as its ``(N, C, L)`` view, or an error naming what is wrong with it."""
        if not (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"x must have rank >= 2 (batch, channels, ...), got shape {x.shape}")
        self.check_channels(x)
        return self.view(x)

    def check_channels(self, x: np.ndarray) -> None:
        if x.shape[self.spec.channel_axis] != self.spec.num_features:
            raise ValueError(f"expected {self.spec.num_features} channels on axis {self.spec.channel_axis}, "
                             f"got input of shape {x.shape}")

    def validate_dy(self, dy: np.ndarray, x: np.ndarray) -> np.ndarray:
        """A cotangent (or tangent) of the forward input ``x``: floating, of its shape."""
        if not (dy.dtype.kind == "f" or dy.dtype.name == "bfloat16"):
            raise TypeError(f"dy must have a floating dtype, got {dy.dtype}")
        if dy.shape != x.shape:
            raise ValueError(f"dy must have the shape of x {x.shape}, got {dy.shape}")
        return dy

    def check_batch(self, x3: np.ndarray) -> None:
        """What normalizing with batch statistics needs: values, and two per channel where the running
        variance is Bessel-corrected."""
        count = self.values_per_channel(x3)
        if count == 0:
            raise ValueError(f"cannot normalize an empty batch with batch statistics, got {x3.shape[0]} samples")
        if count <= self.convention.running_var_ddof:
            raise ValueError("expected more than 1 value per channel when training")

    # -- numerics --------------------------------------------------------------------------------
    def compute_dtype(self, dtype: np.dtype) -> np.dtype:
        """float64 stays float64; float32 and narrower compute in float32."""
        return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def effective_training(self, training: bool) -> bool:
        """Keras: a layer built with ``trainable=False`` runs in inference mode whatever ``training`` says."""
        return training and self.spec.trainable

    def batch_mode(self, training: bool) -> bool:
        """Whether this call normalizes with the batch's statistics."""
        return self.effective_training(training) or self.running_mean is None

    def updates_running(self, training: bool) -> bool:
        """Whether this call adds the batch to the running statistics."""
        return self.effective_training(training) and self.running_mean is not None

    def held_statistics(self, input_dtype: np.dtype, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The running mean and variance inference normalizes with, as columns in the compute dtype."""
        return self._column(self.running_mean, dtype), self._column(self.running_var, dtype)

    def scale(self, channels: int) -> np.ndarray:
        """The gamma the normalized values are multiplied by (ones without affine parameters)."""
        return np.ones(channels) if self.gamma is None else self.gamma

    def values_per_channel(self, x3: np.ndarray) -> int:
        return x3.shape[0] * x3.shape[2]

    def channel_mean(self, a: np.ndarray) -> np.ndarray:
        """The mean over :attr:`statistic_axes`, kept as axes of one, summed pairwise: NumPy sums pairwise
        only along a contiguous axis, and an ``(N, C, 1)`` view reduced over N as it is adds 2**20 float32
        values one after another (half a spread of the mean lost 100 spreads from zero)."""
        axes = self.statistic_axes
        moved = np.moveaxis(a, axes, range(a.ndim - len(axes), a.ndim))
        flat = np.ascontiguousarray(moved).reshape(*moved.shape[: a.ndim - len(axes)], -1)
        return np.expand_dims(flat.mean(axis=-1), axes)

    def statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and biased variance, two-pass, shaped to broadcast against ``x``."""
        mean = self.channel_mean(x)
        return mean, self.channel_mean((x - mean) ** 2)

    def normalize(self, x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``xhat`` and ``r = 1 / sqrt(var + eps)``."""
        r = 1 / np.sqrt(var + x.dtype.type(self.eps))
        return (x - mean) * r, r

    def new_batch_weight(self) -> float:
        """``w`` in ``run = (1 - w) run + w batch``, counting the batch being added."""
        return self.convention.new_batch_weight(self.momentum, (self.num_batches_tracked or 0) + 1)

    def update_running(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        w = self.new_batch_weight()
        stored = var * self.bessel_factor(count) if self.convention.running_var_ddof else var
        self.running_mean = (1 - w) * self.running_mean + w * mean
        self.running_var = (1 - w) * self.running_var + w * stored
        if self.num_batches_tracked is not None:
            self.num_batches_tracked += 1

    def bessel_factor(self, count: int) -> float:
        """``n / (n - 1)``, which turns the biased variance into the unbiased one."""
        return count / (count - 1)

    def backward_training(self, dy: np.ndarray, xhat: np.ndarray, r: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        return gamma * r * (dy - self.channel_mean(dy) - xhat * self.channel_mean(dy * xhat))

    def backward_inference(self, dy: np.ndarray, xhat: np.ndarray, r: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        return dy * gamma * r

    def parameter_gradients(self, dy: np.ndarray, xhat: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.gamma is None:
            return None, None
        return (dy * xhat).sum(axis=(0, 2), dtype=np.float64), dy.sum(axis=(0, 2), dtype=np.float64)

    def hessian_vector_product(
        self, dy: np.ndarray, xhat: np.ndarray, r: np.ndarray, gamma: np.ndarray, vx: np.ndarray, vgamma: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The formula of :func:`reference.textbook.hvp_training`: ``(hvp_x, hvp_gamma)``."""
        mean = self.channel_mean
        g = dy - mean(dy) - xhat * mean(dy * xhat)
        t, dr = self.tangents(r, xhat, vx)
        hx = vgamma * r * g + gamma * dr * g - gamma * r * (t * mean(dy * xhat) + xhat * mean(dy * t))
        return hx, (dy * t).sum(axis=(0, 2))

    def tangents(self, r: np.ndarray, xhat: np.ndarray, vx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The derivatives of ``xhat`` and of ``r = 1 / sqrt(var + eps)`` along ``vx``, through the batch
        statistics."""
        xhat_vx = self.channel_mean(xhat * vx)
        return r * (vx - self.channel_mean(vx) - xhat * xhat_vx), -(r**2) * xhat_vx

    # -- layout ----------------------------------------------------------------------------------
    def view(self, a: np.ndarray) -> np.ndarray:
        """``a`` as ``(N, C, L)``: channels second, everything after them flattened."""
        moved = np.moveaxis(a, self.spec.channel_axis, 1)
        return moved.reshape(moved.shape[0], moved.shape[1], int(np.prod(moved.shape[2:], dtype=int)))

    def _restore(self, a3: np.ndarray, like: np.ndarray) -> np.ndarray:
        moved_shape = list(like.shape)
        moved_shape.insert(1, moved_shape.pop(self.spec.channel_axis))
        return np.moveaxis(a3.reshape(moved_shape), 1, self.spec.channel_axis)

    @staticmethod
    def _compute(a3: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """A copy in the compute dtype, contiguous: NumPy sums pairwise only along a contiguous axis (a
        channels-last view reduced as is accumulates 10**6 float32 values one by one)."""
        return a3.astype(dtype, order="C")

    @staticmethod
    def _column(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return np.asarray(v, dtype=dtype).reshape(1, -1, 1)


_ARRAYS = ("gamma", "beta", "running_mean", "running_var")  # the state's arrays; the counter is the convention's


def _per_channel(a: np.ndarray) -> np.ndarray:
    """A statistic of the (N, C, L) view as float64 of shape (C,)."""
    return a.mean(axis=(0, 2), dtype=np.float64)
