"""The spine is operator-neutral: an operator declared outside the package (``tests/toy_operator.py``:
``y = gamma * x + beta`` with a convention record of its own kind) runs through the generic checks, the
mirror, the deviation registry and the report without any of them knowing it. Its correct implementation
passes every check its grids reach; one that forgets beta fails the output checks; checks it has no grid for
are not generated for it; BatchNorm's transforms (porting) leave it alone."""

import json

pytest_plugins = ["pytester"]

CHECKS = ("test_forward.py", "test_gradients.py", "test_second_order.py", "test_contract.py", "test_conventions.py",
          "test_running_stats.py", "test_porting.py")


def test_a_correct_implementation_of_another_operator_passes(run_checks, tmp_path) -> None:
    result = run_checks(*CHECKS, "--impl", "toy_operator:CORRECT", "--report", str(tmp_path),
                        outcomes={"passed": 1 + 4 * (2 + 2 + 1 + 2 + 2)})
    doc = json.loads((tmp_path / "conformance.json").read_text())
    assert {r["implementation"] for r in doc["results"]} == {"scale.numpy"}  # no ported pairs, no running stats
    assert {i["operator"] for i in doc["implementations"]} == {"scale"}
    assert doc["conventions"] == {"scale_channels_first": {"name": "scale_channels_first", "channel_axis": 1}}
    assert {r["check"] for r in doc["results"]} == {
        "defaults_match_convention", "training_output", "inference_output", "gradients", "hessian_vector_product",
        "output_policy", "caller_arrays_unmodified"}
    assert not result.ret


def test_an_implementation_that_forgets_beta_fails(run_checks) -> None:
    result = run_checks("test_forward.py", "test_gradients.py", "--impl", "toy_operator:BUGGY")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 4 * (2 + 2), outcomes  # every output and every gradient check
    result.stdout.fnmatch_lines(["*scale.forgets_beta disagrees with the reference*", "*y: max |error|*"])
