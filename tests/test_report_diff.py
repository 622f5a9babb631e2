"""``python -m conformance.report diff``: every category on synthetic reports (``conformance/report/diff.py``),
the factor rule with its 0 and inf cases, the Markdown, the JSON read back, the exit statuses and the errors on
bad input; end to end, two runs of the suite on the reference diff to nothing, and a copy edited to fail one
check diffs to that check."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import DEVIATION, ROOT, comparison, doc_of, implementations, load_written, result, run_suite

from conformance.report.__main__ import main
from conformance.report.diff import OTHER, WORSE, compare, moved
from conformance.report.results import Result, load

INF = math.inf


def node(case: str, impl: str = "fake.a") -> str:
    return f"conformance/checks/test_forward.py::test_training_output[{impl}-{case}]"


def passed(case: str, ratio: float = 0.1, impl: str = "fake.a") -> Result:
    return result(impl, node(case, impl), call=("passed",), comparisons=[comparison("y", ratio)])


def failed(case: str, ratio: float = 3.0, impl: str = "fake.a") -> Result:
    return result(impl, node(case, impl), call=("failed", "AssertionError: y out of tolerance\nthe traceback"),
                  comparisons=[comparison("y", ratio), comparison("running_mean", 0.5)])


def deviated(case: str, ratio: float = INF, impl: str = "fake.b") -> Result:
    return result(impl, node(case, impl), call=("skipped", None, "NaN output (https://example.org/issue/1)"),
                  comparisons=[comparison("y", ratio)], deviation=DEVIATION)


def stale(case: str, impl: str = "fake.b") -> Result:
    return result(impl, node(case, impl), call=("failed", "[XPASS(strict)] NaN output"), deviation=DEVIATION,
                  comparisons=[comparison("y", 0.1)])


def skipped(case: str, impl: str = "fake.a") -> Result:
    return result(impl, node(case, impl), setup=("skipped", ("x.py", 1, "Skipped: fake.a does not support dtype "
                                                              "bfloat16")), facts=[("unsupported", ["dtype bfloat16"])])


def write(directory: Path, results: list[Result], impls: list[dict] | None = None) -> Path:
    """The report of ``results`` over ``impls`` (default: test_report's fake implementations), written."""
    doc = doc_of(results)
    if impls is not None:
        doc["implementations"] = impls
    load_written(directory, doc)
    return directory / "conformance.json"


def diff(tmp_path: Path, old: list[Result], new: list[Result], factor: float = 2.0) -> dict:
    return compare(load(write(tmp_path / "old", old)), load(write(tmp_path / "new", new)), factor)


def listed(d: dict) -> dict[str, list[str]]:
    """category -> the tests (or implementations) it lists; only the categories with records."""
    return {k: [r.get("test", r["implementation"]) for r in d[k]] for k in (*WORSE, *OTHER) if d[k]}


# One check per category (two categories for some), and an implementation gone and one new.
OLD = [failed("fail2fail"), failed("fail2skip"), passed("pass2fail"), passed("pass2dev"), passed("pass2skip"),
       skipped("skip2skip"), passed("worse", 0.1), passed("vanished"), deviated("dev2pass"), deviated("dev2stale"),
       failed("fixed"), passed("better", 0.4), passed("same", 0.1), deviated("dev2dev"), passed("c", impl="fake.c")]
NEW = [failed("fail2fail"), skipped("fail2skip"), failed("pass2fail"), deviated("pass2dev", impl="fake.a"),
       skipped("pass2skip"), skipped("skip2skip"), passed("worse", 0.5), passed("dev2pass", 0.1, impl="fake.b"),
       stale("dev2stale"), passed("fixed", 0.1), passed("better", 0.1), passed("same", 0.15), deviated("dev2dev"),
       passed("appeared"), passed("new", impl="fake.new")]


def new_implementations() -> list[dict]:
    impls = [i for i in implementations() if i["name"] != "fake.c"]
    a = next(i for i in impls if i["name"] == "fake.a")
    a["version"] = a["environment"]["version"] = "2.0"
    return [*impls, {**a, "name": "fake.new"}]


@pytest.fixture
def reports(tmp_path) -> tuple[Path, Path]:
    return write(tmp_path / "old", OLD), write(tmp_path / "new", NEW, new_implementations())


def test_every_category_lists_its_checks(reports):
    d = compare(*map(load, reports))
    assert listed(d) == {
        "newly_failing": [node("pass2fail"), node("dev2stale", "fake.b")],
        "newly_deviating": [node("pass2dev")],
        "newly_skipped": [node("fail2skip"), node("pass2skip")],
        "error_ratio_worse": [node("pass2dev"), node("worse")],  # 0.1 -> inf, 0.1 -> 0.5
        "vanished_implementations": ["fake.c"],
        "vanished_checks": [node("vanished")],
        "stopped_deviating": [node("dev2pass", "fake.b"), node("dev2stale", "fake.b")],
        "fixed": [node("fixed")],
        "error_ratio_better": [node("better"), node("dev2pass", "fake.b")],  # 0.4 -> 0.1, inf -> 0.1
        "appeared_implementations": ["fake.new"],
        "appeared_checks": [node("appeared")],
    }
    assert d["worse"] is True
    assert d["vanished_implementations"] == [{"implementation": "fake.c", "checks": 1}]
    assert d["appeared_implementations"] == [{"implementation": "fake.new", "checks": 1}]


def test_versions_old_and_new(reports):
    d = compare(*map(load, reports))
    assert d["versions"] == [{"implementation": "fake.a", "old": "1.0", "new": "2.0"},
                             {"implementation": "fake.b", "old": "1.0", "new": "1.0"},
                             {"implementation": "fake.c", "old": "1.0", "new": None},
                             {"implementation": "fake.gone", "old": None, "new": None},
                             {"implementation": "fake.new", "old": None, "new": "2.0"}]
    assert d["old"]["counts"]["pass"] == 8 and d["new"]["counts"]["pass"] == 7


def test_a_newly_failing_check_says_what_went_wrong(tmp_path):
    d = diff(tmp_path, [passed("x"), deviated("dev2crash", impl="fake.c")],
             [failed("x"), result("fake.c", node("dev2crash", "fake.c"), call=("failed", "worker died"),
                                  facts=[("crashed", True)]), failed("absent")])
    by_test = {r["test"]: r for r in d["newly_failing"]}
    fail, crash, absent = by_test[node("x")], by_test[node("dev2crash", "fake.c")], by_test[node("absent")]
    assert (fail["old_status"], fail["status"], fail["reason"]) == ("pass", "fail", "AssertionError: y out of "
                                                                                     "tolerance")
    assert [c["quantity"] for c in fail["failing"]] == ["y"]  # the comparisons that failed, not the passing one
    assert fail["locator"] == "fake_adapters:IMPLEMENTATIONS"
    assert (crash["old_status"], crash["status"], crash["failing"]) == ("deviation", "crash", [])
    assert (absent["old_status"], absent["status"]) == (None, "fail")


def test_a_newly_deviating_check_names_its_registry_entry(tmp_path):
    d = diff(tmp_path, [passed("x", impl="fake.b"), failed("was_failing", impl="fake.b")],
             [deviated("x"), deviated("was_failing")])
    assert [r["test"] for r in d["newly_deviating"]] == [node("x", "fake.b")]  # not the failure now registered
    assert d["newly_deviating"][0]["deviation"] == DEVIATION
    assert [r["test"] for r in d["fixed"]] == [node("was_failing", "fake.b")]


def test_statuses_that_stay_put_are_not_listed(tmp_path):
    same = [passed("p"), failed("f"), deviated("d"), skipped("s"), stale("u")]
    d = compare(load(write(tmp_path / "a", same)), load(write(tmp_path / "b", same)))
    assert listed(d) == {} and d["worse"] is False


@pytest.mark.parametrize(("old", "new", "factor", "change"), [
    (0.1, 0.3, 2, 3.0),  # worse
    (0.1, 0.2, 2, None),  # exactly the factor: not more
    (0.4, 0.1, 2, 0.25),  # better
    (0.1, 0.05, 2, None),  # exactly 1 / factor
    (0.1, 0.3, 4, None),  # within a wider factor
    (0.1, 0.1, 1, None),  # factor 1: any change but none
    (0.0, 0.0, 2, None),
    (0.0, 1e-12, 2, INF),  # from 0, any error is a move
    (1e-12, 0.0, 2, 0.0),
    (0.5, INF, 2, INF),  # became non-finite
    (0.0, INF, 2, INF),
    (INF, 0.5, 2, 0.0),
    (INF, INF, 2, None),  # non-finite both times
    (math.nan, INF, 2, None),
])
def test_factor_rule(old, new, factor, change):
    assert moved(old, new, factor) == (change if change is None else pytest.approx(change))


def test_error_ratios_compared_only_where_pass_or_deviation_both_times(tmp_path):
    old = [failed("fail", 2.0), passed("to_fail", 0.1), passed("up", 0.1), deviated("dev", 1.5)]
    new = [failed("fail", 9.0), failed("to_fail", 5.0), passed("up", 0.3), deviated("dev", 4.5)]
    d = diff(tmp_path, old, new)
    assert [r["test"] for r in d["error_ratio_worse"]] == [node("up"), node("dev", "fake.b")]
    up = d["error_ratio_worse"][0]
    assert up["old"] == {"status": "pass", "quantity": "y", "error_ratio": 0.1, "actual_nonfinite": []}
    assert up["new"]["error_ratio"] == 0.3 and up["change"] == pytest.approx(3.0)
    assert diff(tmp_path, old, new, factor=4)["error_ratio_worse"] == []


def test_markdown_shows_versions_first_then_each_category(reports, capsys):
    assert main(["diff", *map(str, reports)]) == 1
    md = capsys.readouterr().out
    assert md.index("## Versions") < md.index("## Newly failing (2)")
    assert "| fake.a | 1.0 | 2.0 |" in md and "| fake.new | - | 2.0 |" in md
    for heading in ("Newly deviating (1)", "Newly skipped (2)", "Worse error ratios (2)",
                    "Vanished implementations (1)", "Vanished checks (1)", "Stopped deviating (2)", "Fixed (1)",
                    "Better error ratios (2)", "Appeared implementations (1)", "Appeared checks (1)"):
        assert f"\n## {heading}\n" in md, heading
    assert (f"| fake.a | {node('pass2fail')} | pass | fail | y: max abs error 3e-06 vs tolerance 1e-06 (error ratio 3) "
            "| pytest --pyargs") in md
    assert f"| fake.a | {node('worse')} | 0.1 (y, pass) | 0.5 (y, pass) | 5x |" in md
    assert f"| fake.a | {node('pass2dev')} | 0.1 (y, pass) | NaN (y, deviation) | inf |" in md
    assert f"| fake.a | {node('pass2skip')} | pass | dtype bfloat16 |" in md
    assert "Worse: 2 newly failing, 1 newly deviating, 2 newly skipped, 2 worse error ratios, " in md


def test_nothing_worse_exits_0(tmp_path, capsys):
    old = write(tmp_path / "old", [failed("fixed"), passed("better", 0.4)])
    new = write(tmp_path / "new", [passed("fixed"), passed("better", 0.1), passed("appeared")])
    assert main(["diff", str(old), str(new)]) == 0
    md = capsys.readouterr().out
    assert "Nothing got worse." in md and "## Fixed (1)" in md and "## Appeared checks (1)" in md
    assert main(["diff", str(old), str(old)]) == 0
    assert "No check changed." in capsys.readouterr().out


@pytest.mark.parametrize("edit", ["vanished", "factor"])
def test_each_worse_category_alone_exits_1(tmp_path, edit):
    old = write(tmp_path / "old", [passed("x", 0.1), passed("y", 0.1)])
    new = write(tmp_path / "new", [passed("x", 0.1)] if edit == "vanished" else [passed("x", 0.1), passed("y", 0.25)])
    assert main(["diff", str(old), str(new), "--markdown", str(tmp_path / "diff.md")]) == 1
    assert main(["diff", str(old), str(new), "--factor", "3", "--markdown", str(tmp_path / "diff.md")]) == \
        (1 if edit == "vanished" else 0)


NUMBERS = ("error_ratio", "max_abs_error", "max_rel_error", "tolerance", "change")


def restored(value):
    """The diff's JSON with the non-finite numbers read back ("inf" -> inf, as the report writes them)."""
    if isinstance(value, dict):
        return {k: float(v) if k in NUMBERS and isinstance(v, str) else restored(v)
                for k, v in value.items()}
    return [restored(v) for v in value] if isinstance(value, list) else value


def test_json_holds_the_same_facts(reports, tmp_path, capsys):
    out, md = tmp_path / "diff.json", tmp_path / "diff.md"
    assert main(["diff", *map(str, reports), "--json", str(out), "--markdown", str(md)]) == 1
    assert capsys.readouterr().out == ""  # the Markdown went to its file
    assert md.read_text().startswith("# Conformance diff\n")
    raw = json.loads(out.read_text())
    assert raw["format"] == "batchnorm-conformance-diff" and raw["worse"] is True
    assert next(r for r in raw["error_ratio_worse"] if r["test"] == node("pass2dev"))["change"] == "inf"
    assert restored(raw) == compare(*map(load, reports))


def test_bad_input_is_named(tmp_path, capsys):
    good = write(tmp_path / "good", [passed("x")])
    files = {"text.json": "not json", "list.json": "[1, 2]", "other.json": json.dumps({"format": "something else"}),
             "old.json": json.dumps({**json.loads(good.read_text()), "format_version": 5})}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name, problem in [("text.json", "not JSON"), ("list.json", "not a conformance report"),
                          ("other.json", "not a conformance report"), ("old.json", "format_version 5, this code reads"),
                          ("absent.json", "No such file")]:
        assert main(["diff", str(good), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / name) in err and problem in err, err
    assert main(["diff", str(good), str(good), "--factor", "0.5"]) == 2
    assert "factor must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        main(["diff", str(good)])
    assert raised.value.code == 2 and "two reports" in capsys.readouterr().err


# -- end to end: the real suite on the reference ---------------------------------------------------

def run_diff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance.report", "diff", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("runs")
    for name in ("1", "2"):
        run = run_suite(tmp / name, "--impl", "reference.torch", "-k", "training_output")
        assert run.returncode == 0, run.stdout[-2000:]
    return tmp / "1" / "conformance.json", tmp / "2" / "conformance.json"


def test_two_runs_of_the_suite_diff_to_nothing(two_runs, tmp_path):
    out = tmp_path / "diff.json"
    run = run_diff(*map(str, two_runs), "--json", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    d = json.loads(out.read_text())
    assert not any(d[k] for k in (*WORSE, *OTHER)) and d["worse"] is False
    assert d["old"]["counts"]["pass"] > 0
    assert "No check changed." in run.stdout and "| reference.torch |" in run.stdout


def test_a_check_edited_to_fail_is_listed(two_runs, tmp_path):
    old, new = two_runs
    doc = json.loads(new.read_text())
    edited = next(r for r in doc["results"] if r["status"] == "pass" and r["comparisons"])
    edited["status"], edited["reason"] = "fail", "AssertionError: y out of tolerance"
    edited["comparisons"][0] = {**copy.deepcopy(edited["comparisons"][0]), "passed": False, "error_ratio": 3.0}
    doc["counts"]["pass"] -= 1
    doc["counts"]["fail"] += 1
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    out = tmp_path / "diff.json"
    run = run_diff(str(old), str(tmp_path / "edited.json"), "--json", str(out))
    assert run.returncode == 1, run.stdout + run.stderr
    d = json.loads(out.read_text())
    assert [(r["test"], r["old_status"], r["status"]) for r in d["newly_failing"]] == [(edited["test"], "pass",
                                                                                        "fail")]
    assert edited["test"] in run.stdout and "Worse: 1 newly failing." in run.stdout
