"""PyTorch: ``nn.BatchNorm1d/2d/3d`` (contiguous and channels_last) and ``F.batch_norm``, on CPU and CUDA."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from reference import TORCH, Convention

from .base import Capabilities, Implementation, LayerSpec, State, framework_input

_MODULE_RANKS = {"BatchNorm1d": {2, 3}, "BatchNorm2d": {4}, "BatchNorm3d": {5}}
# The functional form's own record: the modules' rules, but the caller holds the running statistics and
# nothing counts batches, so there is no cumulative average either (F.batch_norm rejects momentum=None).
TORCH_FUNCTIONAL = Convention("torch_functional", "new", 0.1, 1e-5, 1, running_var_ddof=1,
                              frameworks="PyTorch F.batch_norm (the caller holds the buffers; no batch counter)")
_ALL_FEATURES = frozenset({"affine_false", "no_running_stats", "momentum_none"})


class TorchLayer:
    """A module (``nn.BatchNorm*d``) or the functional form with buffers held here."""

    def __init__(self, spec: LayerSpec, module: str | None, memory_format: str | None, device: str) -> None:
        import torch

        self.torch = torch
        self.dtype = getattr(torch, spec.dtype)
        self.device = torch.device(device)
        self.memory_format = getattr(torch, memory_format) if memory_format else None
        c = spec.num_features
        if module is not None:
            self.module = getattr(torch.nn, module)(
                c, eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
                track_running_stats=spec.track_running_stats,
            ).to(device=self.device, dtype=self.dtype)
            self.params = {"gamma": self.module.weight, "beta": self.module.bias}
            self.buffers = {"running_mean": self.module.running_mean, "running_var": self.module.running_var}
        else:
            self.module = None
            self.momentum = spec.momentum
            self.eps = spec.eps
            self.params = {
                "gamma": self._new(np.ones(c), requires_grad=True) if spec.affine else None,
                "beta": self._new(np.zeros(c), requires_grad=True) if spec.affine else None,
            }
            self.buffers = {
                "running_mean": self._new(np.zeros(c)) if spec.track_running_stats else None,
                "running_var": self._new(np.ones(c)) if spec.track_running_stats else None,
            }

    def _new(self, values: np.ndarray, requires_grad: bool = False):
        t = self.torch.tensor(values, dtype=self.dtype, device=self.device)
        return t.requires_grad_(requires_grad)

    def _input(self, x: np.ndarray, requires_grad: bool = False):
        x, cast = framework_input(x)
        t = self.torch.from_numpy(x).to(device=self.device, **({"dtype": self.dtype} if cast else {}))
        if self.memory_format is not None:
            t = t.contiguous(memory_format=self.memory_format)
        return t.requires_grad_(requires_grad)

    def _call(self, x, training: bool):
        if self.module is not None:
            self.module.train(training)
            return self.module(x)
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        # As the modules do: without running statistics, batch statistics are used in eval too.
        return self.torch.nn.functional.batch_norm(
            x, rm, rv, self.params["gamma"], self.params["beta"], training or rm is None, self.momentum, self.eps
        )

    def set_state(self, state: State) -> None:
        tracked = getattr(self.module, "num_batches_tracked", None)
        with self.torch.no_grad():
            for name, t in {**self.params, **self.buffers}.items():
                value = getattr(state, name)
                if value is not None:
                    t.copy_(self.torch.from_numpy(np.asarray(value, dtype=np.float64)))
            if tracked is not None and state.num_batches_tracked is not None:
                tracked.fill_(state.num_batches_tracked)

    def get_state(self) -> State:
        held = self.module if self.module is not None else self  # the functional form's are the adapter's
        tracked = getattr(self.module, "num_batches_tracked", None)
        return State(
            **{name: _to_numpy(t) for name, t in {**self.params, **self.buffers}.items()},
            num_batches_tracked=None if tracked is None else int(tracked), eps=held.eps, momentum=held.momentum,
        )

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        with self.torch.no_grad():
            return _output(self._call(self._input(x), training))

    def forward_backward(self, x, dy, training):
        y, *gradients = self._forward_backward(self._input(x, requires_grad=True), self._input(dy), training)
        return _output(y), *map(_to_numpy, gradients)  # y in its own dtype

    def _forward_backward(self, xt, dyt, training: bool) -> tuple:
        """The one backward, on tensors (the protocol's and the benchmarks' runner's): gradients returned,
        not accumulated into ``.grad``."""
        inputs = [xt, *(p for p in self.params.values() if p is not None)]
        y = self._call(xt, training)
        dx, *dparams = self.torch.autograd.grad(y, inputs, dyt)
        return y, dx, *(dparams or (None, None))

    def double_backward(self, x, dy, vx, vgamma, vbeta):
        torch = self.torch
        xt = self._input(x, requires_grad=True)
        gamma, beta = self.params["gamma"], self.params["beta"]
        present = [(p, v) for p, v in zip((gamma, beta), (vgamma, vbeta)) if p is not None]
        inputs = [xt, *(p for p, _ in present)]
        grads = torch.autograd.grad(self._call(xt, True), inputs, self._input(dy), create_graph=True)
        # Reverse over reverse: the direction is the cotangent of the gradients. dbeta = sum(dy) has no
        # graph (nothing it depends on is differentiated), so it contributes nothing and is left out.
        directions = [self._input(vx), *(self._new(v) for _, v in present)]
        pairs = [(g, v) for g, v in zip(grads, directions) if g.requires_grad]
        hvp = torch.autograd.grad([g for g, _ in pairs], inputs, [v for _, v in pairs], allow_unused=True)
        hx, *hparams = (_to_numpy(torch.zeros_like(t) if h is None else h) for h, t in zip(hvp, inputs))  # None: zero
        return hx, *(hparams or (None, None))

    def runner(self, operation: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
        torch = self.torch
        xt, dyt = self._input(x, requires_grad=operation == "forward_backward"), self._input(dy)
        wait = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)  # CUDA runs asynchronously
        if operation == "forward_backward":

            def forward_backward() -> tuple:
                outputs = self._forward_backward(xt, dyt, True)
                wait()
                return outputs

            return forward_backward
        training = operation == "forward_training"

        def forward():
            with torch.no_grad():
                y = self._call(xt, training)
            wait()
            return y

        return forward


def _output(t) -> np.ndarray:
    """``y`` as NumPy in its own dtype (bfloat16 as ml_dtypes.bfloat16, through float32, exactly)."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.float().numpy().astype(ml_dtypes.bfloat16)
    return t.numpy()


def _to_numpy(t) -> np.ndarray | None:
    """float64 NumPy copy of a tensor (through float32 for bfloat16, which NumPy lacks)."""
    if t is None:
        return None
    t = t.detach().cpu()
    return (t.float() if t.element_size() < 4 else t).double().numpy().copy()  # float64 .double() is t itself


class TorchImplementation(Implementation):
    family = "torch"
    framework = "torch"
    requires = ("torch",)
    functional = "batch_norm"  # the functional form (module None): torch.nn.functional's

    def __init__(self, module: str | None, memory_format: str | None = None, device: str = "cpu") -> None:
        self.module, self.memory_format, self.device = module, memory_format, device
        self.convention = TORCH if module else TORCH_FUNCTIONAL
        self.benchmarked = module is not None  # F.batch_norm runs the modules' kernels
        name = f"torch.{module or 'functional'}" + (".channels_last" if memory_format else "")
        self.name = name + ("" if device == "cpu" else f"[{device}]")
        ranks = _MODULE_RANKS.get(module or "", {2, 3, 4, 5})
        if memory_format:
            ranks = {4} if memory_format == "channels_last" else {5}
        # F.batch_norm rejects momentum=None: the cumulative average is a feature of the modules (and records).
        features = _ALL_FEATURES if module else _ALL_FEATURES - {"momentum_none"}
        self.capabilities = Capabilities(
            ranks=frozenset(ranks), channel_axes=frozenset({1}), devices=frozenset({device}), features=features,
            double_backward=True,
        )

    def missing(self) -> str | None:
        reason = super().missing()
        if reason is None and self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return f"{self.name}: no CUDA device is available"
        return reason

    def environment(self) -> dict[str, str]:
        import torch

        env = {"version": str(torch.__version__), "threads": str(torch.get_num_threads()), "device": self.device}
        if self.device == "cuda":
            env["device_name"] = torch.cuda.get_device_name()
        return env

    def defaults(self) -> dict[str, float | int]:
        import torch

        target = getattr(torch.nn, self.module) if self.module else getattr(torch.nn.functional, self.functional)
        params = inspect.signature(target).parameters
        return {"momentum": params["momentum"].default, "eps": params["eps"].default, "channel_axis": 1}

    def build(self, spec: LayerSpec) -> TorchLayer:
        return TorchLayer(spec, self.module, self.memory_format, self.device)


IMPLEMENTATIONS = [
    TorchImplementation(module, memory_format, device)
    for device in ("cpu", "cuda")
    for module, memory_format in (
        ("BatchNorm1d", None),
        ("BatchNorm2d", None),
        ("BatchNorm2d", "channels_last"),
        ("BatchNorm3d", None),
        ("BatchNorm3d", "channels_last_3d"),
        (None, None),
    )
]
