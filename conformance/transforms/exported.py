"""PyTorch's BatchNorm exported to ONNX and run in onnxruntime, in a process of its own.

``torch.onnx.export`` of torch 2.13 has two exporters: the default (``dynamo=True``) needs ``onnxscript``,
which is not installed here; the TorchScript exporter (``dynamo=False``) ships with torch and is what
this uses. :func:`export_and_run` exports an eval-mode ``BatchNorm1d/2d/3d`` holding a given state, runs
the graph in onnxruntime's CPU provider, and returns its output with what the exporter wrote: the node
types and the BatchNormalization attributes (``epsilon``, ``momentum``: ONNX's old-value convention, so
PyTorch's ``m`` is written as ``1 - m``, both as float32 attributes). :func:`run_isolated` runs it in a
fresh interpreter, so that neither torch nor onnxruntime is imported into the test process.
:func:`export_cnn` does the same for the seeds' CNN, where the exporter folds each eval-mode BatchNorm
into the convolution before it (no BatchNormalization node is left).
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys

import numpy as np

_MODULES = {3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}


def export_and_run(state: dict[str, np.ndarray], eps: float, momentum: float, x: np.ndarray) -> dict:
    """``y`` from onnxruntime for an eval-mode module of ``x``'s rank holding ``state``, the exported node
    types (``ops``) and the BatchNormalization attributes (``attributes``)."""
    import onnx
    import onnxruntime
    import torch

    module = getattr(torch.nn, _MODULES[x.ndim])(x.shape[1], eps=eps, momentum=momentum).eval()
    with torch.no_grad():
        for name, attribute in (("gamma", "weight"), ("beta", "bias"), ("running_mean", "running_mean"),
                                ("running_var", "running_var")):
            getattr(module, attribute).copy_(torch.from_numpy(state[name]))
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.from_numpy(x),), buffer, dynamo=False, input_names=["x"])
    model = onnx.load_from_string(buffer.getvalue())
    nodes = [n for n in model.graph.node]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for n in nodes if n.op_type == "BatchNormalization"
                  for a in n.attribute}
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    return {"y": np.asarray(y, np.float64), "ops": [n.op_type for n in nodes], "attributes": attributes,
            "opset": model.opset_import[0].version}


def export_cnn(w: dict) -> dict:
    """The seeds' CNN (``conformance/cnn.py``) in eval mode, exported and run in onnxruntime: its logits,
    PyTorch's float64 logits of the same model, and the exported node types (``ops``)."""
    import onnx
    import onnxruntime
    import torch

    from conformance.cnn import torch_model

    x = w["x"].astype(np.float32)
    model = torch_model(w).eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.from_numpy(x),), buffer, dynamo=False, input_names=["x"])
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": x})
    with torch.no_grad():
        expected = torch_model(w, "float64").eval()(torch.from_numpy(w["x"])).numpy()
    ops = [n.op_type for n in onnx.load_from_string(buffer.getvalue()).graph.node]
    return {"logits": np.asarray(logits, np.float64), "expected": expected, "ops": ops}


def run_isolated(jobs: list[tuple[str, tuple]]) -> list[dict]:
    """Each job, ``(function name, arguments)`` of this module (:func:`export_and_run`, :func:`export_cnn`),
    all in one fresh interpreter (pickled over its pipes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-m", __name__], input=pickle.dumps(jobs), capture_output=True, env=env,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"the export process failed:\n{done.stderr.decode()[-3000:]}")
    return pickle.loads(done.stdout)


if __name__ == "__main__":
    jobs = pickle.loads(sys.stdin.buffer.read())
    results = [{"export_and_run": export_and_run, "export_cnn": export_cnn}[name](*args) for name, args in jobs]
    sys.stdout.buffer.write(pickle.dumps(results))
