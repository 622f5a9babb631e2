"""PyTorch LayerNorm: ``nn.LayerNorm`` and ``F.layer_norm`` (the caller holds weight and bias), on the CPU.

Both normalize the trailing ``normalized_shape`` axes with eps inside the root; the module's defaults are
the ``torch_layernorm`` record (eps 1e-5, ``elementwise_affine`` and ``bias`` on, ``normalized_shape``
required), the functional form's its own (weight and bias default to None: no affine parameters)."""

from __future__ import annotations

import inspect

import numpy as np

from reference import LAYERNORM_CONVENTIONS, REQUIRED, LayerNormConvention

from ..operators.layernorm import LAYERNORM, LayerNormSpec
from .base import Capabilities, Implementation, State, framework_input
from .torch_nn import _output, _to_numpy

TORCH_FUNCTIONAL_LAYERNORM = LayerNormConvention(
    "torch_functional_layernorm", 1e-5, default_axes=REQUIRED, default_affine=False, default_bias=False,
    frameworks="PyTorch F.layer_norm (weight and bias default to None)")


class TorchLayerNormLayer:
    def __init__(self, spec: LayerNormSpec, functional: bool) -> None:
        import torch

        self.torch, self.spec, self.dtype = torch, spec, getattr(torch, spec.dtype)
        shape = list(spec.normalized_shape)
        if functional:
            self.module = None
            new = lambda v: torch.tensor(v, dtype=self.dtype, requires_grad=True)  # noqa: E731
            self.params = {"gamma": new(np.ones(shape)) if spec.affine else None,
                           "beta": new(np.zeros(shape)) if spec.bias else None}
        else:
            self.module = torch.nn.LayerNorm(shape, eps=spec.eps, elementwise_affine=spec.affine,
                                             bias=spec.bias).to(self.dtype)
            self.params = {"gamma": self.module.weight, "beta": self.module.bias}

    def _input(self, x: np.ndarray, requires_grad: bool = False):
        x, cast = framework_input(x)
        t = self.torch.from_numpy(x)
        return (t.to(self.dtype) if cast else t).requires_grad_(requires_grad)

    def _call(self, x):
        if self.module is not None:
            return self.module(x)
        return self.torch.nn.functional.layer_norm(x, list(self.spec.normalized_shape), self.params["gamma"],
                                                   self.params["beta"], self.spec.eps)

    def set_state(self, state: State) -> None:
        with self.torch.no_grad():
            for name, value in state.assigned().items():
                self.params[name].copy_(self.torch.from_numpy(np.asarray(value, dtype=np.float64)))

    def get_state(self) -> State:
        eps = self.module.eps if self.module is not None else self.spec.eps
        return State(**{name: _to_numpy(t) for name, t in self.params.items()}, eps=eps)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        with self.torch.no_grad():
            return _output(self._call(self._input(x)))

    def _present(self) -> list:
        return [p for p in self.params.values() if p is not None]

    def _gradients(self, grads: list) -> tuple:
        """The parameters' gradients in the protocol's order, None where the layer lacks one."""
        grads = iter(grads)
        return tuple(None if p is None else _to_numpy(next(grads)) for p in self.params.values())

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> tuple:
        xt = self._input(x, requires_grad=True)
        y = self._call(xt)
        dx, *grads = self.torch.autograd.grad(y, [xt, *self._present()], self._input(dy))
        return _output(y), _to_numpy(dx), *self._gradients(grads)

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray):
        """The benchmarks' call on tensors converted once (:class:`~conformance.adapters.base.Benchmarkable`)."""
        torch, backward = self.torch, operation == "forward_backward"
        xt, dyt = self._input(x, requires_grad=backward), self._input(dy)
        inputs = [xt, *self._present()]

        def run():
            if not backward:
                with torch.no_grad():
                    return self._call(xt)
            y = self._call(xt)
            dx, *grads = torch.autograd.grad(y, inputs, dyt)
            grads = iter(grads)
            return y, dx, *(None if p is None else next(grads) for p in self.params.values())

        return run

    def double_backward(self, x, dy, vx, vgamma, vbeta) -> tuple:
        torch = self.torch
        xt = self._input(x, requires_grad=True)
        inputs = [xt, *self._present()]
        grads = torch.autograd.grad(self._call(xt), inputs, self._input(dy), create_graph=True)
        given = {"gamma": vgamma, "beta": vbeta}
        directions = [self._input(vx), *(torch.tensor(given[n], dtype=self.dtype) for n, p in self.params.items()
                                         if p is not None)]
        # Reverse over reverse; dbeta = sum(dy) has no graph, so it contributes nothing.
        pairs = [(g, v) for g, v in zip(grads, directions) if g.requires_grad]
        hvp = torch.autograd.grad([g for g, _ in pairs], inputs, [v for _, v in pairs], allow_unused=True)
        hx, *hparams = (torch.zeros_like(t) if h is None else h for h, t in zip(hvp, inputs))
        return _to_numpy(hx), *self._gradients(hparams)


class TorchLayerNorm(Implementation):
    family = "torch"
    framework = "torch"
    requires = ("torch",)
    operator = LAYERNORM

    def __init__(self, functional: bool) -> None:
        self.functional = functional
        self.name = "torch.layer_norm" if functional else "torch.LayerNorm"
        self.convention = TORCH_FUNCTIONAL_LAYERNORM if functional else LAYERNORM_CONVENTIONS["torch_layernorm"]
        self.benchmarked = not functional  # the functional form runs the module's kernel
        features = {"affine_false", "bias_false", "multi_axis"} | ({"scale_false"} if functional else set())
        self.capabilities = Capabilities(ranks=frozenset({1, 2, 3, 4, 5}), features=frozenset(features),
                                         double_backward=True)

    def environment(self) -> dict[str, str]:
        import torch

        return {"version": str(torch.__version__), "threads": str(torch.get_num_threads())}

    def defaults(self) -> dict[str, object]:
        import torch

        target = torch.nn.functional.layer_norm if self.functional else torch.nn.LayerNorm
        params = inspect.signature(target).parameters
        shape = params["normalized_shape"].default
        if self.functional:
            affine, bias = params["weight"].default is not None, params["bias"].default is not None
        else:
            affine, bias = params["elementwise_affine"].default, params["bias"].default
        return {"eps": params["eps"].default, "axes": REQUIRED if shape is inspect.Parameter.empty else shape,
                "affine": affine, "bias": bias}

    def build(self, spec: LayerNormSpec) -> TorchLayerNormLayer:
        return TorchLayerNormLayer(spec, self.functional)


IMPLEMENTATIONS = [TorchLayerNorm(functional=False), TorchLayerNorm(functional=True)]
