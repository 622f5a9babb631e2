"""PyTorch's eval-mode BatchNorm1d/2d/3d exported to ONNX (``conformance.exported``) and run in onnxruntime:
the output against the float64 reference's inference within the derived tolerance, and what the
exporter wrote: one BatchNormalization node whose ``epsilon`` is eps and whose ``momentum`` is ``1 - m``
(ONNX weights the old value), both rounded to float32 as ONNX attributes are. All three modules are
exported in one process, launched once, and only when ``torch.BatchNorm2d`` is selected."""

from __future__ import annotations

import functools
import importlib.util
import zlib

import numpy as np
import pytest

import reference
from conformance.tolerances import Comparison, Conditioning, compare

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
    from conformance.exported import run_isolated

    return dict(zip(SHAPES, run_isolated([_job(m) for m in SHAPES])))


def _attribute(name: str, value: float, expected: float) -> Comparison:
    """An attribute written as float32: it must be ``expected`` rounded to float32."""
    want = float(np.float32(expected))
    return Comparison(name, value == want, 0.0 if value == want else np.inf, abs(value - want), 0.0, 0.0, 0,
                      "" if value == want else f"wrote {value!r}, expected {want!r}")


@pytest.mark.parametrize("module", list(SHAPES))
def test_exported_inference(request: pytest.FixtureRequest, record_comparison, module: str) -> None:
    properties = request.node.user_properties
    properties += [("implementation", f"torch.{module}"),
                   ("params", {"exporter": "torch.onnx.export(dynamo=False)", "runtime": "onnxruntime",
                               "shape": list(SHAPES[module]), "dtype": "float32", "eps": EPS, "momentum": MOMENTUM})]
    if f"torch.{module}" not in {i.name for i in request.config._bn_impls}:
        pytest.skip(f"torch.{module} is not selected")
    if missing := [m for m in ("torch", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]:
        pytest.skip(f"{missing[0]} is not installed")
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
                   _attribute("momentum", got["attributes"]["momentum"], 1 - MOMENTUM)]
    nodes = got["ops"].count("BatchNormalization")
    comparisons.append(Comparison("batchnorm_nodes", nodes == 1, 0.0 if nodes == 1 else np.inf, 0.0, 0.0, 0.0, 0,
                                  "" if nodes == 1 else f"exported nodes: {got['ops']}"))
    for c in comparisons:
        record_comparison(c)
    failed = [c.describe() for c in comparisons if not c.passed]
    assert not failed, f"torch.{module} exported to ONNX (opset {got['opset']}):\n  " + "\n  ".join(failed)
