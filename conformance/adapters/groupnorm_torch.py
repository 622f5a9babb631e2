"""PyTorch GroupNorm and InstanceNorm: ``nn.GroupNorm``, ``F.group_norm``, ``nn.InstanceNorm1d/2d/3d`` and
``F.instance_norm`` (the functional forms: the caller holds weight and bias), on the CPU.

All are channels first; ``torch.GroupNorm.channels_last`` feeds ``nn.GroupNorm`` images and volumes in the
channels-last memory format (the layout a convolution network in that format hands it), which PyTorch's CPU
kernel computes on a path of its own. ``nn.GroupNorm`` is the ``torch_groupnorm`` record (eps 1e-5,
``num_groups`` required, ``affine`` and ``bias`` on); the InstanceNorm modules the ``torch_instancenorm`` record
(``affine=False``; no running statistics, ``track_running_stats=False`` being their default). The functional
forms' weight and bias default to None, so each has a record of its own."""

from __future__ import annotations

import inspect

import numpy as np

from reference import GROUPNORM_CONVENTIONS, INSTANCE, REQUIRED, GroupNormConvention

from ..operators.groupnorm import GROUPNORM, GroupNormSpec
from .base import Capabilities, Implementation
from .layernorm_torch import TorchLayerNormLayer

TORCH_FUNCTIONAL_GROUPNORM = GroupNormConvention(
    "torch_functional_groupnorm", 1e-5, REQUIRED, default_affine=False, default_bias=False,
    frameworks="PyTorch F.group_norm (num_groups required; weight and bias default to None)")
TORCH_FUNCTIONAL_INSTANCENORM = GroupNormConvention(
    "torch_functional_instancenorm", 1e-5, INSTANCE, default_affine=False, default_bias=False,
    frameworks="PyTorch F.instance_norm (weight and bias default to None, use_input_stats=True)")

# InstanceNorm{1,2,3}d by the batched input rank each takes: one rank lower is an *unbatched* input (an
# InstanceNorm1d's rank-2 input is one (C, L) sample, not (N, C)), which the cases' batch axis rules out.
INSTANCE_RANKS = {1: 3, 2: 4, 3: 5}


class TorchGroupNormLayer(TorchLayerNormLayer):
    """The LayerNorm layer's state, gradients and second order over GroupNorm's module or functional call."""

    def __init__(self, spec: GroupNormSpec, kind: str, functional: bool, dims: int, memory_format: str = "") -> None:
        import torch

        self.torch, self.spec, self.kind, self.dtype = torch, spec, kind, getattr(torch, spec.dtype)
        self.memory_format = getattr(torch, memory_format) if memory_format else None
        if functional:
            self.module = None
            new = lambda v: torch.tensor(v, dtype=self.dtype, requires_grad=True)  # noqa: E731
            self.params = {"gamma": new(np.ones(spec.num_channels)) if spec.affine else None,
                           "beta": new(np.zeros(spec.num_channels)) if spec.bias else None}
            return
        if kind == "group":
            module = torch.nn.GroupNorm(spec.groups, spec.num_channels, eps=spec.eps, affine=spec.affine,
                                        bias=spec.bias)
        else:
            cls = getattr(torch.nn, f"InstanceNorm{dims}d")
            # No running statistics: they are not this operator (docs/groupnorm.md).
            module = cls(spec.num_channels, eps=spec.eps, affine=spec.affine, bias=spec.bias,
                         track_running_stats=False)
        self.module = module.to(self.dtype)
        self.params = {"gamma": self.module.weight, "beta": self.module.bias}

    def _input(self, x: np.ndarray, requires_grad: bool = False):
        t = super()._input(x)
        if self.memory_format is not None:
            t = t.contiguous(memory_format=self.memory_format)
        return t.requires_grad_(requires_grad)

    def _call(self, x):
        if self.module is not None:
            return self.module(x)
        F = self.torch.nn.functional
        if self.kind == "group":
            return F.group_norm(x, self.spec.groups, self.params["gamma"], self.params["beta"], self.spec.eps)
        return F.instance_norm(x, None, None, self.params["gamma"], self.params["beta"], use_input_stats=True,
                               eps=self.spec.eps)


class TorchGroupNorm(Implementation):
    family = "torch"
    framework = "torch"
    requires = ("torch",)
    operator = GROUPNORM

    def __init__(self, kind: str, functional: bool, dims: int = 0, channels_last: bool = False) -> None:
        """``kind`` "group" (GroupNorm) or "instance" (InstanceNorm, the module of ``dims`` spatial axes);
        ``channels_last``: input in the channels-last memory format (images and volumes)."""
        self.kind, self.functional, self.dims, self.channels_last = kind, functional, dims, channels_last
        self.benchmarked = not functional  # the functional forms run the modules' kernels
        if kind == "group":
            self.name = ("torch.group_norm" if functional else "torch.GroupNorm") + (
                ".channels_last" if channels_last else "")
            self.convention = TORCH_FUNCTIONAL_GROUPNORM if functional else GROUPNORM_CONVENTIONS["torch_groupnorm"]
            # Any rank from (N, C) up; the modules have no bias without a weight (``bias`` only with ``affine``).
            ranks = {4, 5} if channels_last else {2, 3, 4, 5}
            features = {"grouped", "affine_false", "bias_false"}
        else:
            self.name = "torch.instance_norm" if functional else f"torch.InstanceNorm{dims}d"
            self.convention = (TORCH_FUNCTIONAL_INSTANCENORM if functional
                               else GROUPNORM_CONVENTIONS["torch_instancenorm"])
            # F.instance_norm needs spatial axes (rank 2 is one value per instance, which it rejects).
            ranks = {3, 4, 5} if functional else {INSTANCE_RANKS[dims]}
            features = {"affine_false", "bias_false"}
        if functional:
            features.add("scale_false")
        self.capabilities = Capabilities(ranks=frozenset(ranks), channel_axes=frozenset({1}),
                                         features=frozenset(features), double_backward=True)

    def environment(self) -> dict[str, str]:
        import torch

        return {"version": str(torch.__version__), "threads": str(torch.get_num_threads())}

    def defaults(self) -> dict[str, object]:
        import torch

        F = torch.nn.functional
        if self.functional:
            params = inspect.signature(F.group_norm if self.kind == "group" else F.instance_norm).parameters
            affine, bias = params["weight"].default is not None, params["bias"].default is not None
        else:
            target = torch.nn.GroupNorm if self.kind == "group" else getattr(torch.nn, f"InstanceNorm{self.dims}d")
            params = inspect.signature(target).parameters
            # The modules make a bias only with ``affine``.
            affine = params["affine"].default
            bias = affine and params["bias"].default
        if self.kind == "group":
            groups = params["num_groups"].default
            groups = REQUIRED if groups is inspect.Parameter.empty else groups
        else:
            groups = INSTANCE
        return {"eps": params["eps"].default, "groups": groups, "affine": affine, "bias": bias}

    def build(self, spec: GroupNormSpec) -> TorchGroupNormLayer:
        memory_format = ("channels_last" if spec.rank == 4 else "channels_last_3d") if self.channels_last else ""
        return TorchGroupNormLayer(spec, self.kind, self.functional, self.dims, memory_format)


IMPLEMENTATIONS = [TorchGroupNorm("group", functional=False), TorchGroupNorm("group", functional=True),
                   TorchGroupNorm("group", functional=False, channels_last=True),
                   *(TorchGroupNorm("instance", functional=False, dims=d) for d in (1, 2, 3)),
                   TorchGroupNorm("instance", functional=True)]
