"""The exporters' transforms beyond the eval-mode TorchScript export (``transforms/exported.py``,
``transforms/torch_exported.py``): a training-mode graph's running statistics are read from its
BatchNormalization node's outputs, and only where BatchNormalization-15 defines them (``training_mode=1``);
an exported program's batch-norm operator is found with its ``eps`` and ``momentum`` whether decomposed or not;
and each ``torch.export`` variant states what its program must hold."""

from __future__ import annotations

import pytest

from conformance.operators.batchnorm import BatchNormCase
from conformance.transforms import exported, torch_exported


def _batchnorm_model(training_mode: int):
    from onnx import TensorProto, helper

    outputs = ["Y", "mean_out", "var_out"] if training_mode else ["Y"]
    node = helper.make_node("BatchNormalization", ["X", "s", "b", "m", "v"], outputs, training_mode=training_mode)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "s", "b", "m", "v")]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("training_mode", [0, 1])
def test_a_training_graph_s_running_statistics_become_outputs(training_mode: int) -> None:
    pytest.importorskip("onnx")
    model = _batchnorm_model(training_mode)
    names = exported._running_outputs(model)
    assert names == (["mean_out", "var_out"] if training_mode else [])
    assert [o.name for o in model.graph.output] == ["Y", *names]


def _program(training: bool, decompose: bool):
    torch = pytest.importorskip("torch")
    module = torch.nn.BatchNorm2d(3, eps=2e-3, momentum=0.3).train(training)
    program = torch.export.export(module, (torch.randn(4, 3, 2, 2),))
    return program.run_decompositions() if decompose else program


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("decompose", [True, False])
def test_an_exported_program_s_batchnorm_is_found_with_its_hyperparameters(training: bool, decompose: bool) -> None:
    assert torch_exported._held(_program(training, decompose)) == {"batchnorm_nodes": 1, "eps": 2e-3, "momentum": 0.3}


@pytest.mark.parametrize("momentum", [0.3, None])
def test_an_exported_program_must_hold_eps_and_momentum_exactly(momentum) -> None:
    names = {impl.name for impl in torch_exported.IMPLEMENTATIONS}
    assert names == {f"torch.export.BatchNorm2d{strict}{decomposed}" for strict in ("", ".strict")
                     for decomposed in ("", ".decomposed")}
    case = BatchNormCase((2, 3, 4, 5), eps=2e-3, new_batch_weight=momentum)
    for impl in torch_exported.IMPLEMENTATIONS:
        assert impl.family == "torch.export" and impl.deviation_names() == (impl.name,)
        held = impl.reference(case, case.spec(impl.convention)).hyperparameters()
        want = {"batchnorm_nodes": 1.0, "eps": 2e-3} | ({} if momentum is None else {"momentum": 0.3})
        assert {name: e.value for name, e in held.items()} == want and all(e.tolerance == 0 for e in held.values())
