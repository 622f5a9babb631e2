"""The regression gate (perf.gate) as a user runs it: how it reads its sides, and that the counted metric
catches 5% more work (perf.injected) and passes unchanged code, whatever the machine is doing. Nothing
here depends on timings: the wall-clock verdict is tested on synthetic samples (test_bench_verdict.py),
and its reading of asv's timing samples on a saved run (test_bench_results.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("asv", reason="asv is not installed (tox -e bench runs these tests)")

from benchmarks import callgrind  # noqa: E402
from perf.gate import MEASURED, parse_side, prepare, requirements  # noqa: E402
from perf.run import ROOT  # noqa: E402

if callgrind.unavailable() and os.environ.get("BN_REQUIRE_VALGRIND"):
    raise RuntimeError(f"BN_REQUIRE_VALGRIND is set, but {callgrind.unavailable()}")
needs_valgrind = pytest.mark.skipif(callgrind.unavailable() is not None, reason=f"{callgrind.unavailable()}")

FULL_GRID = "BN_BENCH_GRID=full"  # the shapes below are in the full grid
# The reference on a batch of 20, where perf.injected's extra work is exactly 5% of the batch.
COST = r"BatchNorm\.track_cost\('reference\.torch', 'forward_training', \(20, 64, 28, 28\), 1, 'float32'\)"
ACCURACY = r"BatchNorm\.track_error_ratio\('reference\.torch', 'forward_training', \(32, 64, 56, 56\), 1, 'float32'\)"


def _gate(tmp_path: Path, baseline: str, candidate: str, bench: str, *options: str) -> tuple[int, list[list[str]]]:
    """Exit status and the table's rows (verdict, baseline, candidate, ratio, interval, noise, name)."""
    out = subprocess.run(
        [sys.executable, "-m", "perf.gate", "--baseline", f"{FULL_GRID} {baseline}",
         "--candidate", f"{FULL_GRID} {candidate}", "--bench", bench, "--workdir", str(tmp_path), *options],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.stdout.splitlines()
            if re.match(r"\| (worse|inconclusive|better|failed) ", line)]
    return out.returncode, rows


def test_side_words() -> None:
    side = parse_side("candidate", "HEAD~1 tensorflow-cpu==2.20.0 BN_BENCH_IMPL=a.b:C")
    assert (side.revision, side.pins, side.env) == ("HEAD~1", ["tensorflow-cpu==2.20.0"], {"BN_BENCH_IMPL": "a.b:C"})
    assert parse_side("baseline", "") == parse_side("baseline", " ")
    with pytest.raises(ValueError, match="two revisions"):
        parse_side("baseline", "HEAD HEAD~1")


def test_pins_replace_the_projects_own() -> None:
    reqs = requirements(["tensorflow_cpu==2.20.0", "tf-keras==2.20.1", "rich==14.0.0"])
    assert "tensorflow-cpu==2.21.0" not in reqs and "tf-keras==2.21.0" not in reqs
    assert {"tensorflow_cpu==2.20.0", "tf-keras==2.20.1", "rich==14.0.0", "torch==2.13.0"} <= set(reqs)


def test_a_revision_contributes_its_reference_and_adapters_only(tmp_path: Path) -> None:
    """Both sides run this checkout's benchmarks: a revision's own benchmarks/ and perf/ must not shadow them."""
    prepared = prepare(parse_side("baseline", "HEAD"), tmp_path)
    source = tmp_path / "src" / prepared.commit
    assert sorted(p.name for p in source.iterdir()) == sorted(MEASURED)
    assert prepared.env["ASV_PYTHONPATH"].split(os.pathsep)[0] == str(source)


@needs_valgrind
def test_counted_gate_flags_five_percent_more_work(tmp_path: Path) -> None:
    status, rows = _gate(tmp_path, "BN_BENCH_IMPL=reference.torch", "BN_BENCH_IMPL=perf.injected:EXTRA_WORK", COST,
                         "--metric", "counted")
    assert status == 1
    [(verdict, _, _, ratio, _, _, name)] = rows
    assert verdict == "worse" and "track_cost" in name
    assert 1.03 < float(ratio) < 1.07  # 5% more of the same work, and the per-call overhead once more


@needs_valgrind
def test_counted_gate_passes_unchanged_code(tmp_path: Path) -> None:
    assert _gate(tmp_path, "BN_BENCH_IMPL=reference.torch", "BN_BENCH_IMPL=reference.torch", COST,
                 "--metric", "counted") == (0, [])


def test_gate_flags_a_less_accurate_implementation(tmp_path: Path) -> None:
    status, rows = _gate(tmp_path, "BN_BENCH_IMPL=reference.torch",
                         "BN_BENCH_IMPL=perf.injected:LESS_ACCURATE", ACCURACY, "--rounds", "1")
    assert status == 1
    [(verdict, *_, name)] = rows
    assert verdict == "worse" and "track_error_ratio" in name
