"""Flax GroupNorm and InstanceNorm: ``flax.linen.GroupNorm``, ``flax.nnx.GroupNorm`` (the ``flax_groupnorm``
record) and ``flax.linen.InstanceNorm``, ``flax.nnx.InstanceNorm`` (``flax_instancenorm``), built and run as the
LayerNorm adapter builds and runs Flax's LayerNorm (``layernorm_flax``): jitted pure functions of their
parameters, ``jax.vjp`` and its ``jax.jvp``, 64-bit types enabled in the worker.

GroupNorm is built with ``num_groups`` (``group_size=None``), InstanceNorm with ``feature_axes=-1``; both with
``epsilon``, ``use_scale``, ``use_bias`` and the default ``dtype`` and ``param_dtype`` (as LayerNorm's). Both
take the channels last only: GroupNorm's feature axis is fixed at -1, and InstanceNorm reduces every axis but
the batch (the leading one) and its feature axes.
"""

from __future__ import annotations

import inspect

from reference import GROUPNORM_CONVENTIONS, INSTANCE

from ..operators.groupnorm import GROUPNORM, GroupNormSpec
from .base import Capabilities
from .layernorm_flax import _OPTIONS, FlaxLayerNorm, FlaxLayerNormLayer


class FlaxGroupNormLayer(FlaxLayerNormLayer):
    """The LayerNorm adapter's layer with GroupNorm's or InstanceNorm's arguments: one scale and one bias per
    channel."""

    def _arguments(self, spec: GroupNormSpec, kind: str) -> dict:
        layout = {"num_groups": spec.groups, "group_size": None} if kind == "GroupNorm" else {"feature_axes": -1}
        return dict(epsilon=spec.eps, use_scale=spec.affine, use_bias=spec.bias, **layout, **dict(spec.options))

    def _shapes(self, spec: GroupNormSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (1,) * (spec.rank - 1) + (spec.num_channels,), spec.parameter_shape


class FlaxGroupNorm(FlaxLayerNorm):
    """``kind``: ``GroupNorm`` or ``InstanceNorm`` (one group per channel, no ``num_groups``)."""

    operator = GROUPNORM

    def __init__(self, api: str, kind: str) -> None:
        self.api, self.kind = api, kind
        self.name = f"flax.{api}.{kind}"
        self.convention = GROUPNORM_CONVENTIONS["flax_groupnorm" if kind == "GroupNorm" else "flax_instancenorm"]
        grouped = {"grouped"} if kind == "GroupNorm" else set()
        # The feature axis is the last one (GroupNorm fixes it; InstanceNorm's feature_axes=-1). InstanceNorm at
        # rank 2 has no spatial axis: Flax reduces over no axis (each value its own mean, variance 0) and returns
        # the bias, which is the reference's one value per group, so rank 2 stays.
        self.capabilities = Capabilities(
            ranks=frozenset({2, 3, 4, 5}), channel_axes=frozenset({-1}), options=frozenset(_OPTIONS[api]),
            double_backward=True, features=frozenset({"affine_false", "scale_false", "bias_false", *grouped}))

    def defaults(self) -> dict[str, object]:
        import flax.linen
        from flax import nnx

        # nnx modules are built through a metaclass whose signature hides __init__'s arguments.
        target = getattr(flax.linen, self.kind) if self.api == "linen" else getattr(nnx, self.kind).__init__
        params = inspect.signature(target).parameters
        groups = params["num_groups"].default if self.kind == "GroupNorm" else INSTANCE
        return {"eps": params["epsilon"].default, "groups": groups, "affine": params["use_scale"].default,
                "bias": params["use_bias"].default}

    def build(self, spec: GroupNormSpec) -> FlaxGroupNormLayer:
        return FlaxGroupNormLayer(spec, self.api, self.kind)


IMPLEMENTATIONS = [FlaxGroupNorm(api, kind) for kind in ("GroupNorm", "InstanceNorm") for api in ("linen", "nnx")]
