"""The seeds' CNN end to end (``conformance/cnn.py``): weights made in PyTorch's layout, ported into each
framework, one SGD step in training mode, then evaluation. The BatchNorm layers' running statistics (in
each framework's convention), the gradients of their parameters and the inference logits must agree with
PyTorch in float64 within the tolerances the example derives. Each framework runs once, in a process of
its own, and only when an implementation of it was selected (``--impl``)."""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest

from conformance import cnn as port_cnn
from conformance.plugin import IMPLEMENTATIONS
from conformance.tolerances import compare

pytestmark = pytest.mark.conformance(per_implementation=False)  # whole networks, exported models

# The implementation each framework's CNN is reported under (its BatchNorm layer), and what it needs.
FRAMEWORKS = {"torch": ("torch.BatchNorm2d", ("torch",)), "keras.tensorflow": ("keras.tensorflow", ("keras",)),
              "keras.jax": ("keras.jax", ("keras", "jax")), "keras.torch": ("keras.torch", ("keras", "torch")),
              "tf_keras": ("tf_keras.fused", ("tf_keras",)), "flax.nnx": ("flax.nnx", ("flax", "optax"))}


@functools.cache
def _weights() -> dict:
    return port_cnn.weights()


@functools.cache
def _expected() -> dict:
    return port_cnn.run_isolated("torch.float64", _weights())


@pytest.mark.parametrize("framework", list(FRAMEWORKS), ids=list(FRAMEWORKS))
def test_cnn_one_step(request: pytest.FixtureRequest, record_comparison, framework: str) -> None:
    implementation, modules = FRAMEWORKS[framework]
    properties = request.node.user_properties
    properties += [("implementation", implementation), ("params", {"network": "seed 002 CNN", "framework": framework,
                                                                   "dtype": "float32", "batch": port_cnn.N})]
    if implementation not in {i.name for i in request.config.stash[IMPLEMENTATIONS]}:
        pytest.skip(f"{implementation} is not selected")
    if missing := [m for m in (*modules, "torch") if importlib.util.find_spec(m) is None]:
        pytest.skip(f"{framework}: {missing[0]} is not installed")
    w = _weights()
    got = port_cnn.run_isolated(framework, w)
    comparisons = [compare(q, got[q], want, port_cnn.tolerance(framework, q, want, w))
                   for q, want in port_cnn.expected_in(framework, _expected(), w).items()]
    for c in comparisons:
        record_comparison(c)
    failed = [c.describe() for c in comparisons if not c.passed]
    assert not failed, f"the CNN in {framework} disagrees with PyTorch float64:\n  " + "\n  ".join(failed)
    assert np.all(np.isfinite(got["logits"]))
