"""The committed performance baseline (perf.baseline, perf.expected): the rule on synthetic counts, the file's
round trip, the refusal to compare across environments, and the check's printed new baseline; none measures
anything but the last test, which measures one small combination under callgrind twice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("asv", reason="asv is not installed (tox -e bench runs these tests)")

from benchmarks import callgrind  # noqa: E402
from benchmarks.common import IMPLEMENTATIONS  # noqa: E402
from perf import baseline as cli  # noqa: E402
from perf.environment import host  # noqa: E402
from perf.expected import (  # noqa: E402
    FLOOR,
    Baseline,
    Entry,
    compare,
    dumps,
    from_rounds,
    loads,
    margin,
    mismatches,
    refreshed,
    status,
)

if callgrind.unavailable() and os.environ.get("BN_REQUIRE_VALGRIND"):
    raise RuntimeError(f"BN_REQUIRE_VALGRIND is set, but {callgrind.unavailable()}")

A, B, C, D, E, F = (("torch.BatchNorm2d", op, (4, 8, 6, 6), 1, "float32") for op in "abcdef")
ENVIRONMENT = {"python": "3.11.7", "torch": "2.13.0", "cpu under valgrind": "Haswell"}
HOST = {"cpu": "Some CPU", "extensions": ["avx2"], "cpus": 2}


MARGINS = {"k": 3, "floor": FLOOR, "repeats": 5, "pads": [0, 1, 2, 3, 4], "measured": "2026-01-01", "host": HOST}
BASELINE = Baseline(ENVIRONMENT, HOST, "2026-01-01", MARGINS,
                    tuple(Entry(c, 1000, 0.02, (1000,) * 5) for c in (A, B, C, D)), (F,))


def test_the_margin_is_k_times_the_spread_with_a_floor() -> None:
    assert margin([1000, 1000, 1000]) == FLOOR
    assert margin([1000, 1010, 1020]) == 0.0595  # 3 x 20 / 1010, rounded up to 0.01%
    assert margin([995, 1000, 1005]) == 0.03
    assert margin([1000, 1001]) == FLOOR


def test_verdicts() -> None:
    measured = {A: 1019, B: 1021, C: 979, E: 500, F: None}  # D not measured; F unsupported and not listed
    rows = {r.combination: r for r in compare(BASELINE, measured)}
    assert {c: r.verdict for c, r in rows.items()} == {A: "same", B: "worse", C: "better", D: "missing", E: "new"}
    assert rows[B].ratio == pytest.approx(1.021) and rows[D].ratio is None and rows[E].expected is None
    assert [r.verdict for r in compare(BASELINE, measured)][:3] == ["worse", "better", "missing"]  # failing first
    assert status(compare(BASELINE, measured)) == 1


def test_only_same_and_new_pass() -> None:
    assert status(compare(BASELINE, {A: 980, B: 1020, C: 1000, D: 1000, E: 7})) == 0  # the margin's ends are same
    for changed in ({B: 1021}, {C: 979}, {D: None}):
        assert status(compare(BASELINE, {A: 1000, B: 1000, C: 1000, D: 1000, **changed})) == 1


def test_environment_mismatches_name_what_differs() -> None:
    here = {**ENVIRONMENT, "torch": "2.14.0", "onnx": "1.23.2"}
    assert mismatches(ENVIRONMENT, here) == [("onnx", None, "1.23.2"), ("torch", "2.13.0", "2.14.0")]
    assert mismatches(ENVIRONMENT, dict(ENVIRONMENT)) == []


def test_the_file_round_trips_one_entry_per_line() -> None:
    text = dumps(BASELINE)
    assert loads(text) == BASELINE
    lines = text.splitlines()
    assert sum(line.strip().startswith('{"implementation"') for line in lines) == len(BASELINE.entries)
    assert json.loads(text)["environment"] == ENVIRONMENT
    with pytest.raises(ValueError, match="not a baseline"):
        loads(json.dumps({**json.loads(text), "calls": 1}))


def test_rounds_give_medians_and_margins() -> None:
    rounds = [{A: 1000, B: 2000, F: None}, {A: 1010, B: 2000, F: None}, {A: 1020, B: 2000, F: None}]
    built = from_rounds(rounds, [0, 1, 2], ENVIRONMENT, HOST, "2026-02-02")
    assert [(e.combination, e.expected, e.samples) for e in built.entries] == [
        (A, 1010, (1000, 1010, 1020)), (B, 2000, (2000, 2000, 2000))]
    assert built.unmeasured == (F,)
    assert [e.margin for e in built.entries] == [margin([1000, 1010, 1020]), FLOOR]
    assert built.margins["repeats"] == 3 and built.margins["measured"] == "2026-02-02"
    with pytest.raises(ValueError, match="1 of 2 rounds"):
        from_rounds([{A: 1000}, {A: None}], [0, 1], ENVIRONMENT, HOST, "2026-02-02")


def test_a_refreshed_baseline_keeps_the_margins() -> None:
    new = refreshed(BASELINE, {A: 1100, B: 900, E: 50, F: None}, {**HOST, "cpus": 4}, "2026-03-03")
    assert [(e.combination, e.expected, e.margin) for e in new.entries] == [(A, 1100, 0.02), (B, 900, 0.02),
                                                                           (E, 50, FLOOR)]
    assert new.unmeasured == (F,)
    assert new.margins == BASELINE.margins and new.environment == BASELINE.environment
    assert (new.measured, new.host["cpus"]) == ("2026-03-03", 4)


@pytest.fixture
def measured_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The CLI with this environment as BASELINE's, the selection [A] and measurements from ``measurements``."""
    monkeypatch.setattr(cli.callgrind, "unavailable", lambda: None)
    monkeypatch.setattr(cli, "environment", lambda: dict(ENVIRONMENT))
    monkeypatch.setattr(cli, "host", lambda: dict(HOST))
    monkeypatch.setattr(cli, "selection", lambda: [A])
    path = tmp_path / "baseline.json"
    path.write_text(dumps(BASELINE))
    return path


def test_check_prints_the_table_and_the_new_baseline(measured_here: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    asked = []
    monkeypatch.setattr(cli, "measure", lambda wanted: asked.extend(wanted) or {A: 1000, B: 1200, C: 1000, D: 1000})
    assert cli.main(["check", "--baseline", str(measured_here)]) == 1
    assert asked == [A, B, C, D]  # the baseline's combinations and the selection, each once
    out = capsys.readouterr().out
    assert "| track_instructions('torch.BatchNorm2d', 'b', (4, 8, 6, 6), 1, 'float32') | 1,000 | 1,200 | 1.2000 " \
           "| ±2.00% | worse |" in out
    proposed = loads(out[out.index("{\n"):])
    assert [e.expected for e in proposed.entries] == [1000, 1200, 1000, 1000]
    assert [e.margin for e in proposed.entries] == [0.02] * 4


def test_check_writes_the_new_baseline_and_passes_when_same(measured_here: Path, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setattr(cli, "measure", lambda wanted: dict.fromkeys(wanted, 1001))
    assert cli.main(["check", "--baseline", str(measured_here), "--write", str(tmp_path / "new.json")]) == 0
    assert {e.expected for e in loads((tmp_path / "new.json").read_text()).entries} == {1001}


def test_check_refuses_other_versions(measured_here: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "environment", lambda: {**ENVIRONMENT, "torch": "2.14.0"})
    monkeypatch.setattr(cli, "measure", lambda wanted: pytest.fail("measured despite other versions"))
    assert cli.main(["check", "--baseline", str(measured_here)]) == 2
    assert "torch: baseline 2.13.0, here 2.14.0" in capsys.readouterr().err


def test_without_valgrind_only_ci_fails(monkeypatch: pytest.MonkeyPatch, measured_here: Path) -> None:
    monkeypatch.setattr(cli.callgrind, "unavailable", lambda: "valgrind is not installed")
    monkeypatch.delenv("BN_REQUIRE_VALGRIND", raising=False)
    assert cli.main(["check", "--baseline", str(measured_here)]) == 0
    monkeypatch.setenv("BN_REQUIRE_VALGRIND", "1")
    assert cli.main(["check", "--baseline", str(measured_here)]) == 2


def test_host_facts(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert host(cpuinfo) == {"cpu": "AMD EPYC 7B13", "extensions": ["sse4_2", "avx", "avx2", "fma"],
                             "cpus": os.cpu_count()}


def test_the_committed_baseline_lists_the_selection() -> None:
    """What CI measures is what the committed file lists: a new implementation or operation refreshes it."""
    committed = loads(cli.DEFAULT.read_text())
    listed = [e.combination for e in committed.entries]
    if any(c[0] not in IMPLEMENTATIONS for c in listed):
        pytest.skip("the baseline's frameworks are not all installed here")
    assert sorted([*listed, *committed.unmeasured]) == sorted(cli.selection())
    assert all(FLOOR <= e.margin < 0.05 for e in committed.entries)


@pytest.mark.skipif(callgrind.unavailable() is not None, reason=f"{callgrind.unavailable()}")
def test_a_real_measurement_agrees_with_itself() -> None:
    """Unchanged code, measured in fresh processes, is the same within the margin its own spread gives."""
    combination = ("reference.torch", "forward_inference", (64, 16), 1, "float32")
    rounds = [cli.measure([combination], pad) for pad in (0, 613)]
    built = from_rounds(rounds, [0, 613], ENVIRONMENT, HOST, "today")
    [entry] = built.entries
    assert entry.expected > 10_000 and entry.margin < 0.05
    assert [r.verdict for r in compare(built, cli.measure([combination]))] == ["same"]
