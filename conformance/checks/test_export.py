"""PyTorch's eval-mode BatchNorm1d/2d/3d exported to ONNX (``conformance.exported``) and run in onnxruntime:
the output against the float64 reference's inference within the derived tolerance, and what the
exporter wrote: one BatchNormalization node whose ``epsilon`` is eps and whose ``momentum`` is ``1 - m``
(ONNX weights the old value), both rounded to float32 as ONNX attributes are. The seeds' CNN too, whose
BatchNorms the exporter folds into the convolutions. Everything is exported in one process, launched once,
and each check runs only when its PyTorch module is selected."""

from __future__ import annotations

import functools
import importlib.util
import zlib

import numpy as np
import pytest

import reference
from conformance.plugin import IMPLEMENTATIONS
from conformance.tolerances import Comparison, Conditioning, compare

pytestmark = pytest.mark.conformance(per_implementation=False)  # whole networks, exported models

EPS, MOMENTUM, C = 2e-3, 0.3, 3
SHAPES = {"BatchNorm1d": (4, C, 5), "BatchNorm2d": (2, C, 4, 5), "BatchNorm3d": (2, C, 2, 3, 4)}


def _job(module: str) -> tuple:
    rng = np.random.default_rng(zlib.adler32(f"export/{module}".encode()))
    state = {"gamma": rng.uniform(0.5, 1.5, C), "beta": rng.uniform(-0.5, 0.5, C),
             "running_mean": rng.uniform(-1, 1, C), "running_var": rng.uniform(0.5, 2, C)}
    state = {k: v.astype(np.float32).astype(np.float64) for k, v in state.items()}  # what a float32 module holds
    x = (rng.uniform(-2, 2, C).reshape(1, C, *[1] * (len(SHAPES[module]) - 2))
         + rng.standard_normal(SHAPES[module])).astype(np.float32)
    return state, EPS, MOMENTUM, x


@functools.cache
def _exported() -> dict[str, dict]:
    from conformance.cnn import weights
    from conformance.exported import run_isolated

    results = run_isolated([*(("export_and_run", _job(m)) for m in SHAPES), ("export_cnn", (weights(),))])
    return dict(zip([*SHAPES, "cnn"], results))


def _attribute(name: str, value: float, expected: float) -> Comparison:
    """An attribute written as float32: it must be ``expected`` rounded to float32."""
    want = float(np.float32(expected))
    return Comparison(name, value == want, 0.0 if value == want else np.inf, abs(value - want), 0.0, 0.0, 0,
                      "" if value == want else f"wrote {value!r}, expected {want!r}")


def _start(request: pytest.FixtureRequest, implementation: str, params: dict) -> None:
    """Record the implementation and parameters; skip unless it is selected and everything is installed."""
    request.node.user_properties += [("implementation", implementation), ("params", {
        "exporter": "torch.onnx.export(dynamo=False)", "runtime": "onnxruntime", "dtype": "float32", **params})]
    if implementation not in {i.name for i in request.config.stash[IMPLEMENTATIONS]}:
        pytest.skip(f"{implementation} is not selected")
    if missing := [m for m in ("torch", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]:
        pytest.skip(f"{missing[0]} is not installed")


def _verify(comparisons: list[Comparison], record_comparison, what: str) -> None:
    for c in comparisons:
        record_comparison(c)
    failed = [c.describe() for c in comparisons if not c.passed]
    assert not failed, f"{what}:\n  " + "\n  ".join(failed)


def _count(name: str, ops: list[str], op: str, expected: int) -> Comparison:
    found = ops.count(op)
    return Comparison(name, found == expected, 0.0 if found == expected else np.inf, abs(found - expected), 0.0, 0.0,
                      0, "" if found == expected else f"{found} {op} nodes, expected {expected}: {ops}")


@pytest.mark.parametrize("module", list(SHAPES), ids=list(SHAPES))
def test_exported_inference(request: pytest.FixtureRequest, record_comparison, module: str) -> None:
    _start(request, f"torch.{module}", {"shape": list(SHAPES[module]), "eps": EPS, "momentum": MOMENTUM})
    state, _, _, x = _job(module)
    got = _exported()[module]
    x64 = x.astype(np.float64)
    y = reference.forward_inference(x64, state["running_mean"], state["running_var"], state["gamma"], state["beta"],
                                    EPS, channel_axis=1)
    cond = Conditioning("float32", 1, state["running_mean"], state["running_var"], EPS, state["gamma"])
    last = lambda a: np.moveaxis(a, 1, -1)  # noqa: E731 - channels last, as the tolerances broadcast
    xhat = (last(x64) - state["running_mean"]) / cond.sigma
    comparisons = [compare("y", last(got["y"]), last(y), cond.y(last(y), xhat)),
                   _attribute("epsilon", got["attributes"]["epsilon"], EPS),
                   _attribute("momentum", got["attributes"]["momentum"], 1 - MOMENTUM),
                   _count("batchnorm_nodes", got["ops"], "BatchNormalization", 1)]
    _verify(comparisons, record_comparison, f"torch.{module} exported to ONNX (opset {got['opset']})")


def test_exported_cnn(request: pytest.FixtureRequest, record_comparison) -> None:
    """The seeds' CNN in eval mode: each BatchNorm is folded into the convolution before it (no
    BatchNormalization node, two Conv nodes), and the logits match PyTorch's float64 logits within the
    example's derived logits tolerance (``port_cnn.tolerance``)."""
    from conformance import cnn as port_cnn

    _start(request, "torch.BatchNorm2d", {"network": "seed 002 CNN", "batch": port_cnn.N})
    got = _exported()["cnn"]
    tolerance = port_cnn.tolerance("torch", "logits", got["expected"], port_cnn.weights())
    comparisons = [compare("logits", got["logits"], got["expected"], tolerance),
                   _count("batchnorm_nodes", got["ops"], "BatchNormalization", 0),
                   _count("conv_nodes", got["ops"], "Conv", 2)]
    _verify(comparisons, record_comparison, "the seeds' CNN exported to ONNX")
