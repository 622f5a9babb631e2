"""The spine with a second operator and the export transform: the generic checks run the CNN operator's grids
on the reference network and pass; they catch the porting bug the CNN example exists for (a classifier
transposed instead of permuted); the Mirror compares what a layer holds of how it was built wherever the
adapter reports any of it (an exported graph's node counts); the export transform states what the graph
must hold in ONNX's terms and declares only what onnxruntime runs; onnxruntime's optimization levels and the
QAT fusion state what their graphs and modules must hold, and a frozen QAT network trains as in inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import conformance.checks
import reference
from conformance.adapters.base import State
from conformance.adapters.cnn_reference import ReferenceNetwork, ReferenceNetworkLayer
from conformance.core.comparison import Expected
from conformance.harness import isolation
from conformance.harness.mirror import Mirror
from conformance.operators.cnn import CNN
from conformance.operators.cnn.cases import NetworkCase
from conformance.operators.cnn.spec import from_channels_last
from conformance.transforms import conv_kinds, exported, folded, ort_optimized, qat

pytest_plugins = ["pytester"]


class _TransposedClassifierLayer(ReferenceNetworkLayer):
    """A channels-last port whose classifier is transposed instead of permuted: it reads the weight back
    as it was given (the inverse of its own mistake), but computes with the scrambled one."""

    def set_state(self, state: State) -> None:
        super().set_state(state)
        if state.fc_weight is not None:
            held = np.asarray(state.fc_weight).T  # (features, classes) in (C, H, W) order, taken as (H, W, C)
            self.network.set("fc_weight", from_channels_last("fc_weight", held, self.network.spec))
            self.given = np.array(state.fc_weight)

    def get_state(self) -> State:
        return super().get_state().replace(fc_weight=self.given)


class _TransposedClassifier(ReferenceNetwork):
    name = "wrong.cnn_transposed_classifier"
    family = "wrong"

    def build(self, spec):
        return _TransposedClassifierLayer(spec, self.convention)


TRANSPOSED_CLASSIFIER = [_TransposedClassifier()]


def test_the_reference_network_passes_every_cnn_check(run_checks) -> None:
    result = run_checks(str(Path(conformance.checks.__file__).parent), "--impl", "reference.cnn", "-q")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 30 and not outcomes.get("failed") and not outcomes.get("errors")


def test_a_transposed_classifier_fails_on_the_logits(run_checks) -> None:
    cases = [case for _, case in CNN.cases("training_output")]
    run_checks("test_forward.py", "-k", "training_output", "--impl", "test_cnn_harness:TRANSPOSED_CLASSIFIER",
               outcomes={"failed": len(cases)}, lines=["E * y: max |error|*"])


class _HoldsNodes(ReferenceNetworkLayer):
    def __init__(self, spec, convention, nodes: int | None) -> None:
        super().__init__(spec, convention)
        self.nodes = nodes

    def get_state(self) -> State:
        return super().get_state().replace(batchnorm_nodes=self.nodes)


class _Folded(ReferenceNetwork):
    """The reference network claiming to be an exported graph with ``nodes`` BatchNormalization nodes."""

    def __init__(self, nodes: int | None) -> None:
        self.nodes = nodes

    def reference(self, case, spec):
        return exported.ExportedReference(super().reference(case, spec), {"batchnorm_nodes": Expected(0.0)})

    def build(self, spec):
        return _HoldsNodes(spec, self.convention, self.nodes)


@pytest.mark.parametrize(("nodes", "compared", "passed"), [(0, 1, True), (2, 1, False), (None, 0, True)])
def test_hyperparameters_are_compared_where_the_layer_reports_any(nodes, compared, passed) -> None:
    mirror = Mirror(_Folded(nodes), NetworkCase((2, 3, 4, 4)))
    mirror.compare_hyperparameters()
    assert len(mirror.comparisons) == compared
    assert not mirror.failures() if passed else [c.quantity for c in mirror.failures()] == ["batchnorm_nodes"]


def _exported(name: str) -> exported.Exported:
    return next(impl for impl in exported.IMPLEMENTATIONS if impl.name == name)


@pytest.mark.parametrize("momentum", [0.3, None])
def test_an_exported_batchnorm_must_hold_eps_and_onnx_momentum_as_float32(momentum) -> None:
    from conformance.operators.batchnorm import BatchNormCase

    impl = _exported("torch.onnx.BatchNorm2d")
    case = BatchNormCase((2, 3, 4, 5), eps=2e-3, new_batch_weight=momentum)
    held = impl.reference(case, case.spec(impl.convention)).hyperparameters()
    want = {"batchnorm_nodes": 1.0, "eps": float(np.float32(2e-3))}
    if momentum is not None:  # ONNX weights the old value: PyTorch's m is written 1 - m
        want["momentum"] = float(np.float32(0.7))
    assert {name: e.value for name, e in held.items()} == want and all(e.tolerance == 0 for e in held.values())


def test_an_exported_cnn_must_fold_its_batchnorms() -> None:
    impl = _exported("torch.onnx.cnn")
    case = CNN.cases("inference_output")[0][1]
    held = impl.reference(case, case.spec(impl.convention)).hyperparameters()
    assert {name: e.value for name, e in held.items()} == {"batchnorm_nodes": 0.0, "conv_nodes": 2.0}


def test_the_export_transform_declares_what_onnxruntime_runs() -> None:
    names = {impl.name for impl in exported.IMPLEMENTATIONS if impl.family == "torch"}
    assert names == {"torch.onnx.BatchNorm1d", "torch.onnx.BatchNorm2d", "torch.onnx.BatchNorm3d", "torch.onnx.cnn"}
    # Every exporter, mode and engine on BatchNorm2d, in a family of their own (tox -e report runs them).
    variants = {f"torch.onnx.BatchNorm2d{exporter}{mode}{engine}" for exporter in ("", ".dynamo")
                for mode in ("", ".training") for engine in ("", ".ReferenceEvaluator")}
    assert {impl.name for impl in exported.IMPLEMENTATIONS if impl.family == "torch.onnx"} == (
        variants - {"torch.onnx.BatchNorm2d"} | {"torch.onnx.cnn.dynamo"})
    for impl in exported.IMPLEMENTATIONS:
        assert impl.derivation.transform == "export" and impl.capabilities.no_gradients
        assert "bfloat16" not in impl.capabilities.dtypes and "gradients" not in impl.families
        assert set(impl.requires) >= {"torch", "onnx"}
        assert ("onnxruntime" in impl.requires) == (impl.engine == "onnxruntime")
        assert ("onnxscript" in impl.requires) == (impl.exporter == "dynamo")
    assert _exported("torch.onnx.cnn").capabilities.dtypes == {"float32"}  # onnxruntime's CPU Conv


def test_the_fold_transform_declares_each_tool_and_what_a_folded_network_holds() -> None:
    assert {impl.name for impl in folded.IMPLEMENTATIONS} == {f"torch.cnn.folded.{tool}" for tool in folded.TOOLS}
    for impl in folded.IMPLEMENTATIONS:
        assert impl.derivation.transform == "fold" and impl.capabilities.no_gradients
        assert "gradients" not in impl.families and impl.deviation_names() == (impl.name, "torch.cnn")
        case = CNN.cases("inference_output")[0][1]
        held = impl.reference(case, case.spec(impl.convention)).hyperparameters()
        assert {name: e.value for name, e in held.items()} == {"batchnorm_nodes": 0.0, "conv_nodes": 2.0}
        half = {c.dtype for _, c in impl.cases("inference_output") if c.state == "normal"} - {"float32", "float64"}
        assert half == {"float16", "bfloat16"} and half <= impl.capabilities.dtypes


def test_the_extreme_state_reaches_every_batchnorm_channel_kind() -> None:
    """Each BatchNorm of the extreme state holds a zero, a negative and a large scale, a zero variance and
    a running mean 1e3 from the batch's."""
    case = next(case for _, case in CNN.cases("inference_output") if case.state == "extreme")
    state = case.initial_state(reference.TORCH)
    for block in (1, 2):
        gamma, mean, var = (state[f"bn{block}_{name}"] for name in ("gamma", "running_mean", "running_var"))
        assert {0.0, -1.5, 1e3} <= set(gamma) and 0.0 in var and 1e3 in mean
    with pytest.raises(ValueError, match="state"):
        NetworkCase((2, 3, 4, 4), state="extrem")


def test_a_transforms_adapted_grid_survives_isolation() -> None:
    """Where the graph's momentum and eps are compared they are no convention's defaults, also through the
    worker proxy the plugin parametrizes with."""
    impl = _exported("torch.onnx.BatchNorm2d")
    grid = isolation.isolate(impl).cases("inference_after_training")
    assert grid == impl.cases("inference_after_training") and grid
    assert all(case.new_batch_weight == 0.3 and case.eps == 2e-3 and name == case.id for name, case in grid)


def test_onnxruntime_levels_state_the_exported_and_the_optimized_graph() -> None:
    """The graph keeps both BatchNormalization nodes (eps and momentum as ONNX holds them); only the unoptimized
    session keeps them after onnxruntime's optimizer."""
    case = CNN.cases("inference_after_training")[0][1]
    assert {impl.name for impl in ort_optimized.IMPLEMENTATIONS} == {f"torch.onnx.cnn.ort.{level}"
                                                                    for level in ort_optimized.LEVELS}
    for impl in ort_optimized.IMPLEMENTATIONS:
        assert impl.capabilities.dtypes == {"float32"} and "gradients" not in impl.families
        assert impl.family == "torch.onnx.cnn.ort"  # not in tox -e torch
        held = {name: e.value for name, e in impl.reference(case, case.spec(impl.convention)).hyperparameters().items()}
        assert held == {"batchnorm_nodes": 2.0, "conv_nodes": 2.0, "eps": float(np.float32(1e-5)),
                        "momentum": float(np.float32(0.9)), "optimized_conv_nodes": 2.0,
                        "optimized_batchnorm_nodes": 2.0 if impl.level == "disable_all" else 0.0}


class _Calls:
    """A reference side that records the mode of each call."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def forward(self, x, training):
        self.modes.append(training)
        return {}

    forward_backward = lambda self, x, dy, training: self.forward(x, training)  # noqa: E731


@pytest.mark.parametrize(("freeze_after", "modes", "frozen"), [(None, [True, True, False, True], 0.0),
                                                               (1, [True, False, False, False], 2.0)])
def test_a_frozen_qat_network_trains_as_in_inference(freeze_after, modes, frozen) -> None:
    """After ``freeze_bn_stats`` a training step normalizes with the running statistics and leaves them: the
    reference side answers it as inference, and expects both fused blocks frozen."""
    side = _Calls()
    ref = qat.QatReference(side, freeze_after)
    assert ref.hyperparameters()["frozen_blocks"].value == 0.0
    ref.forward(None, True)
    ref.forward(None, True)
    ref.forward(None, False)
    ref.forward_backward(None, None, True)
    assert side.modes == modes
    assert {name: e.value for name, e in ref.hyperparameters().items()} == {"qat_blocks": 2.0, "frozen_blocks": frozen}


def test_the_convolution_kinds_are_folded_by_each_tool_in_a_family_of_their_own() -> None:
    names = {impl.name for impl in conv_kinds.IMPLEMENTATIONS}
    assert names == {f"torch.cnn.kinds.{kind}.folded.{tool}" for kind in conv_kinds.KINDS for tool in folded.TOOLS}
    assert {impl.family for impl in conv_kinds.IMPLEMENTATIONS} == {"torch.cnn.kinds"}
    assert all(impl.capabilities.no_gradients and impl.derivation.transform == "fold"
               for impl in conv_kinds.IMPLEMENTATIONS)
