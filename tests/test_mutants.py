"""The mutation self-test's own parts: the catalogue is well formed and the baseline keeps its convention's
state (the verdict on a run: tests/test_mutants_verdict.py)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from conformance.adapters.base import LayerSpec
from mutants.baseline import BatchNorm
from mutants.catalogue import IMPLEMENTATIONS, MUTANTS
from mutants.groupnorm import MUTANTS as GROUPNORM_MUTANTS
from mutants.groupnorm import GroupNorm
from mutants.layernorm import MUTANTS as LAYERNORM_MUTANTS
from mutants.layernorm import LayerNorm

# -- the catalogue -------------------------------------------------------------------------------

def test_catalogue_has_thirty_mutants_with_upstream_links():
    names = [i.name for i in IMPLEMENTATIONS]
    assert len(names) == len(set(names))
    mutants = [i for i in IMPLEMENTATIONS if i.seeded_bug is not None]
    assert len(mutants) >= 30
    assert {i.name for i in IMPLEMENTATIONS if i.seeded_bug is None} == {
        "baseline.torch", "baseline.keras", "baseline.torch_groupnorm", "baseline.torch_instancenorm",
        "baseline.torch_layernorm", "baseline.torch_rmsnorm"}
    for impl in mutants:
        assert impl.seeded_bug.bug and impl.seeded_bug.origin, impl.name
        assert impl.seeded_bug.link.startswith("https://"), impl.name
        baseline = next(b for b in (BatchNorm, GroupNorm, LayerNorm) if issubclass(impl.layer, b))
        assert inspect.getdoc(impl.layer) != inspect.getdoc(baseline), f"{impl.name} tells no story"


@pytest.mark.parametrize("name", list(GROUPNORM_MUTANTS))
def test_each_groupnorm_mutant_overrides_the_baseline(name):
    layer = GROUPNORM_MUTANTS[name][0]
    overridden = [k for k, v in vars(layer).items() if callable(v) or k == "statistic_axes"]
    assert issubclass(layer, GroupNorm) and overridden, f"{name} changes nothing"


@pytest.mark.parametrize("name", list(LAYERNORM_MUTANTS))
def test_each_layernorm_mutant_overrides_the_baseline(name):
    layer = LAYERNORM_MUTANTS[name][0]
    overridden = [k for k, v in vars(layer).items() if callable(v)]
    assert issubclass(layer, LayerNorm) and overridden, f"{name} changes nothing"


@pytest.mark.parametrize("name", list(MUTANTS))
def test_each_mutant_overrides_the_baseline(name):
    layer = MUTANTS[name][0]
    overridden = [k for k, v in vars(layer).items() if callable(v) or k == "statistic_axes"]
    assert issubclass(layer, BatchNorm) and overridden, f"{name} changes nothing"


def test_baseline_computes_low_precision_in_float32_and_returns_the_input_dtype():
    import ml_dtypes

    spec = LayerSpec(num_features=3, rank=2, channel_axis=1, eps=1e-5, momentum=0.1)
    for dtype in (np.float16, ml_dtypes.bfloat16):
        x = (np.arange(12).reshape(4, 3) * 3e3).astype(dtype)  # float16 squares of these overflow
        y = BatchNorm(spec, "torch").forward(x, training=True)
        assert y.dtype == x.dtype and np.isfinite(y.astype(np.float32)).all()


def test_baseline_state_is_its_conventions_fields():
    # The counter is the convention's (PyTorch's num_batches_tracked), kept where running statistics are, and a
    # port may set it; Keras keeps none.
    spec = LayerSpec(num_features=3, rank=2, channel_axis=1, eps=1e-5, momentum=0.1)
    torch_layer, keras_layer = BatchNorm(spec, "torch"), BatchNorm(spec, "keras")
    fields = {"gamma", "beta", "running_mean", "running_var", "eps", "momentum"}
    assert set(torch_layer.get_state()) == fields | {"num_batches_tracked"}
    assert set(keras_layer.get_state()) == fields
    torch_layer.forward(np.arange(12.0).reshape(4, 3), training=True)
    assert torch_layer.get_state().num_batches_tracked == 1
    torch_layer.set_state(torch_layer.get_state().replace(num_batches_tracked=7))
    assert torch_layer.get_state().num_batches_tracked == 7
