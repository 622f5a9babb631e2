"""PyTorch InstanceNorm with running statistics: ``nn.InstanceNorm1d/2d/3d(track_running_stats=True)`` and
``F.instance_norm`` given running statistics (the caller holds them), on the CPU: the ``instancenorm`` operator.

The layer is BatchNorm's eager one (:class:`~.torch_nn.TorchLayer`: the same constructor arguments, state and
calls); only the module, and the functional form's call, differ. ``momentum=None`` is not declared: the modules
take it as 0 (their statistics then never move) and keep no batch count for a cumulative average
(:data:`reference.INSTANCENORM_RUNNING`).
"""

from __future__ import annotations

from reference import INSTANCENORM_RUNNING

from ..operators.instancenorm import INSTANCENORM
from .base import LayerSpec
from .groupnorm_torch import INSTANCE_RANKS
from .torch_nn import TorchImplementation, TorchLayer


class TorchInstanceNormLayer(TorchLayer):
    def _call(self, x, training: bool):
        if self.module is not None:
            return super()._call(x, training)
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        return self.torch.nn.functional.instance_norm(
            x, rm, rv, self.params["gamma"], self.params["beta"], use_input_stats=training or rm is None,
            momentum=self.momentum, eps=self.eps)


class TorchInstanceNorm(TorchImplementation):
    operator = INSTANCENORM
    functional = "instance_norm"

    def __init__(self, dims: int | None) -> None:
        """``dims`` spatial axes (``nn.InstanceNorm{dims}d``), or None: ``F.instance_norm``."""
        super().__init__(f"InstanceNorm{dims}d" if dims else None)
        self.convention = INSTANCENORM_RUNNING
        self.name = f"torch.InstanceNorm{dims}d.running" if dims else "torch.instance_norm.running"
        self.benchmarked = False
        # An InstanceNorm{d}d's input of one rank lower is unbatched; F.instance_norm needs spatial axes.
        ranks = frozenset({INSTANCE_RANKS[dims]} if dims else {3, 4, 5})
        self.capabilities = type(self.capabilities)(
            ranks=ranks, channel_axes=frozenset({1}), features=frozenset({"affine_false", "no_running_stats"}),
            double_backward=True)

    def build(self, spec: LayerSpec) -> TorchInstanceNormLayer:
        return TorchInstanceNormLayer(spec, self.module, None, "cpu")


IMPLEMENTATIONS = [*(TorchInstanceNorm(d) for d in (1, 2, 3)), TorchInstanceNorm(None)]
