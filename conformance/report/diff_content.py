"""The diff of two reports (:func:`diff.compare`) as blocks, for ``blocks.to_markdown``: the versions at the top,
then one table per category that has records, what got worse first."""

from __future__ import annotations

import math
from collections.abc import Callable

from .blocks import Block, Heading, Table, Text
from .content import describe, replay
from .diff import OTHER, WORSE
from .heatmap import label
from .results import STATUSES

__all__ = ["blocks"]


def _version(version: str | None) -> str:
    return "-" if version is None else version


def _ratio(side: dict) -> str:
    return f"{label(side['error_ratio'], side['actual_nonfinite'])} ({side['quantity']}, {side['status']})"


def _change(change: float) -> str:
    return f"{change:.3g}x" if math.isfinite(change) else "inf"


def _entry(deviation: dict) -> list[str]:
    """A registry entry: what it says is observed, why, and its upstream link."""
    return [deviation["observed"], deviation["reason"], deviation["link"] or "(none found)"]


def _what(r: dict) -> str:
    return "; ".join(describe(c) for c in r["failing"]) or r["reason"][:300]


def _check(r: dict) -> list[str]:
    return [r["implementation"], r["test"]]


# category -> (title, header, row)
_CHECK = ["implementation", "test"]
_SECTIONS: dict[str, tuple[str, list[str], Callable[[dict], list[str]]]] = {
    "newly_failing": ("Newly failing", [*_CHECK, "before", "now", "what went wrong", "replay"],
                      lambda r: [*_check(r), r["old_status"] or "absent", r["status"], _what(r),
                                 replay(r["test"], r["locator"])]),
    "newly_deviating": ("Newly deviating", [*_CHECK, "observed", "why", "upstream"],
                        lambda r: [*_check(r), *_entry(r["deviation"])]),
    "newly_skipped": ("Newly skipped", [*_CHECK, "before", "skipped for"],
                      lambda r: [*_check(r), r["old_status"], ", ".join(r["unsupported"]) or r["reason"]]),
    "error_ratio_worse": ("Worse error ratios", [*_CHECK, "before", "now", "change"],
                          lambda r: [*_check(r), _ratio(r["old"]), _ratio(r["new"]), _change(r["change"])]),
    "vanished_implementations": ("Vanished implementations", ["implementation", "checks before"],
                                 lambda r: [r["implementation"], str(r["checks"])]),
    "vanished_checks": ("Vanished checks", [*_CHECK, "status before"], lambda r: [*_check(r), r["status"]]),
    "stopped_deviating": ("Stopped deviating", [*_CHECK, "now", "observed before", "why", "upstream"],
                          lambda r: [*_check(r), r["status"], *_entry(r["deviation"])]),
    "fixed": ("Fixed", [*_CHECK, "before", "now"], lambda r: [*_check(r), r["old_status"], r["status"]]),
    "error_ratio_better": ("Better error ratios", [*_CHECK, "before", "now", "change"],
                           lambda r: [*_check(r), _ratio(r["old"]), _ratio(r["new"]), _change(r["change"])]),
    "appeared_implementations": ("Appeared implementations", ["implementation", "checks"],
                                 lambda r: [r["implementation"], str(r["checks"])]),
    "appeared_checks": ("Appeared checks", [*_CHECK, "status"], lambda r: [*_check(r), r["status"]]),
}


def _verdict(d: dict) -> str:
    worse = [f"{len(d[k])} {_SECTIONS[k][0].lower()}" for k in WORSE if d[k]]
    return f"Worse: {', '.join(worse)}." if worse else "Nothing got worse."


def blocks(d: dict) -> list[Block]:
    old, new = d["old"], d["new"]
    out: list[Block] = [
        Heading(1, "Conformance diff"),
        Text(f"Old: the report of {old['created']} (project {old['project_version']}); new: the report of "
             f"{new['created']} (project {new['project_version']}). An error ratio moved where new / old is above "
             f"{d['factor']:g} or below 1/{d['factor']:g}. {_verdict(d)}"),
        Heading(2, "Versions"),
        Table(["implementation", "old", "new"],
              [[v["implementation"], _version(v["old"]), _version(v["new"])] for v in d["versions"]], id="versions"),
        Heading(2, "Counts"),
        Table(["status", "old", "new"], [[s, str(old["counts"][s]), str(new["counts"][s])] for s in STATUSES],
              id="counts"),
    ]
    listed = [k for k in (*WORSE, *OTHER) if d[k]]
    for category in listed:
        title, header, row = _SECTIONS[category]
        out += [Heading(2, f"{title} ({len(d[category])})"),
                Table(header, [row(r) for r in d[category]], id=category.replace("_", "-"))]
    if not listed:
        out.append(Text("No check changed."))
    return out
