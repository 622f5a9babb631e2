"""Sharded runs and their merge: two shards of a real run merge into the unsharded report (run-specific
fields aside), and inconsistent shards are refused naming what disagrees."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.report.merge import RUN_SPECIFIC, MergeError, merge
from conformance.report.results import load

_RUN = ["-m", "pytest", "conformance/checks/test_forward.py", "--impl", "reference", "-k", "training_output", "-q",
        "-p", "no:cacheprovider"]
ROOT = Path(__file__).resolve().parents[1]


def _report(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    subprocess.run([sys.executable, *_RUN, "--report", str(out), *extra], cwd=ROOT, check=True,
                   capture_output=True)
    return out / "conformance.json"


def _comparable(doc: dict) -> dict:
    """``doc`` without what differs between any two runs: timestamps, durations, the command line, what the
    run's processes took."""
    doc = {k: v for k, v in doc.items() if k not in ("created", "duration_s", "command")}
    doc["environment"] = {k: v for k, v in doc["environment"].items() if k != "resources"}  # measured per run
    doc["results"] = [{k: v for k, v in r.items() if k not in RUN_SPECIFIC} for r in doc["results"]]
    return doc


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("shards")
    return _report(tmp, "whole"), _report(tmp, "one", "--shard", "1/2"), _report(tmp, "two", "--shard", "2/2")


def test_two_shards_merge_into_the_whole_run(shards, tmp_path):
    whole, one, two = shards
    first, second = load(one), load(two)
    assert first["results"] and second["results"]  # both shards ran something ...
    assert not {r["test"] for r in first["results"]} & {r["test"] for r in second["results"]}  # ... and apart
    out = tmp_path / "merged"
    completed = subprocess.run([sys.executable, "-m", "conformance.report", "merge", "--out", str(out), str(one),
                                str(two)], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert _comparable(load(out / "conformance.json")) == _comparable(load(whole))
    assert (out / "conformance.md").exists() and (out / "conformance.html").exists()


def test_the_same_check_with_different_results_is_refused(shards):
    _, one, _ = shards
    doc = load(one)
    changed = copy.deepcopy(doc)
    changed["results"][0]["status"] = "fail"
    with pytest.raises(MergeError, match="different results"):
        merge({"a": doc, "b": changed})
    assert merge({"a": doc, "b": copy.deepcopy(doc)})["counts"] == doc["counts"]  # the same result: kept once


def test_different_project_versions_are_refused(shards):
    _, one, two = shards
    doc, other = load(one), load(two)
    other["environment"]["project_version"] = "0.0.0-other"
    with pytest.raises(MergeError, match="project version"):
        merge({"a": doc, "b": other})


def test_an_implementation_with_different_versions_is_refused(shards):
    _, one, two = shards
    doc, other = load(one), load(two)
    record = next(r for r in other["implementations"] if r["version"] is not None)
    record["environment"] = {**record["environment"], "version": "9.9"}
    with pytest.raises(MergeError, match=record["name"]):
        merge({"a": doc, "b": other})


def test_a_bad_shard_option_is_a_usage_error():
    completed = subprocess.run([sys.executable, *_RUN, "--shard", "3/2"], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 4 and "I/N" in completed.stderr
