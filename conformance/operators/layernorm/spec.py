"""What an adapter builds a LayerNorm from: :class:`LayerNormSpec`, in framework-neutral terms."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerNormSpec"]


@dataclass(frozen=True)
class LayerNormSpec:
    """What to build: the normalized axes' shape (the trailing ``len(normalized_shape)`` axes of a rank
    ``rank`` input; gamma and beta have this shape), ``eps``, whether there is a scale (``affine``: PyTorch's
    ``elementwise_affine``, Keras' ``scale``, Flax's ``use_scale``) and an offset (``bias``: Keras'
    ``center``, Flax's ``use_bias``), the dtype and framework ``options`` (as BatchNorm's ``LayerSpec``)."""

    normalized_shape: tuple[int, ...]
    rank: int
    eps: float
    affine: bool = True
    bias: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    options: tuple[tuple[str, object], ...] = ()

    @property
    def begin_axis(self) -> int:
        """The first normalized axis, counted from the end (-1: the last axis only)."""
        return -len(self.normalized_shape)

    @property
    def axes(self) -> tuple[int, ...]:
        """The normalized axes, non-negative (Keras' ``axis``, Flax's ``reduction_axes``)."""
        return tuple(range(self.rank + self.begin_axis, self.rank))

    def requirements(self) -> list[tuple[str, object, str]]:
        """What building it needs, as ``(capability, value, label)`` (see BatchNorm's ``LayerSpec``): the
        parameters a layer lacks are features (``scale_false``: no scale, an offset; ``affine_false``:
        neither; ``bias_false``: a scale without an offset), as is normalizing over several axes."""
        features = [("features", name, label) for name, label, needed in (
            ("affine_false", "no scale and no bias", not self.affine and not self.bias),
            ("scale_false", "a bias without a scale", not self.affine and self.bias),
            ("bias_false", "a scale without a bias", self.affine and not self.bias),
            ("multi_axis", f"{len(self.normalized_shape)} normalized axes", len(self.normalized_shape) > 1)) if needed]
        return [("dtypes", self.dtype, f"dtype {self.dtype}"), ("ranks", self.rank, f"rank {self.rank} input"),
                ("devices", self.device, f"device {self.device}"), *features,
                *(("options", name, f"option {name}") for name, _ in self.options)]
