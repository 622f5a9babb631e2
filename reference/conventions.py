"""Running-statistics conventions as validated records: the specification is parametrized by them.

A :class:`Convention` fixes everything that differs between BatchNorm implementations while the
normalization itself is the same (training always normalizes with the biased batch variance): which
value ``momentum`` weights, the defaults (momentum, eps, channel axis; a framework may have none), the
correction of the stored running variance, the running state a layer keeps (a batch counter; running
averages kept as zero-started hidden averages that inference debiases; an average of the standard deviation
instead of the variance) and so what inference reads. The rules themselves are :mod:`reference.running`;
the five built-in records below are the frameworks this project ships adapters for, and anyone may declare
another (an adapter module does, for its own framework).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["CONVENTIONS", "FLAX", "KERAS", "ONNX", "REQUIRED", "TF_KERAS_FUSED", "TORCH", "Convention",
           "check_eps", "check_momentum", "convert_momentum", "get_convention"]


class _Required:
    """The default of an argument the framework's constructor requires (it has none)."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:  # one marker, also after unpickling in another process
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
# Names a convention's state fields may not take: the layer's parameters, its running statistics and the
# hyperparameters a State reports.
_RESERVED = frozenset({"gamma", "beta", "running_mean", "running_var", "running_std", "eps", "momentum"})


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Convention:
    """How one framework keeps its running statistics; checked on construction (``ValueError``/``TypeError``
    naming the field).

    Attributes:
        name: a short identifier, unique among the conventions of a run (``"torch"``).
        frameworks: who uses it, for tables and reports.
        momentum_weights: ``"new"`` when ``momentum`` multiplies the batch statistic
            (``run = (1 - m) * run + m * batch``, PyTorch), ``"old"`` when it multiplies the running value
            (``run = m * run + (1 - m) * batch``, Keras, ONNX, Flax).
        default_momentum: the constructor's default; :data:`REQUIRED` where it has none; ``None`` is the
            cumulative average (only with ``cumulative_momentum``).
        default_eps: the constructor's default, or :data:`REQUIRED`.
        channel_axis: the default channel axis (``1`` channels first, ``-1`` last), or :data:`REQUIRED`.
        running_var_ddof: the stored running variance is ``var * n / (n - ddof)`` of the batch's ``n``
            values per channel: 0 biased, 1 Bessel-corrected (unbiased; such a layer cannot train on one
            value per channel: PyTorch raises ``ValueError``).
        cumulative_momentum: ``momentum=None`` is allowed and means the cumulative moving average with
            new-batch weight ``1 / counter`` (PyTorch).
        counter: the name of the state field counting training batches (``"num_batches_tracked"``), or
            ``None`` where the layer keeps no counter. Needed by ``cumulative_momentum`` and ``debiased``.
        debiased: the running averages are hidden averages started at zero, and inference reads them
            divided by ``1 - (1 - w)**counter`` (Adam's debiasing, as Haiku's and Sonnet's moving averages;
            ``w`` is the new-batch weight, which must then be positive). Before the first batch there is
            nothing to debias and inference reads the hidden values (zero).
        averaged_spread: ``"var"``: the second running average is of the (corrected) batch variance,
            stored as ``running_var``; ``"std"``: of its square root, stored as ``running_std``, which
            inference squares (tf-keras' batch renormalization keeps ``moving_stddev``, though of
            ``sqrt(var + eps)``: :mod:`reference.variants`).
    """

    name: str
    momentum_weights: Literal["new", "old"]
    default_momentum: float | None | _Required
    default_eps: float | _Required
    channel_axis: int | _Required
    running_var_ddof: int = 0
    cumulative_momentum: bool = False
    counter: str | None = None
    debiased: bool = False
    averaged_spread: Literal["var", "std"] = "var"
    frameworks: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"convention name must be an identifier, got {self.name!r}")
        if self.momentum_weights not in ("new", "old"):
            raise ValueError(f"{self.name}: momentum_weights must be 'new' or 'old', got {self.momentum_weights!r}")
        for flag in ("cumulative_momentum", "debiased"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{self.name}: {flag} must be a bool, got {getattr(self, flag)!r}")
        if self.running_var_ddof not in (0, 1) or isinstance(self.running_var_ddof, bool):
            raise ValueError(f"{self.name}: running_var_ddof must be 0 (biased) or 1 (Bessel), "
                             f"got {self.running_var_ddof!r}")
        if self.averaged_spread not in ("var", "std"):
            raise ValueError(f"{self.name}: averaged_spread must be 'var' or 'std', got {self.averaged_spread!r}")
        if self.counter is not None and (not isinstance(self.counter, str) or not self.counter.isidentifier()
                                         or self.counter in _RESERVED):
            raise ValueError(f"{self.name}: counter must be an identifier other than {sorted(_RESERVED)}, "
                             f"got {self.counter!r}")
        for flag in ("cumulative_momentum", "debiased"):
            if getattr(self, flag) and self.counter is None:
                raise ValueError(f"{self.name}: {flag} needs a counter (the state field counting batches)")
        if self.cumulative_momentum and self.debiased:
            raise ValueError(f"{self.name}: a cumulative average is unbiased already; debiased and "
                             "cumulative_momentum exclude each other")
        for key, check in (("default_momentum", lambda m: check_momentum(m, self)), ("default_eps", check_eps)):
            if (value := getattr(self, key)) is not REQUIRED:
                try:
                    check(value)
                except (TypeError, ValueError) as exc:  # the same type, naming the record and the field
                    raise type(exc)(f"{self.name}: {key}: {exc}") from None
        if self.channel_axis is not REQUIRED and not (isinstance(self.channel_axis, int)
                                                      and not isinstance(self.channel_axis, bool)):
            raise TypeError(f"{self.name}: channel_axis must be an integer or REQUIRED, got {self.channel_axis!r}")
        if not isinstance(self.frameworks, str):
            raise TypeError(f"{self.name}: frameworks must be a string, got {self.frameworks!r}")

    def new_batch_weight(self, momentum: float | None, counter: int) -> float:
        """Weight ``w`` of the batch statistic in ``run = (1 - w) * run + w * batch``; ``counter`` counts the
        current batch (it is at least 1 when called)."""
        if momentum is None:
            return 1.0 / counter
        return momentum if self.momentum_weights == "new" else 1.0 - momentum

    def momentum_for(self, new_batch_weight: float | None) -> float | None:
        """The constructor's ``momentum`` whose new-batch weight is ``new_batch_weight`` (``None``: the
        cumulative average, which only some conventions have)."""
        if new_batch_weight is None:
            return None
        return new_batch_weight if self.momentum_weights == "new" else 1.0 - new_batch_weight

    @property
    def spread_field(self) -> str:
        """The state field of the second running average: ``running_var`` or ``running_std``."""
        return "running_std" if self.averaged_spread == "std" else "running_var"

    @property
    def running_fields(self) -> tuple[str, ...]:
        """The running state a layer keeps: the two averages, then the counter where there is one."""
        return ("running_mean", self.spread_field) + ((self.counter,) if self.counter else ())

    def defaults(self) -> dict[str, object]:
        """The constructor defaults, as :meth:`Implementation.defaults` reports a framework's."""
        return {"momentum": self.default_momentum, "eps": self.default_eps, "channel_axis": self.channel_axis}

    def as_dict(self) -> dict:
        """Plain data (the report's); a missing default is the string ``"required"``."""
        return {k: "required" if v is REQUIRED else v for k, v in asdict(self).items()}


def get_convention(convention: str | Convention) -> Convention:
    """The given record, or the built-in one of that name, with a clear error for unknown names."""
    if isinstance(convention, Convention):
        return convention
    if not isinstance(convention, str):
        raise TypeError(f"convention must be a name or a Convention, got {type(convention).__name__}")
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise ValueError(
            f"unknown convention {convention!r}; built-in conventions: {', '.join(sorted(CONVENTIONS))} "
            "(declare another as a Convention record)"
        ) from None


def check_momentum(momentum: float | None, convention: Convention) -> float | None:
    """Validate a momentum value for ``convention``; return it as a float (or None)."""
    if momentum is None:
        if not convention.cumulative_momentum:
            raise ValueError(
                f"momentum=None (cumulative average) is not part of the {convention.name!r} convention"
            )
        return None
    if not _real(momentum):
        raise TypeError(f"momentum must be a real number or None, got {type(momentum).__name__}")
    if not (0.0 <= momentum <= 1.0):  # also rejects NaN
        raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
    if convention.debiased and convention.new_batch_weight(float(momentum), 1) == 0.0:
        raise ValueError(f"momentum {momentum!r} gives the new batch no weight, which the {convention.name!r} "
                         "convention cannot debias (1 - (1 - w)**t is 0)")
    return float(momentum)


def convert_momentum(momentum: float | None, source: str | Convention, target: str | Convention) -> float | None:
    """Express ``momentum`` given in ``source``'s convention in ``target``'s convention.

    The update rules are ``(1 - m) * run + m * batch`` ("new") and ``m * run + (1 - m) * batch``
    ("old"), so converting between the two styles is ``m -> 1 - m``; within a style it is the identity.
    ``None`` (PyTorch's cumulative average) has no fixed-momentum equivalent and only converts to a
    convention that also supports it.
    """
    src, dst = get_convention(source), get_convention(target)
    momentum = check_momentum(momentum, src)
    if momentum is None:
        return check_momentum(None, dst)
    return check_momentum(momentum if src.momentum_weights == dst.momentum_weights else 1.0 - momentum, dst)


def check_eps(eps: float) -> float:
    """Validate eps: a finite, non-negative real."""
    if not _real(eps):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and non-negative, got {eps!r}")
    return float(eps)


TORCH = Convention("torch", "new", 0.1, 1e-5, 1, running_var_ddof=1, cumulative_momentum=True,
                   counter="num_batches_tracked", frameworks="PyTorch nn.BatchNorm*d, F.batch_norm, SyncBatchNorm")
KERAS = Convention("keras", "old", 0.99, 1e-3, -1, frameworks="Keras 3 (all backends), tf-keras fused=False")
TF_KERAS_FUSED = Convention("tf_keras_fused", "old", 0.99, 1e-3, -1, running_var_ddof=1,
                            frameworks="tf-keras fused=True (tf.compat.v1.nn.fused_batch_norm)")
ONNX = Convention("onnx", "old", 0.9, 1e-5, 1, frameworks="ONNX BatchNormalization (opset >= 14)")
FLAX = Convention("flax", "old", 0.99, 1e-5, -1, frameworks="Flax linen/nnx BatchNorm")

# The built-in records by name.
CONVENTIONS: dict[str, Convention] = {c.name: c for c in (TORCH, KERAS, TF_KERAS_FUSED, ONNX, FLAX)}
