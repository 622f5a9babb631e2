"""Frozen layers: a BatchNorm frozen the way each framework freezes one for fine-tuning, checked by the generic
checks against what freezing promises (issue 22).

- PyTorch ``module.requires_grad_(False)`` (``torch.BatchNorm*d[.channels_last].frozen``): only the
  parameters stop learning. In a training step the module still normalizes with the batch's statistics and
  still updates its running statistics (PyTorch documents ``requires_grad`` as the parameters' autograd flag,
  not a mode); ``dx`` is the training-mode one; gamma and beta get no gradient (their ``.grad`` stays None).
- The same and ``module.eval()`` (``torch.BatchNorm*d[.channels_last].frozen.eval``), the module kept in eval
  mode while the network around it trains (as fine-tuning code does by calling ``eval()`` on it after every
  ``model.train()``, or by overriding ``train()``): every call is inference (running statistics, no update, no
  batch counted), ``dx`` the inference-mode one, and no parameter gradients.
- Keras ``layer.trainable = False`` (Keras 3: ``keras.<backend>.frozen``; tf-keras:
  ``tf_keras.<fused|nonfused>.frozen``): Keras documents that a non-trainable BatchNormalization runs in
  inference mode whatever ``training`` says, and its variables leave ``trainable_variables``, so a training
  step computes no gradient for them.

The layers are the eager adapters' (``torch_nn.TorchLayer``, ``keras3.KerasLayer``, ``tf_keras.TfKerasLayer``),
frozen after construction as users freeze a layer; gradients are read as a training step gets them:
PyTorch's ``backward()`` into ``.grad``, Keras' gradients of ``trainable_variables``. The reference side
(:class:`FrozenReference`) is BatchNorm's, with the training flag dropped where the path is inference-only
and no parameter gradients.

Which checks apply (``families``): forward, running statistics and gradients, the checks a frozen layer changes;
not second order (the frozen parameters have no gradient to differentiate) nor the contract (the eager layer's).
Keras: float32 at ranks 2 and 4 only: freezing changes which mode runs and which gradients exist, not the
kernels, which ``keras.*`` checks in every dtype and rank (eager JAX costs over a second per check).

Not here: torchvision's ``FrozenBatchNorm2d``. torchvision 0.28.0 is the release for torch 2.13.0 (its
metadata: ``Requires-Dist: torch (==2.13.0)``), but the only wheel the registry has is its CUDA 13.0 build,
whose ``_C.so`` links ``libtorch_cuda.so``, which the CPU build of torch lacks: ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist`` (docs/paths.md, "Frozen layers").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..adapters import torch_nn
from ..adapters.base import Derivation, LayerSpec
from ..adapters.keras3 import KerasImplementation, KerasLayer
from ..adapters.tf_keras import TfKerasImplementation, TfKerasLayer
from ..adapters.torch_nn import TorchImplementation, TorchLayer
from ..core.case import Case
from ..core.comparison import Expected
from ..operators import Delegating, ReferenceSide

__all__ = ["FrozenKeras", "FrozenKerasLayer", "FrozenReference", "FrozenTfKeras", "FrozenTfKerasLayer", "FrozenTorch",
           "FrozenTorchLayer"]

_FAMILIES = frozenset({"forward", "running_stats", "gradients"})


class FrozenReference(Delegating):
    """``side`` (the operator's reference), for a layer whose parameters get no gradient and, where the path
    is ``inference_only``, that runs in inference mode whatever the call's training flag says."""

    def __init__(self, side: ReferenceSide, parameters: tuple[str, ...], inference_only: bool) -> None:
        self.side, self.parameters, self.inference_only = side, parameters, inference_only

    def forward(self, x: np.ndarray, training: bool) -> dict[str, Expected]:
        return self.side.forward(x, training and not self.inference_only)

    def forward_backward(self, x: np.ndarray, dy: np.ndarray, training: bool) -> dict[str, Expected]:
        expected = self.side.forward_backward(x, dy, training and not self.inference_only)
        return expected | {f"d{p}": Expected(None) for p in self.parameters}  # frozen: none, as for affine=False


class _Frozen:
    """What every frozen implementation shares (the eager implementation's class follows this one in the
    bases): its derivation and name, its families, its reference side."""

    families = _FAMILIES
    inference_only: bool
    how: str  # the freezing, in the framework's words, for the report's environment

    def _freeze(self) -> None:
        self.derivation = Derivation("freeze", (self.name,))
        self.benchmarked = False  # the eager layer's kernels, which the eager implementation's benchmarks time
        self.capabilities = replace(self.capabilities, double_backward=False)

    def reference(self, case: Case, spec: LayerSpec) -> FrozenReference:
        return FrozenReference(super().reference(case, spec), self.operator.parameters, self.inference_only)

    def environment(self) -> dict[str, str]:
        """The freezing and what a training call then runs, for the report's "How to freeze"."""
        return {**super().environment(), "frozen": self.how,
                "frozen_training_call": "inference" if self.inference_only else "training"}


class FrozenTorchLayer(TorchLayer):
    """A PyTorch module with ``requires_grad_(False)``, and with ``evaluated`` in eval mode for good."""

    def __init__(self, spec: LayerSpec, module: str, memory_format: str | None, evaluated: bool) -> None:
        super().__init__(spec, module, memory_format, "cpu")
        self.module.requires_grad_(False)
        self.evaluated = evaluated
        if evaluated:
            self.module.eval()

    def _call(self, x, training: bool):
        # Kept in eval: a training step's call is the network's, which does not switch this module's mode.
        return self.module(x) if self.evaluated else super()._call(x, training)

    def _forward_backward(self, xt, dyt, training: bool) -> tuple:
        """As a training step gets the gradients: ``backward()`` into ``.grad`` (None where none arrived)."""
        y = self._call(xt, training)
        y.backward(dyt)
        return y, xt.grad, *(None if p is None else p.grad for p in self.params.values())


class FrozenTorch(_Frozen, TorchImplementation):
    """``torch.nn.<module>`` (in ``memory_format``) frozen by ``requires_grad_(False)``, and with ``evaluated`` by
    ``eval()`` too."""

    def __init__(self, module: str, memory_format: str | None, evaluated: bool) -> None:
        super().__init__(module, memory_format)
        self.evaluated = self.inference_only = evaluated
        self.how = "requires_grad_(False)" + (", eval()" if evaluated else "")
        self._freeze()
        self.name += ".frozen" + (".eval" if evaluated else "")

    def build(self, spec: LayerSpec) -> FrozenTorchLayer:
        return FrozenTorchLayer(spec, self.module, self.memory_format, self.evaluated)


class _NonTrainable:
    """A Keras layer (Keras 3's or tf-keras', the class after this one in the bases) with ``trainable = False``,
    its gradients taken of what a training step differentiates: the parameters still among
    ``trainable_variables`` (TensorFlow's tape would otherwise watch the variables themselves, which stay
    trainable in tf-keras)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.layer.trainable = False

    def _params(self) -> list:
        trainable = {id(v) for v in self.layer.trainable_variables}
        return [p for p in super()._params() if id(p) in trainable]


class FrozenKerasLayer(_NonTrainable, KerasLayer):
    pass


class FrozenTfKerasLayer(_NonTrainable, TfKerasLayer):
    pass


class _FrozenKerasFamily(_Frozen):
    """Keras 3's or tf-keras' implementation frozen by ``trainable = False``: inference-only, checked in float32
    at ranks 2 and 4 (where the layer takes them; see the module docstring)."""

    inference_only = True
    how = "trainable = False"

    def _freeze(self) -> None:
        super()._freeze()
        self.name += ".frozen"
        ranks = self.capabilities.ranks & {2, 4} or self.capabilities.ranks
        self.capabilities = replace(self.capabilities, dtypes=frozenset({"float32"}), ranks=frozenset(ranks))


class FrozenKeras(_FrozenKerasFamily, KerasImplementation):
    """Keras 3's BatchNormalization on ``backend`` with ``trainable = False``."""

    def __init__(self, backend: str, requires: tuple[str, ...]) -> None:
        super().__init__(backend, requires)
        self._freeze()

    def build(self, spec: LayerSpec) -> FrozenKerasLayer:
        self._keras()
        return FrozenKerasLayer(spec)


class FrozenTfKeras(_FrozenKerasFamily, TfKerasImplementation):
    """tf-keras' BatchNormalization, fused or not, with ``trainable = False``."""

    def __init__(self, fused: bool) -> None:
        super().__init__(fused)
        self._freeze()

    def build(self, spec: LayerSpec) -> FrozenTfKerasLayer:
        return FrozenTfKerasLayer(spec, self.fused)


IMPLEMENTATIONS = [
    # Each module, and the channels-last kernels, whose backward computes dx alone when the parameters are frozen.
    *(FrozenTorch(impl.module, impl.memory_format, evaluated) for impl in torch_nn.IMPLEMENTATIONS
      if impl.module and impl.device == "cpu" for evaluated in (False, True)),
    *(FrozenKeras(backend, requires) for backend, requires in
      (("tensorflow", ("tensorflow",)), ("jax", ("jax",)), ("torch", ("torch",)))),
    *(FrozenTfKeras(fused) for fused in (True, False)),
]
