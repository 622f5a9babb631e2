"""What an adapter builds a BatchNorm from: :class:`LayerSpec`, in framework-neutral terms."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerSpec"]


@dataclass(frozen=True)
class LayerSpec:
    """What to build, in framework-neutral terms.

    ``momentum`` is the framework's own constructor argument, in its implementation's convention (the
    suite converts a case's ``new_batch_weight`` with :meth:`reference.Convention.momentum_for`: the same
    number for PyTorch, ``1 - w`` for Keras, ONNX and Flax); ``None`` is PyTorch's cumulative average.
    ``channel_axis`` is 1 (channels first) or -1 (channels last). ``options`` are framework options
    that change the numerics, as sorted ``(name, value)`` pairs (e.g. ``("use_fast_variance", False)``);
    only implementations declaring an option in :attr:`Capabilities.options` are built with it. The
    value ``"input"`` of a dtype option stands for the input's dtype (``dtype``).
    """

    num_features: int
    rank: int
    channel_axis: int
    eps: float
    momentum: float | None
    affine: bool = True
    track_running_stats: bool = True
    trainable: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    options: tuple[tuple[str, object], ...] = ()

    def requirements(self) -> list[tuple[str, object, str]]:
        """What building it needs, as ``(capability, value, label)``: the capability set that must hold
        ``value`` (:meth:`Capabilities.unsupported` reads them), and how a skip names it."""
        features = [("features", name, label) for name, label, needed in (
            ("affine_false", "affine=False", not self.affine),
            ("no_running_stats", "track_running_stats=False", not self.track_running_stats),
            ("momentum_none", "momentum=None", self.momentum is None),
            ("trainable_false", "trainable=False", not self.trainable)) if needed]
        return [("dtypes", self.dtype, f"dtype {self.dtype}"), ("ranks", self.rank, f"rank {self.rank} input"),
                ("channel_axes", self.channel_axis, f"channel_axis={self.channel_axis}"),
                ("devices", self.device, f"device {self.device}"), *features,
                *(("options", name, f"option {name}") for name, _ in self.options)]
