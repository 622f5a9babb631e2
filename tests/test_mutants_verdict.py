"""The mutation self-test's verdict (``mutants.verdict``): it fails a run with a survivor, a failing baseline, a
collection error, an incomplete or a missing report, and passes one where every mutant was killed; the
report shows the kill matrix. It reads the run's report (``conformance.report``)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from conformance.report.results import Result, document, dumps
from conformance.report.write import render
from mutants.verdict import BEGIN, END, main
from reference import CONVENTIONS

STARTED = datetime(2026, 1, 2, tzinfo=timezone.utc)
BUG = {"bug": "eps outside the square root", "origin": "darknet", "link": "https://example.org/darknet/17"}


def record(name: str, convention: str = "torch", seeded_bug: dict | None = None) -> dict:
    return {"name": name, "operator": "batchnorm", "family": name.split(".")[0], "framework": "numpy",
            "convention": convention, "conventions": [convention], "derivation": None, "version": "2",
            "backend": None, "environment": {"version": "2"}, "devices": ["cpu"], "available": True, "missing": "",
            "seeded_bug": seeded_bug, "locator": "mutants.catalogue:IMPLEMENTATIONS"}


def results(name: str, statuses: tuple[str, ...]) -> list[Result]:
    return [Result(f"conformance/checks/test_forward.py::test_training_output[{name}-{i}]", "forward",
                   "training_output", name, status=s, reason="" if s == "pass" else f"{s}: y")
            for i, s in enumerate(statuses)]


def write(tmp_path: Path, baseline=("pass", "pass", "skip"), mutant=("pass", "fail", "skip"),
          collection_errors=None) -> Path:
    doc = document([record("baseline.torch"), record("mutant.eps", seeded_bug=BUG)],
                   {"torch": CONVENTIONS["torch"].as_dict()},
                   results("baseline.torch", baseline) + results("mutant.eps", mutant), STARTED, 1.0, [],
                   collection_errors=collection_errors)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "conformance.json"
    path.write_text(dumps(doc))
    return path


def test_all_mutants_killed_and_a_clean_baseline_pass(tmp_path, capsys):
    assert main([str(write(tmp_path))]) == 0
    assert "1 of 1 mutants killed, passed" in capsys.readouterr().out


SURVIVING = {"all_pass": ("pass", "pass", "skip"), "harness_error": ("pass", "error", "skip"),
             "stale_deviation": ("pass", "unexpected_pass", "skip")}


@pytest.mark.parametrize("mutant", SURVIVING.values(), ids=SURVIVING.keys())
def test_a_survivor_fails_the_run(tmp_path, capsys, mutant):
    assert main([str(write(tmp_path, mutant=mutant))]) == 1
    assert "mutant.eps survived every check (eps outside the square root)" in capsys.readouterr().err


@pytest.mark.parametrize("baseline", [("pass", "fail", "skip"), ("pass", "deviation", "skip"),
                                      ("skip", "skip", "skip")], ids=["fails", "deviates", "passes_nothing"])
def test_a_baseline_that_is_not_clean_fails_the_run(tmp_path, capsys, baseline):
    assert main([str(write(tmp_path, baseline=baseline))]) == 1
    assert "baseline baseline.torch" in capsys.readouterr().err


def test_a_collection_error_fails_the_run(tmp_path, capsys):
    errors = [{"node": "conformance/checks/test_contract.py", "reason": "ImportError"}]
    assert main([str(write(tmp_path, collection_errors=errors))]) == 1
    assert "collection error in conformance/checks/test_contract.py" in capsys.readouterr().err


def test_an_incomplete_run_fails(tmp_path, capsys):
    assert main([str(write(tmp_path, mutant=("fail",)))]) == 1
    assert "mutant.eps: incomplete, 1 results where baseline.torch has 3" in capsys.readouterr().err


def test_a_missing_or_foreign_report_fails(tmp_path):
    assert main([str(tmp_path / "absent.json")]) == 2
    (tmp_path / "old.json").write_text('{"format_version": 1}')
    assert main([str(tmp_path / "old.json")]) == 2


def test_readme_catalogue_and_report_show_the_kill_matrix(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\nold\n{END}\nrest\n")
    path = write(tmp_path)
    assert main([str(path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| mutant.eps | eps outside the square root | darknet: https://example.org/darknet/17 | 1 | killed |" in text
    assert "old" not in text and text.endswith("rest\n")
    from conformance.report.results import load

    render(load(path), tmp_path)
    assert "## Mutation self-test: kill matrix" in (tmp_path / "conformance.md").read_text()


def test_merged_shards_keep_every_collection_error(tmp_path):
    from conformance.report.merge import merge
    from conformance.report.results import load

    errors = [{"node": "conformance/checks/test_contract.py", "reason": "ImportError"}]
    shards = {str(i): load(write(tmp_path / str(i), collection_errors=errors if i else [])) for i in range(2)}
    assert merge(shards)["collection_errors"] == errors


def test_a_ported_pair_counts_for_the_mutant_it_involves(tmp_path, capsys):
    """Porting the reference's state into the mutant fails because of the mutant: the pair (shown in the
    mutant's row) kills the mutant and leaves the baseline clean."""
    def pair(target: str, status: str) -> tuple[dict, Result]:
        name = f"ported.reference.torch-to-{target}"
        record_ = {**record(name), "conventions": ["torch", "torch"],
                   "derivation": {"transform": "port", "bases": ["reference.torch", target], "row": target}}
        return record_, Result(f"conformance/checks/test_porting.py::test_porting[{name}-x]", "porting", "porting",
                               name, status=status, reason="" if status == "pass" else "fail: running_var")

    (into_baseline, clean), (into_mutant, killing) = pair("baseline.torch", "pass"), pair("mutant.eps", "fail")
    doc = document([record("baseline.torch"), record("mutant.eps", seeded_bug=BUG), into_baseline, into_mutant],
                   {"torch": CONVENTIONS["torch"].as_dict()},
                   results("baseline.torch", ("pass",)) + [clean, killing] + results("mutant.eps", ("pass",)),
                   STARTED, 1.0, [])
    path = tmp_path / "conformance.json"
    path.write_text(dumps(doc))
    assert main([str(path)]) == 0
    assert "1 of 1 mutants killed, passed" in capsys.readouterr().out
