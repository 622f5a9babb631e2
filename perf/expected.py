"""The committed baseline's file and its rule: expected instruction counts, each with a noise margin, and
the verdict on a measurement of them (``perf.baseline`` measures; nothing here does).

An entry is one combination ``(implementation, operation, shape, channel_axis, dtype)`` of the counted
benchmarks (``METRIC``: instructions one call executes under callgrind), here the median of ``CALLS``
calls in one process after ``WARMUP`` uncounted ones. Not the estimated cycles (``track_cost``): for the
small calls measured here two thirds of those are cold-cache misses, which follow the memory layout: the
same code's cost moved by 1.65% between processes where its instructions moved by 0.25%
(docs/benchmarks.md). Its margin is relative and
comes from measurements of the same code in fresh processes (``samples``), each with its memory laid out
differently (``perf.baseline``): ``max(K × (max - min) / median, FLOOR)``. The verdict on a measured
count ``m`` against the expected ``e``: **worse** when ``m / e > 1 + margin``, **better** when
``m / e < 1 - margin``, else **same**; **missing** when the baseline lists a combination that was not
measured, **new** when one was measured that it does not list. Worse, better and missing fail (so that an
improvement is committed on purpose too); new does not.

The file is JSON: what the counts depend on (``environment``: compared strictly before anything is
measured), the host they were measured on (``host``: informational), the date of the expected values, how
the margins were obtained (``margins``: rule, repeats, date, host), the selected combinations that cannot
run (``unmeasured``: they raise, e.g. a registered deviation), and one entry per line.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CALLS", "FLOOR", "FORMAT", "K", "METRIC", "WARMUP", "Baseline", "Combination", "Entry", "Row", "VERDICTS",
    "compare", "dumps", "from_rounds", "loads", "margin", "mismatches", "name", "refreshed", "status", "table",
]

FORMAT = 2  # 1 held track_cost
METRIC = "track_instructions"
CALLS = 5  # measured calls per combination in one process; the median counts (a garbage collection may hit one)
# Uncounted calls first: CPython 3.11 specializes a function's code from its 8th call on, and counts drop by
# 3% until then.
WARMUP = 10
K = 3  # margin: K times the relative range of the fresh-process samples...
# ...but no less than this: with no code on their path changed, PyTorch's instruction counts moved by up to 1.9%
# between CI runs from fresh clones a day apart (docs/benchmarks.md, run 8); estimated cycles by 1.65%.
FLOOR = 0.03
VERDICTS = ("worse", "better", "missing", "new", "same")  # failing first
FAILING = frozenset({"worse", "better", "missing"})

Combination = tuple[str, str, tuple[int, ...], int, str]  # implementation, operation, shape, channel_axis, dtype


@dataclass(frozen=True)
class Entry:
    combination: Combination
    expected: int
    margin: float  # relative
    samples: tuple[int, ...]  # the fresh-process measurements the margin comes from


@dataclass(frozen=True)
class Baseline:
    environment: dict[str, str]  # what the counts depend on: Python, libc, valgrind, its CPU, distributions
    host: dict[str, object]  # the machine measured on
    measured: str  # date of the expected values
    margins: dict[str, object]  # how the margins were obtained: rule, repeats, date, host
    entries: tuple[Entry, ...] = field(default=())
    unmeasured: tuple[Combination, ...] = field(default=())  # selected, but they cannot run (they raise)


@dataclass(frozen=True)
class Row:
    combination: Combination
    verdict: str
    expected: int | None = None
    measured: int | None = None
    margin: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.measured / self.expected if self.expected and self.measured is not None else None


def margin(samples: Sequence[int]) -> float:
    """The relative margin that fresh-process ``samples`` of one combination's count give (the module's rule)."""
    spread = K * (max(samples) - min(samples)) / statistics.median(samples)
    return max(math.ceil(spread * 1e4) / 1e4, FLOOR)  # rounded up to 0.01%


def from_rounds(rounds: Sequence[Mapping[Combination, int | None]], pads: Sequence[int],
                environment: dict[str, str], host: dict[str, object], date: str) -> Baseline:
    """A baseline from ``rounds`` of measurements, each in fresh processes whose environment held ``pads``
    more bytes: expected values their medians, margins their spread. A combination that no round could
    measure is left out; one that only some could is an error (a measurement that fails now and then
    cannot gate)."""
    entries, unmeasured = [], []
    for combination in rounds[0]:
        found = [r.get(combination) for r in rounds]
        if all(v is None for v in found):
            unmeasured.append(combination)
            continue
        if any(v is None for v in found):
            raise ValueError(f"{name(combination)} was measured in {sum(v is not None for v in found)} of "
                             f"{len(rounds)} rounds only")
        samples = tuple(int(v) for v in found)
        entries.append(Entry(combination, int(statistics.median_low(samples)), margin(samples), samples))
    margins = {"k": K, "floor": FLOOR, "repeats": len(rounds), "pads": list(pads), "measured": date, "host": host}
    return Baseline(environment, host, date, margins, tuple(entries), tuple(unmeasured))


def refreshed(baseline: Baseline, measured: Mapping[Combination, int | None], host: dict[str, object],
              date: str) -> Baseline:
    """The baseline a check proposes: ``measured`` as the expected values, margins kept from ``baseline``; a
    new combination gets the floor (one sample: ``python -m perf.baseline update`` measures its spread)."""
    kept = {e.combination: e for e in baseline.entries}
    entries = tuple(
        Entry(c, v, kept[c].margin, kept[c].samples) if c in kept else Entry(c, v, FLOOR, (v,))
        for c, v in measured.items() if v is not None
    )
    unmeasured = tuple(c for c, v in measured.items() if v is None)
    return Baseline(baseline.environment, host, date, baseline.margins, entries, unmeasured)


def compare(baseline: Baseline, measured: Mapping[Combination, int | None]) -> list[Row]:
    """A row per combination of the baseline or of ``measured`` (one measured as None, unsupported, is
    missing if the baseline lists it, else left out), failing verdicts first."""
    rows = []
    for entry in baseline.entries:
        value = measured.get(entry.combination)
        if value is None:
            verdict = "missing"
        else:
            ratio = value / entry.expected
            verdict = "worse" if ratio > 1 + entry.margin else "better" if ratio < 1 - entry.margin else "same"
        rows.append(Row(entry.combination, verdict, entry.expected, value, entry.margin))
    listed = {e.combination for e in baseline.entries}
    rows += [Row(c, "new", measured=v) for c, v in measured.items() if c not in listed and v is not None]
    return sorted(rows, key=lambda r: VERDICTS.index(r.verdict))


def status(rows: Sequence[Row]) -> int:
    """1 when any row fails (worse, better, missing), else 0."""
    return int(any(r.verdict in FAILING for r in rows))


def mismatches(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[tuple[str, str | None, str | None]]:
    """``(what, recorded, current)`` for each fact of the environment that differs (None: not recorded, or
    absent now)."""
    return [(k, recorded.get(k), current.get(k)) for k in sorted({*recorded, *current})
            if recorded.get(k) != current.get(k)]


def name(combination: Combination) -> str:
    """The combination as asv names its ``METRIC`` benchmark."""
    implementation, operation, shape, channel_axis, dtype = combination
    return f"{METRIC}({implementation!r}, {operation!r}, {tuple(shape)!r}, {channel_axis!r}, {dtype!r})"


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| benchmark | expected | measured | ratio | margin | verdict |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        cells = ["" if v is None else f"{v:,}" for v in (r.expected, r.measured)]
        ratio = "" if r.ratio is None else f"{r.ratio:.4f}"
        bound = "" if r.margin is None else f"±{r.margin:.2%}"
        lines.append(f"| {name(r.combination)} | {cells[0]} | {cells[1]} | {ratio} | {bound} | {r.verdict} |")
    return "\n".join(lines)


def _entry(entry: Entry) -> dict[str, object]:
    implementation, operation, shape, channel_axis, dtype = entry.combination
    return {"implementation": implementation, "operation": operation, "shape": list(shape),
            "channel_axis": channel_axis, "dtype": dtype, "expected": entry.expected,
            "margin": entry.margin, "samples": list(entry.samples)}


def dumps(baseline: Baseline) -> str:
    """The file's text: the header indented, one combination or entry per line (a refresh's diff shows what
    moved)."""
    header = {"format": FORMAT, "metric": METRIC, "calls": CALLS, "warmup": WARMUP,
              "environment": baseline.environment, "host": baseline.host, "measured": baseline.measured,
              "margins": baseline.margins}
    head = json.dumps(header, indent=1)[:-2]  # without the closing brace
    unmeasured = ",\n".join(f"  {json.dumps(c)}" for c in baseline.unmeasured)
    entries = ",\n".join(f"  {json.dumps(_entry(e))}" for e in baseline.entries)
    return f'{head},\n "unmeasured": [\n{unmeasured}\n ],\n "entries": [\n{entries}\n ]\n}}\n'


def loads(text: str) -> Baseline:
    data = json.loads(text)
    wanted = {"format": FORMAT, "metric": METRIC, "calls": CALLS, "warmup": WARMUP}
    found = {k: data.get(k) for k in wanted}
    if found != wanted:
        raise ValueError(f"not a baseline of this kind: {found}, expected {wanted}")
    entries = tuple(
        Entry((e["implementation"], e["operation"], tuple(e["shape"]), e["channel_axis"], e["dtype"]),
              e["expected"], e["margin"], tuple(e["samples"]))
        for e in data["entries"]
    )
    unmeasured = tuple((c[0], c[1], tuple(c[2]), c[3], c[4]) for c in data["unmeasured"])
    return Baseline(data["environment"], data["host"], data["measured"], data["margins"], entries, unmeasured)
