"""PyTorch RMSNorm: ``nn.RMSNorm`` and ``F.rms_norm`` (the caller holds the weight), on the CPU: the
LayerNorm operator's uncentered records (``torch_rmsnorm``; the functional form's weight defaults to None).

Both divide the trailing ``normalized_shape`` axes by their root mean square with eps inside the root; with
``eps=None`` (the default) eps is the input dtype's machine epsilon. Neither has a bias."""

from __future__ import annotations

import inspect

import numpy as np

from reference import DTYPE_EPSILON, LAYERNORM_CONVENTIONS, REQUIRED, LayerNormConvention

from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities, Implementation
from .layernorm_torch import TorchLayerNormLayer

TORCH_FUNCTIONAL_RMSNORM = LayerNormConvention(
    "torch_functional_rmsnorm", DTYPE_EPSILON, default_axes=REQUIRED, default_affine=False, default_bias=False,
    centered=False, frameworks="PyTorch F.rms_norm (weight defaults to None)")


class TorchRMSNormLayer(TorchLayerNormLayer):
    def __init__(self, spec: LayerNormSpec, functional: bool) -> None:
        import torch

        self.torch, self.spec, self.dtype = torch, spec, getattr(torch, spec.dtype)
        shape = list(spec.normalized_shape)
        if functional:
            self.module = None
            weight = torch.tensor(np.ones(shape), dtype=self.dtype, requires_grad=True) if spec.affine else None
        else:
            self.module = torch.nn.RMSNorm(shape, eps=spec.eps, elementwise_affine=spec.affine).to(self.dtype)
            weight = self.module.weight
        self.params = {"gamma": weight, "beta": None}

    def _call(self, x):
        if self.module is not None:
            return self.module(x)
        return self.torch.nn.functional.rms_norm(x, list(self.spec.normalized_shape), self.params["gamma"],
                                                 self.spec.eps)


class TorchRMSNorm(Implementation):
    family = "torch"
    framework = "torch"
    requires = ("torch",)
    operator = LAYERNORM

    def __init__(self, functional: bool) -> None:
        self.functional = functional
        self.benchmarked = not functional  # the functional form runs the module's kernel
        self.name = "torch.rms_norm" if functional else "torch.RMSNorm"
        self.convention = TORCH_FUNCTIONAL_RMSNORM if functional else LAYERNORM_CONVENTIONS["torch_rmsnorm"]
        # No bias: a scale or nothing (``bias_false``, ``affine_false``).
        self.capabilities = Capabilities(ranks=frozenset({1, 2, 3, 4, 5}),
                                         features=frozenset({"affine_false", "bias_false", "multi_axis"}),
                                         double_backward=True)

    def environment(self) -> dict[str, str]:
        import torch

        return {"version": str(torch.__version__), "threads": str(torch.get_num_threads())}

    def defaults(self) -> dict[str, object]:
        import torch

        target = torch.nn.functional.rms_norm if self.functional else torch.nn.RMSNorm
        params = inspect.signature(target).parameters
        eps = params["eps"].default
        affine = params["weight"].default is not None if self.functional else params["elementwise_affine"].default
        return {"eps": DTYPE_EPSILON if eps is None else eps,
                "axes": REQUIRED if params["normalized_shape"].default is inspect.Parameter.empty else None,
                "affine": affine, "bias": False}

    def build(self, spec: LayerNormSpec) -> TorchRMSNormLayer:
        return TorchRMSNormLayer(spec, self.functional)


IMPLEMENTATIONS = [TorchRMSNorm(functional=False), TorchRMSNorm(functional=True)]
