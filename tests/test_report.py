"""The conformance report: statuses from pytest's reports, the JSON document against its schema, the
rendered Markdown/HTML/PNG on synthetic results (each status, empty input, a crashed implementation),
determinism, the README matrix, the HTML in headless Chromium, and the pytest plugin end to end."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from conformance.report.__main__ import BEGIN, END, update_readme
from conformance.report.results import SCHEMA, Result, document, dumps, finish_status, load
from conformance.report.write import render
from reference import CONVENTIONS

ROOT = Path(__file__).resolve().parents[1]
STARTED = datetime(2026, 1, 2, tzinfo=timezone.utc)


def comparison(quantity: str = "y", error_ratio: float = 0.01, note: str = "", raised: str = "") -> dict:
    nonfinite = error_ratio == float("inf") and not note
    return {"quantity": quantity, "passed": error_ratio <= 1, "error_ratio": error_ratio,
            "max_abs_error": 0.0 if nonfinite else error_ratio * 1e-6, "max_rel_error": error_ratio * 1e-7,
            "tolerance": 1e-6, "nonfinite_mismatches": int(nonfinite), "note": note, "raised": raised,
            "reference_raised": "", "actual_nonfinite": ["NaN"] if nonfinite else [], "expected_nonfinite": []}


def phase(when: str, outcome: str = "passed", longrepr=None, xfail: str | None = None, *, properties=()):
    report = SimpleNamespace(when=when, outcome=outcome, longrepr=longrepr, duration=0.01,
                             user_properties=list(properties))
    if xfail is not None:
        report.wasxfail = xfail
    return report


def result(impl: str, test: str, call=None, setup=None, params=None, comparisons=(), deviation=None,
           facts=()) -> Result:
    """A Result fed the phases pytest would report; ``call``/``setup`` are (outcome, longrepr, xfail);
    ``facts`` are further user properties (unsupported, roles, crashed)."""
    path, _, name = test.partition("::")  # as the plugin names them at collection
    check = [("check", name.partition("[")[0].removeprefix("test_")),
             ("check_family", Path(path).stem.removeprefix("test_"))]
    props = [*check, ("implementation", impl), ("environment", {"version": "1.0"}),
             ("params", params or {"shape": [4, 3], "dtype": "float32"}), *(("comparison", c) for c in comparisons),
             *facts]
    if deviation:
        props.append(("deviation", deviation))
    r = Result.start(test)
    r.update(phase("setup", *(setup or ("passed",)), properties=props))
    if call is not None:
        r.update(phase("call", *call, properties=props))
    r.update(phase("teardown", properties=props))
    finish_status(r)
    return r


DEVIATION = {"implementation": "fake.b", "check": "*", "when": {"data": "offset"}, "observed": "NaN output",
             "reason": "one-pass variance", "link": "https://example.org/issue/1", "versions": "",
             "registry": "conformance/deviations.toml"}


def crash():
    return SimpleNamespace(reprcrash=SimpleNamespace(
        message="conformance.isolation.WorkerCrashed: fake: the worker process died during 'forward' (exit code -6)"))


SYNTHETIC = {
    "pass": lambda: result("fake.a", "conformance/checks/test_forward.py::test_training_output[fake.a-4x3]",
                           call=("passed",), comparisons=[comparison("y", 0.2), comparison("running_mean", 0.5)]),
    "fail": lambda: result("fake.a", "conformance/checks/test_gradients.py::test_gradients[fake.a-16x3]",
                           call=("failed", SimpleNamespace(reprcrash=SimpleNamespace(message="AssertionError: dx"))),
                           params={"shape": [16, 3], "dtype": "float16"}, comparisons=[comparison("dx", 7.5)]),
    "deviation": lambda: result("fake.b", "conformance/checks/test_forward.py::test_training_output[fake.b-offset]",
                                call=("skipped", None, "NaN output (https://example.org/issue/1)"),
                                comparisons=[comparison("y", float("inf"))], deviation=DEVIATION,
                                params={"shape": [4, 3], "dtype": "float32", "data": "inf"}),
    "unexpected_pass": lambda: result("fake.b", "conformance/checks/test_forward.py::test_inference_output[fake.b-x]",
                                      call=("failed", "[XPASS(strict)] NaN output"), deviation=DEVIATION),
    "skip": lambda: result("fake.a", "conformance/checks/test_forward.py::test_training_output[fake.a-bf16]",
                           setup=("skipped", ("x.py", 1, "Skipped: fake.a does not support dtype bfloat16")),
                           facts=[("unsupported", ["dtype bfloat16"])]),
    "error": lambda: result("fake.a", "conformance/checks/test_forward.py::test_inference_output[fake.a-4x3]",
                            setup=("failed", "fixture 'conformance' raised")),
    "crash": lambda: result("fake.c", "conformance/checks/test_forward.py::test_training_output[fake.c-4x3]",
                            call=("failed", crash()), facts=[("crashed", True)]),
}


def implementations() -> list[dict]:
    common = {"operator": "batchnorm", "family": "fake", "derivation": None, "devices": ["cpu"], "seeded_bug": None,
              "locator": "fake_adapters:IMPLEMENTATIONS"}
    return [
        {**common, "name": n, "framework": "fakelib", "convention": conv, "conventions": [conv], "version": "1.0",
         "backend": None, "environment": {"version": "1.0"}, "available": True, "missing": ""}
        for n, conv in (("fake.a", "torch"), ("fake.b", "keras"), ("fake.c", "keras"))
    ] + [{**common, "name": "fake.gone", "framework": "gonelib", "convention": "onnx", "conventions": ["onnx"],
          "version": None, "backend": None, "environment": {}, "available": False,
          "missing": "fake.gone: gonelib is not installed"}]


CONVENTION_RECORDS = {name: CONVENTIONS[name].as_dict() for name in ("torch", "keras", "onnx")}


def doc_of(results: list[Result], command: tuple[str, ...] = ()) -> dict:
    """The document of ``results`` over :func:`implementations` (an empty list: of nothing at all)."""
    impls = implementations() if results else []
    return document(impls, CONVENTION_RECORDS if results else {}, results, STARTED, 1.0, list(command))


def synthetic_doc(statuses=tuple(SYNTHETIC)) -> dict:
    return doc_of([SYNTHETIC[s]() for s in statuses], ("conformance",))


@pytest.mark.parametrize("status", list(SYNTHETIC))
def test_status_from_pytest_reports(status):
    assert SYNTHETIC[status]().status == status


def test_document_follows_its_schema_and_round_trips(tmp_path):
    doc = synthetic_doc()
    path = tmp_path / "conformance.json"
    path.write_text(dumps(doc))
    jsonschema.validate(json.loads(path.read_text()), json.loads(SCHEMA.read_text()))
    back = load(path)
    deviation = next(r for r in back["results"] if r["status"] == "deviation")
    assert deviation["worst"]["error_ratio"] == float("inf")  # written as "inf", read back as a number
    assert deviation["params"]["data"] == "inf"  # a case named "inf" stays a name
    assert back["counts"] == {s: 1 for s in SYNTHETIC} | {"pass": 1}


def test_load_rejects_another_format_version(tmp_path):
    path = tmp_path / "conformance.json"
    path.write_text(json.dumps({"format": "batchnorm-conformance-report", "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load(path)


def test_markdown_shows_every_status(tmp_path):
    render(load_written(tmp_path, synthetic_doc()), tmp_path)
    md = (tmp_path / "conformance.md").read_text()
    assert "| fake.a | 1 / 0 / 1 | 0 / 0 / 1 |" in md  # forward: pass, error (and a skip); gradients: fail
    assert "| fake.b | 0 / 1 / 1 | - |" in md  # a deviation, and a stale registry entry
    assert "| fake.gone | unavailable | unavailable |" in md
    assert "| fake.c | 0 / 0 / 1 | - |" in md  # the crashed implementation is a failure, not a gap
    assert "unavailable: fake.gone: gonelib is not installed" in md
    assert "https://example.org/issue/1" in md and "one-pass variance" in md
    assert "dx: max abs error 7.5e-06 vs tolerance 1e-06 (error ratio 7.5)" in md
    assert "| fake.a | dtype bfloat16 (1) |" in md
    assert "4 of 6 checks went wrong: 1 crash, 1 error, 1 fail, 1 unexpected_pass." in md


def test_smallest_failing_case_is_shown(tmp_path):
    small, big = ([n, 3] for n in (2, 64))
    results = [
        result("fake.a", f"conformance/checks/test_gradients.py::test_gradients[fake.a-{n}]",
               params={"shape": s, "dtype": "float32"},
               call=("failed", "AssertionError"), comparisons=[comparison("dx", 3.0)])
        for n, s in (("big", big), ("small", small))
    ]
    doc = doc_of(results)
    render(load_written(tmp_path, doc), tmp_path)
    md = (tmp_path / "conformance.md").read_text()
    assert "| fake.a | gradients | fail | no case of this check passes | 2 | shape 2x3, float32" in md


def test_every_distinct_failure_has_its_row_with_its_count(tmp_path):
    # One implementation and check, three symptoms: out of tolerance twice (float32), NaN statistics once
    # (float32), out of tolerance in float16: three rows, none hidden behind the first.
    def failing(n: int, dtype: str, ratio: float, quantity: str = "dx", **params) -> Result:
        return result("fake.a", f"conformance/checks/test_gradients.py::test_gradients[fake.a-{n}]",
                      params={"shape": [n, 3], "dtype": dtype, **params}, call=("failed", "AssertionError"),
                      comparisons=[comparison(quantity, ratio)])
    results = [failing(2, "float32", 3.0, eps=0.1), failing(4, "float32", 5.0, eps=0.1),
               failing(8, "float32", float("inf"), "running_var", eps=0.1), failing(16, "float16", 2.0, eps=1e-5)]
    doc = load_written(tmp_path, doc_of(results))
    render(doc, tmp_path)
    md = (tmp_path / "conformance.md").read_text()
    assert "| fake.a | gradients | fail | no case of this check passes | 1 | shape 16x3, float16" in md
    assert "| fake.a | gradients | fail | no case of this check passes | 2 | shape 2x3, float32" in md
    assert "| fake.a | gradients | fail | no case of this check passes | 1 | shape 8x3, float32" in md
    # NaN is named, never shown as an error of 0 with an infinite ratio.
    assert "running_var: NaN at 1 places where the reference has finite values" in md
    assert "max abs error 0 " not in md


def test_a_failure_says_what_no_passing_case_of_its_check_has(tmp_path):
    # float16 fails at both eps, float32 passes at both: dtype sets the failures apart, eps does not.
    def case(n: int, dtype: str, eps: float, ratio: float) -> Result:
        return result("fake.a", f"conformance/checks/test_gradients.py::test_gradients[fake.a-{n}]",
                      params={"shape": [n, 3], "dtype": dtype, "eps": eps},
                      call=("passed",) if ratio <= 1 else ("failed", "AssertionError"),
                      comparisons=[comparison("dx", ratio)])
    results = [case(2, "float16", 0.1, 3.0), case(4, "float16", 1e-5, 3.0), case(8, "bfloat16", 0.1, 3.0),
               case(16, "float32", 0.1, 0.5), case(32, "float32", 1e-5, 0.5)]
    doc = load_written(tmp_path, doc_of(results))
    render(doc, tmp_path)
    md = (tmp_path / "conformance.md").read_text()
    assert "| fake.a | gradients | fail | dtype=float16 | 2 | shape 2x3, float16" in md
    assert "| fake.a | gradients | fail | dtype=bfloat16 | 1 | shape 8x3, bfloat16" in md
    replay = ("pytest --pyargs 'conformance.checks.test_gradients::test_gradients[fake.a-2]' "
              "--impl fake_adapters:IMPLEMENTATIONS")
    assert replay in md


def test_heatmap_is_split_per_dtype_and_names_nan(tmp_path):
    results = [
        result("fake.a", "conformance/checks/test_forward.py::test_training_output[fake.a-f32]", call=("passed",),
               comparisons=[comparison("y", 0.2)]),
        result("fake.a", "conformance/checks/test_forward.py::test_training_output[fake.a-f16]", call=("failed", "x"),
               params={"shape": [4, 3], "dtype": "float16"}, comparisons=[comparison("y", float("inf"))]),
    ]
    doc = load_written(tmp_path, doc_of(results))
    render(doc, tmp_path)
    md = (tmp_path / "conformance.md").read_text()
    assert "| fake.a | float32 | 0.2 |" in md and "| fake.a | float16 | NaN |" in md


def test_device_is_the_one_the_framework_reports() -> None:
    from conformance.harness.registry import load as load_impls
    from conformance.report.results import implementation_record

    impl = load_impls("examples.seed_adapter:IMPLEMENTATIONS")[0]
    assert implementation_record(impl, {"version": "1", "device": "PYTHON"})["devices"] == ["PYTHON"]
    assert implementation_record(impl, {"version": "1"})["devices"] == [impl.device]


def test_deviations_name_their_registry_and_skips_count_unsupported_features(tmp_path):
    render(load_written(tmp_path, synthetic_doc()), tmp_path)
    md = (tmp_path / "conformance.md").read_text()
    assert "| https://example.org/issue/1 | conformance/deviations.toml | 1 |" in md
    assert "| fake.a | dtype bfloat16 (1) |" in md


def test_empty_input_renders(tmp_path):
    doc = doc_of([])
    render(load_written(tmp_path, doc), tmp_path)
    assert "All 0 checks that ran pass" in (tmp_path / "conformance.md").read_text()
    assert (tmp_path / "heatmap.png").read_bytes().startswith(b"\x89PNG")


def test_rendering_is_deterministic(tmp_path):
    first, second = tmp_path / "1", tmp_path / "2"
    for directory in (first, second):
        render(load_written(directory, synthetic_doc()), directory)
    for name in ("conformance.md", "conformance.html", "heatmap.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_html_is_self_contained(tmp_path):
    render(load_written(tmp_path, synthetic_doc()), tmp_path)
    html = (tmp_path / "conformance.html").read_text()
    for outside in ("<script", "<link", 'src="http', "@import"):
        assert outside not in html
    assert 'src="data:image/png;base64,' in html


def test_html_renders_in_chromium(tmp_path, browser):
    render(load_written(tmp_path, synthetic_doc()), tmp_path)
    page = browser((tmp_path / "conformance.html").as_uri(), wait_for="table#heatmap")
    assert page.console_errors() == []
    assert "Summary matrix" in page.text and "fake.gone" in page.text
    heat_cells = page.driver.execute_script(
        "return [...document.querySelectorAll('#heatmap td[style]')].map(td => getComputedStyle(td).backgroundColor)")
    assert len(set(heat_cells)) >= 2  # cells coloured by error ratio, not one flat colour
    width = page.driver.execute_script("return document.getElementById('heatmap-png').naturalWidth")
    assert width > 100  # the embedded PNG decoded
    assert page.driver.execute_script("return document.querySelectorAll('#matrix tbody tr').length") == 4
    assert page.screenshot.stat().st_size > 10_000


def test_readme_matrix_is_generated(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nstale\n{END}\nrest\n")
    update_readme(readme, load_written(tmp_path, synthetic_doc()))
    text = readme.read_text()
    assert "stale" not in text and "| fake.a | 1 / 0 / 1 |" in text and text.endswith(f"{END}\nrest\n")
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, load_written(tmp_path, synthetic_doc()))


def load_written(directory: Path, doc: dict) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "conformance.json"
    path.write_text(dumps(doc))
    return load(path)


# -- the plugin, end to end ------------------------------------------------------------------------

def run_suite(report: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "conformance", "-p", "no:cacheprovider", "-q", "--report", str(report),
               *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def without_timing(doc: dict) -> dict:
    doc = {k: v for k, v in doc.items() if k not in ("created", "duration_s", "command")}
    doc["environment"] = {k: v for k, v in doc["environment"].items() if k != "resources"}  # measured, run-specific
    doc["results"] = [{k: v for k, v in r.items() if k != "duration_s"} for r in doc["results"]]
    return doc


def test_two_runs_give_the_same_report(tmp_path):
    selection = ("--impl", "reference.torch", "-k", "training_output or random or one_value_per_channel")
    runs = [run_suite(tmp_path / str(i), *selection) for i in (1, 2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stdout[-2000:]
    assert "[report] reference.torch: done" in runs[0].stdout  # progress is shown
    first, second = (load(tmp_path / str(i) / "conformance.json") for i in (1, 2))
    assert first["counts"]["pass"] > 0
    assert without_timing(first) == without_timing(second)
    assert (tmp_path / "1" / "conformance.md").read_text().split("\n", 3)[3] == \
        (tmp_path / "2" / "conformance.md").read_text().split("\n", 3)[3]  # equal below the timestamp line


def test_progress_counts_every_check_once_and_ends_at_the_total(tmp_path):
    # Under xdist, with derived implementations (the ported pairs count in their framework's line).
    run = run_suite(tmp_path, "--impl", "examples.seed_adapter:IMPLEMENTATIONS", "-n", "2")
    progress = re.findall(r"\[report\] (\S+): done: .* \[(\d+)/(\d+) checks, (\d+)%\]", run.stdout)
    doc = load(tmp_path / "conformance.json")
    assert [(done, total) for _, done, total, _ in progress][-1] == (str(len(doc["results"])),) * 2, run.stdout[-3000:]
    assert all(int(done) <= int(total) and int(percent) <= 100 for _, done, total, percent in progress)
    assert {name for name, *_ in progress} == {"seed.numpy"}
    # What was skipped is about the selected implementation only: no built-in one that was not selected, no
    # check that no implementation has a case for (pytest's "got empty parameter set").
    skipped = (tmp_path / "conformance.md").read_text().partition("## Skipped")[2].partition("\n## ")[0]
    rows = [line for line in skipped.splitlines() if line.startswith("| ") and not line.startswith("| implementation")]
    assert rows and all(row.startswith("| seed.numpy |") for row in rows), rows
    assert "empty parameter set" not in run.stdout + skipped


def test_failures_give_nonzero_exit_and_still_a_report(tmp_path):
    run = run_suite(tmp_path, "--impl", "examples.seed_adapter:IMPLEMENTATIONS", "-k", "zero_size_batch")
    assert run.returncode == 1, run.stdout[-2000:]
    doc = load(tmp_path / "conformance.json")
    assert doc["counts"]["fail"] >= 1
    md = (tmp_path / "conformance.md").read_text()
    assert "| seed.numpy | edge_case | fail |" in md and "shape 0x3" in md
    # Each failure's replay command runs that one check again, from the repository root as from anywhere.
    failure = next(line for line in md.splitlines() if line.startswith("| seed.numpy | edge_case | fail |"))
    command = shlex.split(failure.rstrip(" |").rpartition(" | ")[2])
    assert command[:2] == ["pytest", "--pyargs"], command
    again = subprocess.run([sys.executable, "-m", *command, "-p", "no:cacheprovider", "-q"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "1 failed" in again.stdout, again.stdout[-2000:]


def test_a_report_without_matplotlib_is_refused_before_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from conformance.report.plugin import ReportPlugin

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(pytest.UsageError, match=r"--report needs matplotlib .* report extra"):
        ReportPlugin(None, [], lambda node=None: {})
