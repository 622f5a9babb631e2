"""What changed between two conformance reports, for gating a framework upgrade
(``python -m conformance.report diff OLD.json NEW.json``): plain data from the two loaded documents.

A check is an implementation and a test (the pytest node id, stable across runs). :func:`compare` lists:

    newly_failing             bad now (``BAD_STATUSES``), not bad or absent before: its failing comparisons
                              and the reason's first line
    newly_deviating           pass before, deviation now: the registry entry that matched
    newly_skipped             ran before (any status but skip), skipped now: coverage lost
    error_ratio_worse         pass or deviation in both, the worst error ratio moved up by more than the factor
    vanished_implementations  by name, with the number of checks each had
    vanished_checks           of the implementations in both reports
    stopped_deviating         deviation before, pass or unexpected_pass now (the registry entry is stale, and
                              an unexpected_pass is also newly failing, as it fails the suite's own run)
    fixed                     bad before, pass or deviation now
    error_ratio_better        as error_ratio_worse, moved down
    appeared_implementations, appeared_checks

The lists in ``WORSE`` make the diff worse (``worse``: the command exits 1). The factor rule is :func:`moved`.
"""

from __future__ import annotations

import math
from collections import Counter

from .results import BAD_STATUSES

__all__ = ["FORMAT", "FORMAT_VERSION", "OTHER", "WORSE", "compare", "moved"]

FORMAT, FORMAT_VERSION = "batchnorm-conformance-diff", 1
WORSE = ("newly_failing", "newly_deviating", "newly_skipped", "error_ratio_worse", "vanished_implementations",
         "vanished_checks")
OTHER = ("stopped_deviating", "fixed", "error_ratio_better", "appeared_implementations", "appeared_checks")
# The statuses whose error ratio is held against the tolerance or a registry entry: only these are compared.
_COMPARED = frozenset({"pass", "deviation"})


def moved(old: float, new: float, factor: float) -> float | None:
    """``new / old`` where the worst error ratio moved by more than ``factor`` (> factor: worse, < 1 / factor:
    better), else None. Where the quotient says nothing, the move is all or nothing: 0 to positive is worse
    (inf), positive to 0 better (0.0); finite to non-finite (a NaN or Inf output) is worse (inf), non-finite
    to finite better (0.0); 0 to 0 and non-finite to non-finite have not moved."""
    old_finite, new_finite = math.isfinite(old), math.isfinite(new)
    if not (old_finite and new_finite):
        return None if old_finite == new_finite else (math.inf if old_finite else 0.0)
    if old == 0 or new == 0:
        return None if old == new else (math.inf if old == 0 else 0.0)
    change = new / old
    return change if change > factor or change < 1 / factor else None


def _check(r: dict) -> dict:
    return {k: r[k] for k in ("implementation", "test", "check_family", "check", "params")}


def _first_line(text: str) -> str:
    return text.strip().partition("\n")[0]


def _ratio(r: dict) -> dict:
    worst = r["worst"]
    return {"status": r["status"], "quantity": worst["quantity"], "error_ratio": worst["error_ratio"],
            "actual_nonfinite": worst.get("actual_nonfinite", [])}


def _summary(doc: dict) -> dict:
    return {"created": doc["created"], "project_version": doc["environment"].get("project_version"),
            "counts": doc["counts"]}


def _versions(old: dict, new: dict) -> list[dict]:
    """Each implementation's version in each report (None: absent, unavailable, or never ran); one shown in
    another's row (a ported pair) is that row's framework, listed there."""
    def own(doc: dict) -> dict[str, str | None]:
        return {i["name"]: i["version"] for i in doc["implementations"] if not (i["derivation"] or {}).get("row")}
    before, after = own(old), own(new)
    return [{"implementation": name, "old": before.get(name), "new": after.get(name)}
            for name in dict.fromkeys([*before, *after])]


def _names(doc: dict) -> set[str]:
    return {i["name"] for i in doc["implementations"]} | {r["implementation"] for r in doc["results"]}


def _pair(old: dict | None, new: dict | None, factor: float, locators: dict[str, str]) -> dict[str, dict]:
    """The categories one check falls in (one record each), given its result in each report (None: absent)."""
    out: dict[str, dict] = {}
    was = None if old is None else old["status"]
    now = None if new is None else new["status"]
    if new is not None and now in BAD_STATUSES and was not in BAD_STATUSES:
        out["newly_failing"] = {**_check(new), "old_status": was, "status": now, "reason": _first_line(new["reason"]),
                                "failing": [c for c in new["comparisons"] if not c["passed"]],
                                "locator": locators.get(new["implementation"], "")}
    if old is None or new is None:
        return out
    if was == "pass" and now == "deviation":
        out["newly_deviating"] = {**_check(new), "deviation": new["deviation"], "worst": new["worst"]}
    if was != "skip" and now == "skip":
        out["newly_skipped"] = {**_check(new), "old_status": was, "reason": _first_line(new["reason"]),
                                "unsupported": new["unsupported"]}
    if was == "deviation" and now in ("pass", "unexpected_pass"):
        out["stopped_deviating"] = {**_check(new), "status": now, "deviation": old["deviation"]}
    if was in BAD_STATUSES and now in _COMPARED:
        out["fixed"] = {**_check(new), "old_status": was, "status": now}
    if {was, now} <= _COMPARED and old["worst"] is not None and new["worst"] is not None:
        change = moved(old["worst"]["error_ratio"], new["worst"]["error_ratio"], factor)
        if change is not None:
            key = "error_ratio_worse" if change > 1 else "error_ratio_better"
            out[key] = {**_check(new), "old": _ratio(old), "new": _ratio(new), "change": change}
    return out


def compare(old: dict, new: dict, factor: float = 2.0) -> dict:
    """What changed from report ``old`` to report ``new`` (documents as ``results.load`` gives them): the lists
    of :data:`WORSE` and :data:`OTHER`, each record naming its check, sorted by implementation and test;
    ``versions`` of every implementation; each report's ``created``, ``project_version`` and ``counts``; the
    ``factor``; ``worse`` when any list of :data:`WORSE` has a record. The checks of an implementation that
    appeared or vanished as a whole count in its record, not one by one (a failing one is still newly failing).
    """
    if not factor >= 1:
        raise ValueError(f"the factor must be at least 1, not {factor}")
    before = {(r["implementation"], r["test"]): r for r in old["results"]}
    after = {(r["implementation"], r["test"]): r for r in new["results"]}
    names_before, names_after = _names(old), _names(new)
    both = names_before & names_after
    locators = {i["name"]: i["locator"] for i in new["implementations"]}
    out: dict = {key: [] for key in (*WORSE, *OTHER)}
    for key in sorted(before.keys() | after.keys()):
        for category, record in _pair(before.get(key), after.get(key), factor, locators).items():
            out[category].append(record)
        if key[0] in both and (key in before) != (key in after):
            gone = key not in after
            r = before[key] if gone else after[key]
            out["vanished_checks" if gone else "appeared_checks"].append({**_check(r), "status": r["status"]})
    counts_before = Counter(impl for impl, _ in before)
    counts_after = Counter(impl for impl, _ in after)
    out["vanished_implementations"] = [{"implementation": n, "checks": counts_before[n]}
                                       for n in sorted(names_before - names_after)]
    out["appeared_implementations"] = [{"implementation": n, "checks": counts_after[n]}
                                       for n in sorted(names_after - names_before)]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "factor": factor, "old": _summary(old),
            "new": _summary(new), "versions": _versions(old, new), **out, "worse": any(out[key] for key in WORSE)}
