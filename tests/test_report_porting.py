"""The report's porting cheat-sheet and matrix, from synthetic results of ported pairs (a framework
implementation and the reference in a convention, either way): keyed by ordered convention pairs with the
frameworks that use each, verified per dtype, folded into the framework implementation's row, and sound with
one, two or three conventions present."""

from __future__ import annotations

from test_report import CONVENTION_RECORDS, DEVIATION, STARTED, comparison, implementations, result

from conformance.report import summary
from conformance.report.blocks import to_markdown
from conformance.report.content import blocks
from conformance.report.results import document


def pair(framework: str, convention: str, out_of: bool) -> dict:
    """The record of a ported pair: ``framework``'s state out to the reference in ``convention``, or in."""
    own = next(i for i in implementations() if i["name"] == framework)
    source, target = (framework, f"reference.{convention}") if out_of else (f"reference.{convention}", framework)
    conventions = [own["convention"], convention] if out_of else [convention, own["convention"]]
    return {**own, "name": f"ported.{source}-to-{target}", "convention": conventions[0], "conventions": conventions,
            "derivation": {"transform": "port", "bases": [source, target], "row": framework}}


def ported(record: dict, dtype: str, outcome: str = "passed") -> object:
    call = {"passed": ("passed",), "failed": ("failed", "AssertionError: porting"),
            "deviation": ("skipped", None, "NaN output (https://example.org/issue/1)")}[outcome]
    ratio = {"passed": 0.1, "failed": 40.0, "deviation": 9.0}[outcome]
    return result(record["name"], f"conformance/checks/test_porting.py::test_porting[{record['name']}-{dtype}]",
                  call=call, params={"dtype": dtype}, comparisons=[comparison("y", ratio)],
                  deviation=DEVIATION if outcome == "deviation" else None)


def doc(results: list, pairs: list[dict], impls: list[dict] | None = None) -> dict:
    return document([*(impls or implementations()), *pairs], CONVENTION_RECORDS, results, STARTED, 1.0, [])


def test_cheat_sheet_is_verified_per_dtype():
    out, back, other = pair("fake.a", "keras", True), pair("fake.a", "keras", False), pair("fake.b", "torch", False)
    results = [ported(out, "float64"), ported(out, "float32", "failed"), ported(back, "float64", "deviation"),
               ported(other, "float64")]
    rows = summary.porting(doc(results, [out, back, other]))
    by_pair = {(r["from"], r["to"]): r for r in rows}
    assert set(by_pair) == {("torch (fakelib)", "keras (fakelib)"), ("keras (fakelib)", "torch (fakelib)")}
    forward = by_pair["torch (fakelib)", "keras (fakelib)"]
    assert forward["float64"] == "2/2 verified"  # fake.a's state out to keras, keras' state into fake.b
    assert forward["float32"].startswith("0/1 verified; 1 FAILED (worst error ratio 40)")
    assert forward["momentum"].startswith("m -> 1 - m") and "move channels 1 -> -1" in forward["channel axis"]
    backward = by_pair["keras (fakelib)", "torch (fakelib)"]
    assert backward["float64"] == "0/1 verified; 1 registered deviation(s)" and backward["float32"] == "not run"


def test_pairs_count_in_their_framework_row():
    out = pair("fake.a", "keras", True)
    d = doc([ported(out, "float64"), ported(out, "float32", "failed")], [out])
    assert summary.implementations(d) == ["fake.a", "fake.b", "fake.c", "fake.gone"]  # no row of its own
    assert summary.matrix(d)["fake.a"]["porting"] == {"pass": 1, "fail": 1}
    md = to_markdown(blocks(d))
    assert "| ported." not in md.split("## Porting cheat-sheet")[0]  # not in the implementations or matrix


def test_nothing_ported_says_so_instead_of_an_empty_table():
    md = to_markdown(blocks(doc([], [])))
    assert "Nothing was ported" in md and "| from | to |" not in md


def test_three_conventions_give_every_ordered_pair_and_a_matrix():
    pairs = [pair("fake.a", conv, way) for conv in ("keras", "onnx") for way in (True, False)]
    results = [ported(p, "float32") for p in pairs]
    d = doc(results, pairs)
    assert len(summary.porting(d)) == 4
    header, matrix = summary.porting_matrix(d)
    assert header == ["implementation", "to keras", "from keras", "to onnx", "from onnx"]
    assert matrix == [["fake.a", "ok", "ok", "ok", "ok"]]
    assert summary.porting_exceptions(d) == []
    failed = doc([*results[1:], ported(pairs[0], "float32", "failed")], pairs)
    (exception,) = summary.porting_exceptions(failed)
    assert exception["measured"].endswith("error ratio 40") and exception["status"] == "fail"
    assert (exception["source"], exception["target"]) == ("fake.a", "reference.keras")


def test_operators_without_porting_checks_get_their_settings_between_frameworks():
    """GroupNorm has no porting checks: every ordered pair of its run's conventions gets the vocabulary's words;
    BatchNorm's implementations (which have porting checks) get none here."""
    from reference import GROUPNORM_CONVENTIONS

    common = {**implementations()[0], "operator": "groupnorm"}
    impls = [*implementations(), *({**common, "name": f"fake.gn.{c}", "convention": c, "conventions": [c]}
                                   for c in ("torch_groupnorm", "keras_groupnorm", "onnx_groupnorm_opset18"))]
    records = {**CONVENTION_RECORDS, **{c: GROUPNORM_CONVENTIONS[c].as_dict()
                                        for c in ("torch_groupnorm", "keras_groupnorm", "onnx_groupnorm_opset18")}}
    d = document(impls, records, [], STARTED, 1.0, [])
    (rows,) = summary.settings_translation(d).values()
    assert len(rows) == 6 and set(summary.settings_translation(d)) == {"groupnorm"}
    by_pair = {(r["from"].split()[0], r["to"].split()[0]): r for r in rows}
    assert "move the channel axis" in by_pair["torch_groupnorm", "keras_groupnorm"]["channel axis"]
    assert "per group" in by_pair["torch_groupnorm", "onnx_groupnorm_opset18"]["parameters"]
    assert "Settings between frameworks: groupnorm" in to_markdown(blocks(d))


def test_how_to_freeze_lists_each_frozen_implementation_with_its_checks():
    own = next(i for i in implementations() if i["name"] == "fake.a")
    frozen = {**own, "name": "fake.a.frozen", "derivation": {"transform": "freeze", "bases": ["fake.a"], "row": ""},
              "environment": {**own["environment"], "frozen": "freeze()", "frozen_training_call": "inference"}}
    check = "conformance/checks/test_gradients.py::test_gradients[fake.a.frozen-{}]"
    results = [result("fake.a.frozen", check.format(1), call=("passed",), params={"dtype": "float32"}),
               result("fake.a.frozen", check.format(2), call=("failed", "AssertionError: dgamma"),
                      params={"dtype": "float32"})]
    d = doc(results, [], [*implementations(), frozen])
    assert summary.freezing(d) == [{"framework": own["framework"], "implementation": "fake.a.frozen",
                                    "freeze with": "freeze()", "a training call": "inference", "pass": 1,
                                    "deviation": 0, "fail": 1}]
    md = to_markdown(blocks(d))
    assert "### How to freeze" in md and "| fake.a.frozen | freeze() | inference | 1 | 0 | 1 |" in md
    assert "How to freeze" not in to_markdown(blocks(doc([], []))), "no frozen implementation, no section"
