"""The report's porting cheat-sheet and matrix, from synthetic porting results: keyed by framework and
convention pairs, verified per dtype, and sound with one, two or three conventions present."""

from __future__ import annotations

from test_report import DEVIATION, STARTED, comparison, implementations, result

from conformance.report import summary
from conformance.report.blocks import to_markdown
from conformance.report.content import blocks
from conformance.report.results import document


def ported(source: str, target: str, dtype: str, outcome: str = "passed") -> object:
    call = {"passed": ("passed",), "failed": ("failed", "AssertionError: porting"),
            "deviation": ("skipped", None, "NaN output (https://example.org/issue/1)")}[outcome]
    ratio = {"passed": 0.1, "failed": 40.0, "deviation": 9.0}[outcome]
    return result(source, f"conformance/checks/test_porting.py::test_porting[{source}-to-{target}-{dtype}]",
                  call=call, params={"source": source, "target": target, "dtype": dtype},
                  comparisons=[comparison("y_ported", ratio)], deviation=DEVIATION if outcome == "deviation" else None)


def doc(results: list, impls: list[dict] | None = None) -> dict:
    return document(impls or implementations(), results, STARTED, 1.0, [])


def test_cheat_sheet_is_verified_per_dtype():
    results = [ported("fake.a", "fake.b", "float64"), ported("fake.a", "fake.b", "float32", "failed"),
               ported("fake.a", "fake.c", "float64"), ported("fake.b", "fake.a", "float64", "deviation")]
    rows = summary.porting(doc(results))
    by_pair = {(r["from"], r["to"]): r for r in rows}
    assert set(by_pair) == {("fakelib (torch)", "fakelib (keras)"), ("fakelib (keras)", "fakelib (torch)")}
    forward = by_pair["fakelib (torch)", "fakelib (keras)"]
    assert forward["float64"] == "2/2 pairs verified"
    assert forward["float32"].startswith("0/1 pairs verified; 1 FAILED (worst error ratio 40)")
    assert forward["momentum"].startswith("m -> 1 - m") and "move channels 1 -> -1" in forward["channel axis"]
    backward = by_pair["fakelib (keras)", "fakelib (torch)"]
    assert backward["float64"] == "0/1 pairs verified; 1 registered deviation(s)" and backward["float32"] == "not run"


def test_one_convention_says_so_instead_of_an_empty_table():
    impls = [i for i in implementations() if i["convention"] == "keras"]
    md = to_markdown(blocks(doc([ported("fake.b", "fake.c", "float32")], impls)))
    assert "No pair of frameworks was ported" in md and "| from | to |" not in md


def test_three_conventions_give_every_ordered_pair_and_a_matrix():
    impls = implementations()
    impls[-1] = {**impls[-1], "name": "fake.d", "available": True, "missing": ""}  # an onnx-convention one
    names = ("fake.a", "fake.b", "fake.d")
    results = [ported(a, b, "float32") for a in names for b in names if a != b]
    d = doc(results, impls)
    assert len(summary.porting(d)) == 6
    header, matrix = summary.porting_matrix(d)
    assert header == list(names) and matrix[0] == ["fake.a", "", "ok", "ok"]
    assert summary.porting_exceptions(d) == []
    failed = doc([*results[1:], ported("fake.a", "fake.b", "float32", "failed")], impls)
    (exception,) = summary.porting_exceptions(failed)
    assert exception["measured"].endswith("error ratio 40") and exception["status"] == "fail"


def test_cnn_section_groups_quantities():
    comparisons = [comparison("bn1.running_var", 0.25), comparison("bn2.dgamma", 0.5), comparison("logits", 0.125)]
    r = result("fake.a", "conformance/checks/test_cnn.py::test_cnn_one_step[torch]", call=("passed",),
               params={"framework": "torch", "dtype": "float32"}, comparisons=comparisons)
    (row,) = summary.cnn(doc([r]))
    assert row == {"framework": "torch", "status": "pass", "BN statistics": "0.25", "BN gradients": "0.5",
                   "logits": "0.125"}
    assert "The seeds' CNN end to end" in to_markdown(blocks(doc([r])))


def test_exported_section_lists_modules_and_folding():
    module = result("fake.a", "conformance/checks/test_export.py::test_exported_inference[BatchNorm2d]",
                    call=("passed",), params={"exporter": "torch.onnx.export(dynamo=False)", "runtime": "onnxruntime"},
                    comparisons=[comparison("y", 0.25), comparison("momentum", 0.0)])
    cnn = result("fake.a", "conformance/checks/test_export.py::test_exported_cnn", call=("passed",),
                 params={"exporter": "x", "runtime": "y"},
                 comparisons=[comparison("logits", 0.5), comparison("batchnorm_nodes", 0.0)])
    rows = summary.exported(doc([module, cnn]))
    assert [(r["model"], r["output error ratio"], r["written as expected"]) for r in rows] == [
        ("fake.a", "0.25", "momentum: yes"), ("seed 002 CNN", "0.5", "batchnorm_nodes: yes")]
