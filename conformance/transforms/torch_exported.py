"""``torch.export``: a PyTorch module exported to an ``ExportedProgram`` and run as
``ExportedProgram.module()``, in training and in inference, checked against the reference like any
implementation: outputs, gradients, second order and the running statistics its buffer mutations write.

Every call exports the module in the call's mode with its current state (``torch.export.export``, strict or
not; with or without ``run_decompositions()``, which lowers it to the core ATen operators a backend
receives) and runs the unlifted program. A training-mode program returns the updated buffers as mutations,
which the unlifted module applies to its buffers: those are the eager module's own tensors (measured,
torch 2.13.0), and any it holds apart are copied back, so the state the checks compare is what the program
wrote. Gradients are autograd's through the program's ATen operators.

What the program holds is checked through the Mirror's hyperparameter comparison, as for an exported ONNX
graph (:mod:`.exported`): one batch-norm operator (``aten.batch_norm``, or after decomposition
``_native_batch_norm_legit_functional``/``_no_training``) whose ``eps`` and ``momentum`` arguments are the
module's, exactly (a Python float; a cumulative average, ``momentum=None``, is written as its factor: not
judged).
"""

from __future__ import annotations

from ..adapters.base import Derivation, LayerSpec
from ..adapters.torch_nn import TorchImplementation, TorchLayer
from ..core.case import Case
from ..core.comparison import Expected
from .exported import ExportedReference

__all__ = ["ProgramLayer", "TorchExported"]


def _held(program) -> dict[str, object]:
    """The program's batch-norm operators, counted, and the first one's ``eps`` and ``momentum``."""
    nodes = [node for node in program.graph.nodes if node.op == "call_function"
             and "batch_norm" in getattr(getattr(node.target, "_schema", None), "name", "")]
    held: dict[str, object] = {"batchnorm_nodes": len(nodes)}
    if nodes:
        node = nodes[0]
        arguments = dict(zip((a.name for a in node.target._schema.arguments), node.args)) | dict(node.kwargs)
        held |= {"eps": arguments.get("eps"), "momentum": arguments.get("momentum")}
    return held


class ProgramLayer(TorchLayer):
    """The eager module's layer, each call through the module exported in the call's mode."""

    def __init__(self, spec: LayerSpec, module: str, strict: bool, decompose: bool) -> None:
        super().__init__(spec, module, None, "cpu")
        self.strict, self.decompose, self.held = strict, decompose, {}

    def _call(self, x, training: bool):
        self.module.train(training)
        program = self.torch.export.export(self.module, (x,), strict=self.strict)
        if self.decompose:
            program = program.run_decompositions()
        self.held = _held(program)
        unlifted = program.module()
        y = unlifted(x)
        with self.torch.no_grad():  # buffers the unlifted module holds apart from the eager module's
            for name, buffer in unlifted.named_buffers():
                own = self.module.get_buffer(name)
                if buffer is not own:
                    own.copy_(buffer)
        return y

    def get_state(self):
        """The eager module's state; what the last exported program holds (nothing before the first)."""
        return super().get_state().replace(**({"eps": None, "momentum": None} | self.held))


class TorchExported(TorchImplementation):
    """A ``torch.nn`` BatchNorm module through ``torch.export`` (see the module docstring)."""

    # A family of its own (``--impl torch.export``), which ``tox -e report`` runs and ``tox -e torch`` does not:
    # every call is an export (docs/paths.md has the cost).
    family = "torch.export"

    def __init__(self, module: str, strict: bool, decompose: bool) -> None:
        super().__init__(module)
        self.strict, self.decompose, self.benchmarked = strict, decompose, False
        self.derivation = Derivation("export", (self.name,))
        suffix = "".join(f".{part}" for part, on in (("strict", strict), ("decomposed", decompose)) if on)
        self.name = self.name.replace("torch.", "torch.export.", 1) + suffix

    def environment(self) -> dict[str, str]:
        call = f"torch.export.export(strict={self.strict})" + (".run_decompositions()" if self.decompose else "")
        return {**super().environment(), "exporter": call, "run": "ExportedProgram.module()"}

    def reference(self, case: Case, spec: LayerSpec) -> ExportedReference:
        held = {"batchnorm_nodes": Expected(1.0), "eps": Expected(float(spec.eps))}
        if spec.momentum is not None:
            held["momentum"] = Expected(float(spec.momentum))
        return ExportedReference(super().reference(case, spec), held)

    def deviation_names(self) -> tuple[str, ...]:
        """Its own name only: the eager module's entries do not carry over, since ``torch.export`` traces the
        module on fake tensors, so an input the module rejects after counting it (pytorch/pytorch#1381) is
        rejected by the export before the program runs, leaving the counter alone."""
        return (self.name,)

    def build(self, spec: LayerSpec) -> ProgramLayer:
        return ProgramLayer(spec, self.module, self.strict, self.decompose)


# BatchNorm2d (BatchNorm1d and 3d run the same module code, differing in the input's dimension check), strict
# and not, as exported and decomposed.
IMPLEMENTATIONS = [TorchExported("BatchNorm2d", strict, decompose) for strict in (False, True)
                   for decompose in (False, True)]
