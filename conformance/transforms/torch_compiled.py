"""PyTorch's normalizations under ``torch.compile`` (TorchInductor on the CPU), checked against the reference
like any implementation: BatchNorm in training and inference, running statistics (``momentum=None``
included) and gradients; LayerNorm, RMSNorm, GroupNorm and InstanceNorm's outputs and gradients.

The layers are the eager adapters' (``torch_nn``, ``layernorm_torch``, ``rmsnorm_torch``, ``groupnorm_torch``);
only their framework call (``_call``) is compiled: one ``torch.compile(dynamic=False)`` of each layer class's
``_call``, shared by every layer of the class, as users call ``torch.compile`` (default backend,
``fullgraph=False``). Dynamo guards on the module's configuration, the training flag, dtype and shape, and
compiles once per combination. The recompile limit (8 per code object by default, after which Dynamo silently
runs eagerly) is raised, and hitting it fails instead, so that every checked call is a compiled one.

BatchNorm's ``momentum=None`` graph-breaks at ``1.0 / float(self.num_batches_tracked)`` (``Tensor.item()``):
the factor is computed eagerly and the normalization is compiled, which is what users get. Second order is
not declared: AOTAutograd's compiled backward is not differentiable again. Dtypes: float32 only
(``COMPILED_DTYPES``, ``COMPILED_RANKS``); BatchNorm's whole grid took 3.7 minutes per variant on two cores,
float32 1.4.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

from ..adapters.base import Derivation, Layer, LayerSpec
from ..adapters.groupnorm_torch import TorchGroupNorm
from ..adapters.layernorm_torch import TorchLayerNorm
from ..adapters.rmsnorm_torch import TorchRMSNorm
from ..adapters.torch_nn import TorchImplementation

# What every compiled implementation (here and ``keras_compiled``) runs: each combination of layer, mode,
# dtype and shape is a compilation of about a second on two CPU cores, so the whole grid would take
# several minutes per implementation. float32 is what compiled models train in; ranks 2 and 4 (another where a
# layer takes neither) cover one and several reduced axes in both channel positions, 3 and 5 add
# more axes to the same reductions.
COMPILED_DTYPES = frozenset({"float32"})
COMPILED_RANKS = frozenset({2, 4})
_RECOMPILE_LIMIT = 4096  # far above the suite's combinations of variant, training flag, dtype and shape


@functools.cache
def _compiled(call: Callable) -> Callable:
    import torch

    torch._dynamo.config.recompile_limit = _RECOMPILE_LIMIT
    torch._dynamo.config.accumulated_recompile_limit = _RECOMPILE_LIMIT
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # never fall back to eager silently
    return torch.compile(call, dynamic=False)


class _Compiled:
    """An eager PyTorch implementation (the class after this one in the bases) with its layers' ``_call``
    compiled."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.benchmarked = False  # compiled per shape: the eager variant is the one the benchmarks time
        self.derivation = Derivation("compile", (self.name,))
        self.name = self.name.replace("torch.", "torch.compile.", 1)
        ranks = self.capabilities.ranks & COMPILED_RANKS or self.capabilities.ranks
        # A rejected batch's effect on the state depends on what Dynamo compiled, or failed to, before in this
        # process (an input that fails tracing the first time runs eagerly the next), so it cannot be judged
        # reproducibly: measured under pytest-xdist, both outcomes occurred for the same check.
        history = "torch.compile's answer depends on what Dynamo compiled earlier in the process"
        self.capabilities = replace(self.capabilities, dtypes=COMPILED_DTYPES, ranks=ranks, double_backward=False,
                                    no_bad_input=history)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "compiled": "torch.compile(dynamic=False), inductor"}

    def build(self, spec: LayerSpec) -> Layer:
        layer = super().build(spec)
        layer._call = functools.partial(_compiled(type(layer)._call), layer)
        return layer


class CompiledTorchImplementation(_Compiled, TorchImplementation):
    pass


class _CompiledFamily(_Compiled):
    """The normalization family's compiled variants: a family of their own (``--impl torch.compile``), which
    ``tox -e report`` runs and the ``torch`` environment does not: their sampled grids cost about 3.5 minutes
    of CI on two cores (docs/measurements.md), BatchNorm's compiled variants' one."""

    family = "torch.compile"


class CompiledTorchLayerNorm(_CompiledFamily, TorchLayerNorm):
    pass


class CompiledTorchRMSNorm(_CompiledFamily, TorchRMSNorm):
    pass


class CompiledTorchGroupNorm(_CompiledFamily, TorchGroupNorm):
    pass


# BatchNorm: the module (momentum=None included), the channels_last kernels and the functional form at every
# rank. BatchNorm1d/3d run the module code of BatchNorm2d and the functional form's kernels, differing only in
# the input's dimension check: they would add about 1.5 minutes each, and no compiled path. The family: each
# module (Inductor decomposes it into its own reductions), GroupNorm in channels-last memory too; the
# functional forms are the modules' calls.
IMPLEMENTATIONS = [
    *(CompiledTorchImplementation(module, memory_format)
      for module, memory_format in (("BatchNorm2d", None), ("BatchNorm2d", "channels_last"), (None, None))),
    CompiledTorchLayerNorm(functional=False),
    CompiledTorchRMSNorm(functional=False),
    CompiledTorchGroupNorm("group", functional=False),
    CompiledTorchGroupNorm("group", functional=False, channels_last=True),
    CompiledTorchGroupNorm("instance", functional=False, dims=2),
]
