"""What an adapter builds a GroupNorm or InstanceNorm from: :class:`GroupNormSpec`, in framework-neutral terms."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GroupNormSpec"]


@dataclass(frozen=True)
class GroupNormSpec:
    """What to build: ``num_channels`` channels at ``channel_axis`` (1 or -1) of a rank ``rank`` input, in
    ``groups`` groups of consecutive channels (``groups == num_channels``: InstanceNorm), ``eps``, whether there
    is a scale (``affine``: PyTorch's ``affine``, Keras' ``scale``, Flax's ``use_scale``) and an offset
    (``bias``: Keras' ``center``, Flax's ``use_bias``), each with ``parameter_shape[0]`` values (one per channel,
    or one per group where the convention's parameters are per group), the dtype and framework ``options``
    (as BatchNorm's ``LayerSpec``)."""

    num_channels: int
    groups: int
    rank: int
    channel_axis: int
    eps: float
    affine: bool = True
    bias: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    options: tuple[tuple[str, object], ...] = ()
    per_group: bool = False  # the scale and offset per group (ONNX GroupNormalization opset 18)

    @property
    def instance(self) -> bool:
        """One group per channel: what an InstanceNorm builds."""
        return self.groups == self.num_channels

    @property
    def parameter_shape(self) -> tuple[int]:
        return (self.groups if self.per_group else self.num_channels,)

    def requirements(self) -> list[tuple[str, object, str]]:
        """What building it needs, as ``(capability, value, label)`` (see BatchNorm's ``LayerSpec``): groups of
        several channels are a feature (``grouped``: InstanceNorm has none), as are the parameters a layer lacks
        (``affine_false``, ``scale_false``, ``bias_false``, as LayerNorm's)."""
        features = [("features", name, label) for name, label, needed in (
            ("grouped", f"{self.groups} groups of {self.num_channels // self.groups} channels", not self.instance),
            ("affine_false", "no scale and no bias", not self.affine and not self.bias),
            ("scale_false", "a bias without a scale", not self.affine and self.bias),
            ("bias_false", "a scale without a bias", self.affine and not self.bias)) if needed]
        return [("dtypes", self.dtype, f"dtype {self.dtype}"), ("ranks", self.rank, f"rank {self.rank} input"),
                ("channel_axes", self.channel_axis, f"channel_axis={self.channel_axis}"),
                ("devices", self.device, f"device {self.device}"), *features,
                *(("options", name, f"option {name}") for name, _ in self.options)]
