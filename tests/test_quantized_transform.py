"""The quantized BatchNorm transform's grids and tolerance: both sides quantize the input to the same codes,
the output grid holds every output of the input's grid, the tolerance allows one code and rejects two, and
the transform declares only what a quantized module runs."""

from __future__ import annotations

import numpy as np

import reference
from conformance.core.case import Case
from conformance.operators.batchnorm.cases import BatchNormCase
from conformance.transforms import quantized
from conformance.transforms.quantized import CODES, input_grid, output_qparams, qparams, quanta_tolerance, quantize


def test_the_input_grid_holds_zero_and_every_value_within_half_a_quantum() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, 1000)
    scale, zero_point, values = input_grid(x)
    codes = quantize(x, scale, zero_point)
    assert codes.min() >= 0 and codes.max() <= CODES and 0 <= zero_point <= CODES
    assert np.max(np.abs(values - x)) <= scale / 2 * (1 + 1e-12)
    assert (quantize(0.0, scale, zero_point) - zero_point) * scale == 0.0
    assert qparams(0.0, 0.0)[0] > 0  # an all-zero input still has a grid


def test_the_output_grid_holds_every_output_of_the_input_grid() -> None:
    rng = np.random.default_rng(1)
    state = {"gamma": np.array([-1.5, 0.0, 1e3]), "beta": np.array([0.5, -2.0, 1.0]),
             "running_mean": np.array([1.0, -3.0, 0.2]), "running_var": np.array([0.5, 2.0, 1e-4]), "eps": 1e-5}
    scale, zero_point, _ = input_grid(rng.normal(0, 3, 100))
    out_scale, out_zero_point = output_qparams(state, 0.1, reference.TORCH, scale, zero_point)
    inputs = (np.arange(CODES + 1) - zero_point) * scale
    y = (state["gamma"][:, None] * (inputs - state["running_mean"][:, None])
         / np.sqrt(state["running_var"][:, None] + 1e-5) + state["beta"][:, None])
    representable = (-out_zero_point * out_scale, (CODES - out_zero_point) * out_scale)
    assert representable[0] - out_scale / 2 <= y.min() and y.max() <= representable[1] + out_scale / 2


def test_the_tolerance_allows_one_code_and_not_two() -> None:
    scale, y_tolerance = 0.04, np.full(3, 1e-6)
    tolerance = quanta_tolerance(scale, y_tolerance, 0.0)
    assert np.all(scale < tolerance) and np.all(tolerance < 1.01 * scale)


def test_the_transform_declares_what_a_quantized_module_runs() -> None:
    assert {impl.name for impl in quantized.IMPLEMENTATIONS} == {"torch.quantized.BatchNorm2d",
                                                                 "torch.quantized.BatchNorm3d"}
    for impl in quantized.IMPLEMENTATIONS:
        caps = impl.capabilities
        assert caps.dtypes == {"float32"} and caps.no_gradients and caps.features == {"momentum_none"}
        assert impl.derivation.transform == "quantize" and "gradients" not in impl.families
        assert impl.requires == ("torch",) and impl.deviation_names()[1] == impl.derivation.bases[0]
        edges: list[Case] = [case for _, case in impl.cases("edge_case")]
        assert edges and not any(isinstance(c, BatchNormCase) and c.data in ("nan", "inf") for c in edges)
