"""Adapters for layers of frameworks the suite has no record for, each module-level record declared here as a
third party declares its own (``tests/test_declared_convention.py`` runs the checks on them by locator,
``--impl declared_adapters:HAIKU_STYLE``).

- :data:`HAIKU_STYLE`: Haiku's ``hk.BatchNorm`` arithmetic. Its moving averages are
  ``hk.ExponentialMovingAverage(decay_rate, zero_debias=True)``: hidden values started at 0 and a counter,
  ``hidden = decay * hidden + (1 - decay) * value`` per training batch, and inference reads
  ``hidden / (1 - decay**counter)``. ``decay_rate`` has no default; ``eps`` 1e-5; channels last by default;
  the biased variance. Its record: momentum weights the old value, REQUIRED default momentum, a counter
  named ``counter``, debiased.
- :data:`STDDEV_STYLE`: a layer that keeps a moving average of the standard deviation (``sqrt`` of the
  Bessel-corrected batch variance) instead of the variance, as tf-keras' batch renormalization keeps
  ``moving_stddev``; inference squares it.

Both compute in the input's dtype (float32 or float64), two-pass, and hold their variables in it, as a
framework would. ``NOT_DEBIASED`` and ``VARIANCE_ROOT`` are the same layers with the bug each record invites
(inference reading the hidden averages as they are; the root of an averaged variance reported as the
average of the roots): the suite must fail them.
"""

from __future__ import annotations

import inspect

import numpy as np

from conformance.adapters.base import Capabilities, Implementation, LayerSpec, State
from conformance.core.dtypes import dtype_of
from reference import REQUIRED, Convention

__all__ = ["HAIKU_STYLE", "NOT_DEBIASED", "STDDEV_STYLE", "VARIANCE_ROOT"]


class MovingAverage:
    """``hk.ExponentialMovingAverage(decay, zero_debias=True)``."""

    def __init__(self, decay: float, value: np.ndarray, debias: bool = True) -> None:
        self.decay, self.hidden, self.counter, self.debias = decay, np.zeros_like(value), 0, debias

    def __call__(self, value: np.ndarray) -> None:
        self.counter += 1
        self.hidden = self.hidden * self.hidden.dtype.type(self.decay) + value * self.hidden.dtype.type(1 - self.decay)

    @property
    def average(self) -> np.ndarray:
        if not (self.debias and self.counter):
            return self.hidden
        return self.hidden / (1 - self.hidden.dtype.type(self.decay) ** self.counter)


class HaikuStyleBatchNorm:
    """``hk.BatchNorm(create_scale, create_offset, decay_rate, eps=1e-5, data_format="channels_last")`` on NumPy
    arrays; ``test_local_stats`` normalizes with the batch's statistics in inference too (and keeps none)."""

    def __init__(self, create_scale: bool, create_offset: bool, decay_rate: float, eps: float = 1e-5,
                 data_format: str = "channels_last", test_local_stats: bool = False, num_features: int = 1,
                 dtype: str = "float32", debias: bool = True) -> None:
        self.dtype = dtype_of(dtype)
        c = num_features
        self.scale = np.ones(c, self.dtype) if create_scale else None
        self.offset = np.zeros(c, self.dtype) if create_offset else None
        self.eps, self.decay_rate, self.test_local_stats = eps, decay_rate, test_local_stats
        self.axis = -1 if data_format == "channels_last" else 1
        self.mean_ema = MovingAverage(decay_rate, np.zeros(c, self.dtype), debias)
        self.var_ema = MovingAverage(decay_rate, np.zeros(c, self.dtype), debias)

    def moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axis=axes)
        return mean, ((x - mean) ** 2).mean(axis=axes)

    def update(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        self.mean_ema(mean)
        self.var_ema(var)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean_ema.average, self.var_ema.average

    def __call__(self, x: np.ndarray, is_training: bool) -> np.ndarray:
        x = np.moveaxis(x.astype(self.dtype), self.axis, -1)
        if is_training or self.test_local_stats:
            mean, var = self.moments(x)
            if is_training and not self.test_local_stats:
                self.update(mean, var, x.size // x.shape[-1])
        else:
            mean, var = self.statistics()
        y = (x - mean) / np.sqrt(var + self.dtype.type(self.eps))
        y = y * (1 if self.scale is None else self.scale) + (0 if self.offset is None else self.offset)
        return np.moveaxis(y, -1, self.axis)


class StddevStyleBatchNorm(HaikuStyleBatchNorm):
    """A moving average of the (Bessel-corrected) standard deviation, started at 1, never debiased;
    ``variance_root`` averages the variance instead and reports its root (the bug)."""

    def __init__(self, create_scale: bool, create_offset: bool, decay_rate: float, eps: float = 1e-5,
                 data_format: str = "channels_last", test_local_stats: bool = False, num_features: int = 1,
                 dtype: str = "float32", variance_root: bool = False) -> None:
        super().__init__(create_scale, create_offset, decay_rate, eps, data_format, test_local_stats, num_features,
                         dtype, debias=False)
        self.var_ema.hidden = np.ones_like(self.var_ema.hidden)
        self.variance_root = variance_root

    def moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.size // x.shape[-1] < 2:
            raise ValueError("a Bessel-corrected standard deviation needs more than 1 value per channel")
        return super().moments(x)

    def update(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        unbiased = var * self.dtype.type(n / (n - 1))
        self.mean_ema(mean)
        if self.variance_root:
            self.var_ema.hidden = np.sqrt(self.var_ema.hidden**2 * self.dtype.type(self.decay_rate)
                                          + unbiased * self.dtype.type(1 - self.decay_rate))
        else:
            self.var_ema(np.sqrt(unbiased))

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean_ema.average, self.var_ema.average**2


class DeclaredLayer:
    """Either layer behind the adapter protocol: the state in the fields of its implementation's record."""

    def __init__(self, impl: DeclaredImplementation, spec: LayerSpec) -> None:
        self.conv = impl.convention
        self.bn = impl.layer(spec.affine, spec.affine, spec.momentum, eps=spec.eps,
                             data_format="channels_last" if spec.channel_axis == -1 else "channels_first",
                             test_local_stats=not spec.track_running_stats, num_features=spec.num_features,
                             dtype=spec.dtype, **impl.options)
        self.tracked = spec.track_running_stats

    def set_state(self, state: State) -> None:
        bn, dtype = self.bn, self.bn.dtype
        for name, value in state.assigned().items():
            if name == self.conv.counter:
                bn.mean_ema.counter = bn.var_ema.counter = int(value)
            elif name in ("gamma", "beta"):
                setattr(bn, "scale" if name == "gamma" else "offset", np.asarray(value).astype(dtype))
            else:
                ema = bn.mean_ema if name == "running_mean" else bn.var_ema
                ema.hidden = np.asarray(value).astype(dtype)

    def get_state(self) -> State:
        bn = self.bn
        fields = {"gamma": bn.scale, "beta": bn.offset}
        if self.tracked:
            fields |= {"running_mean": bn.mean_ema.hidden, self.conv.spread_field: bn.var_ema.hidden}
        arrays = {name: None if v is None else np.asarray(v, np.float64) for name, v in fields.items()}
        counter = {self.conv.counter: bn.mean_ema.counter if self.tracked else None} if self.conv.counter else {}
        return State(**arrays, **counter, eps=bn.eps, momentum=bn.decay_rate)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.bn(x, training)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        raise NotImplementedError("not part of these checks")


class DeclaredImplementation(Implementation):
    family = "declared"
    framework = "numpy"
    isolated = False
    capabilities = Capabilities(dtypes=frozenset({"float32", "float64"}),
                                features=frozenset({"affine_false", "no_running_stats"}),
                                no_gradients="the declared layers are checked on their state and outputs")

    def __init__(self, name: str, convention: Convention, layer: type, **options) -> None:
        self.name, self.convention, self.layer, self.options = name, convention, layer, options

    def environment(self) -> dict[str, str]:
        return {"version": np.__version__}

    def defaults(self) -> dict[str, object]:
        """Read off the constructor, as for any framework: a parameter without a default is REQUIRED."""
        params = inspect.signature(self.layer).parameters
        default = {name: REQUIRED if p.default is inspect.Parameter.empty else p.default for name, p in params.items()}
        return {"momentum": default["decay_rate"], "eps": default["eps"],
                "channel_axis": -1 if default["data_format"] == "channels_last" else 1}

    def build(self, spec: LayerSpec) -> DeclaredLayer:
        return DeclaredLayer(self, spec)


# Each adapter module declares its framework's record.
HAIKU_STYLE_RECORD = Convention("haiku_style", "old", REQUIRED, 1e-5, -1, counter="counter", debiased=True,
                                frameworks="hk.BatchNorm (tests/declared_adapters.py)")
STDDEV_STYLE_RECORD = Convention("stddev_style", "old", REQUIRED, 1e-5, -1, running_var_ddof=1,
                                 averaged_spread="std", frameworks="a moving standard deviation (tests)")

HAIKU_STYLE = DeclaredImplementation("haiku_style.numpy", HAIKU_STYLE_RECORD, HaikuStyleBatchNorm)
STDDEV_STYLE = DeclaredImplementation("stddev_style.numpy", STDDEV_STYLE_RECORD, StddevStyleBatchNorm)
NOT_DEBIASED = DeclaredImplementation("wrong.not_debiased", HAIKU_STYLE_RECORD, HaikuStyleBatchNorm, debias=False)
VARIANCE_ROOT = DeclaredImplementation("wrong.variance_root", STDDEV_STYLE_RECORD, StddevStyleBatchNorm,
                                       variance_root=True)
