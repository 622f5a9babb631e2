"""What the report says, computed from the JSON document alone (so a saved report re-renders the same):
the status matrix, worst error ratios, conventions side by side, deviations, smallest failures and the
porting cheat-sheet."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from .results import BAD_STATUSES

__all__ = ["KILLING_STATUSES", "conventions_table", "deviations", "families", "failures", "kill_matrix", "matrix",
           "porting", "skips", "worst_error_ratio"]

# Check families (test modules) in reading order; any other family follows alphabetically.
_ORDER = ("conventions", "construction", "forward", "running_stats", "gradients", "second_order", "edge_cases", "contract",
          "large", "random")

# The edge cases (1, 3), (1, 3, 1, 1) and (1, 3, 1, 1, 1): every implementation supports one of them.
_ONE_VALUE = ("one_value_per_channel", "one_value_per_channel_4d", "one_value_per_channel_5d")

# The checks each line of the porting cheat-sheet rests on.
PORTING_CHECKS = ("defaults_match_convention", "running_statistics", "training_output", "inference_after_training")


def families(doc: dict) -> list[str]:
    present = {r["check_family"] for r in doc["results"]}
    return [f for f in _ORDER if f in present] + sorted(present - set(_ORDER))


def implementations(doc: dict) -> list[str]:
    return [i["name"] for i in doc["implementations"]]


def matrix(doc: dict) -> dict[str, dict[str, Counter]]:
    """implementation -> check family -> status counts."""
    out: dict[str, dict[str, Counter]] = {name: defaultdict(Counter) for name in implementations(doc)}
    for r in doc["results"]:
        out.setdefault(r["implementation"], defaultdict(Counter))[r["check_family"]][r["status"]] += 1
    return out


# A check kills a mutant when it fails it (or its worker dies); a harness error or a stale deviation does not.
KILLING_STATUSES = frozenset({"fail", "crash"})


def kill_matrix(doc: dict) -> list[dict]:
    """Per implementation carrying a seeded bug (a mutant of the suite's self-test): its bug, and per check
    family the number of checks that failed it (``killed_by``); ``killed`` when any did."""
    m = matrix(doc)
    rows = []
    for impl in doc["implementations"]:
        if impl["seeded_bug"] is None:
            continue
        killed_by = {f: sum(m[impl["name"]][f][s] for s in KILLING_STATUSES) for f in families(doc)}
        killed_by = {f: n for f, n in killed_by.items() if n}
        rows.append({"implementation": impl["name"], **impl["seeded_bug"], "killed_by": killed_by,
                     "killed": bool(killed_by)})
    return rows


def worst_error_ratio(doc: dict) -> dict[str, dict[str, float]]:
    """implementation -> check family -> worst error/tolerance over the checks that are held to the
    tolerance (passes and failures; registered deviations are expected to exceed it)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for r in doc["results"]:
        if r["status"] in ("pass", "fail") and r["worst"] is not None:
            family = out[r["implementation"]]
            family[r["check_family"]] = max(family.get(r["check_family"], 0.0), r["worst"]["error_ratio"])
    return out


def _one_value_behaviour(doc: dict) -> dict[str, str]:
    """What each implementation did when training on one value per channel (the edge case (1, 3))."""
    out = {}
    for r in doc["results"]:
        p = r["params"]
        if r["check"] == "edge_case" and p.get("edge") in _ONE_VALUE and p.get("training"):
            outcome = next((c["note"] for c in r["comparisons"] if c["quantity"] == "outcome"), "")
            if outcome.startswith("implementation raised "):  # "implementation raised ValueError: ...; reference ..."
                out[r["implementation"]] = "raises " + outcome.removeprefix("implementation raised ").split(":")[0]
            elif outcome:
                out[r["implementation"]] = "returns an output, no error"
            elif r["status"] in ("pass", "fail"):
                out[r["implementation"]] = "returns beta" if r["status"] == "pass" else "returns a wrong output"
    return out


def conventions_table(doc: dict) -> list[dict]:
    """Per available implementation: its convention's rules and the defaults observed in the framework."""
    observed = {r["implementation"]: r["defaults"] for r in doc["results"] if r.get("defaults")}
    one_value = _one_value_behaviour(doc)
    rows = []
    for impl in doc["implementations"]:
        if not impl["available"]:
            continue
        conv = doc["conventions"][impl["convention"]]
        defaults = observed.get(impl["name"], {})
        rows.append({
            "implementation": impl["name"],
            "convention": conv["name"],
            "momentum weights": "new batch" if conv["momentum_weights"] == "new" else "old value",
            "default momentum": defaults.get("momentum", "not observed"),
            "default eps": defaults.get("eps", "not observed"),
            "default channel axis": defaults.get("channel_axis", "not observed"),
            "stored running variance": "unbiased n/(n-1)" if conv["bessel"] else "biased",
            "one value per channel (training)": one_value.get(impl["name"], "not observed"),
        })
    return rows


def deviations(doc: dict) -> list[dict]:
    """Each registry entry that matched, with the implementations and number of checks it covered."""
    grouped: dict[tuple, dict] = {}
    for r in doc["results"]:
        if r["status"] == "deviation" and r["deviation"]:
            d = r["deviation"]
            key = (d["implementation"], str(d["check"]), str(d["when"]), d["observed"])
            entry = grouped.setdefault(key, {**d, "implementations": set(), "checks": 0})
            entry["implementations"].add(r["implementation"])
            entry["checks"] += 1
    return [{**e, "implementations": sorted(e["implementations"])} for e in grouped.values()]


def _size(params: dict) -> int:
    return math.prod(params.get("shape") or [0])


def failures(doc: dict) -> list[dict]:
    """Per implementation and check, the smallest case (fewest elements) that went wrong, and how many did."""
    worst: dict[tuple, dict] = {}
    counts: Counter = Counter()
    for r in doc["results"]:
        if r["status"] in BAD_STATUSES:
            key = (r["implementation"], r["check"], r["status"])
            counts[key] += 1
            if key not in worst or (_size(r["params"]), r["test"]) < (_size(worst[key]["params"]), worst[key]["test"]):
                worst[key] = r
    return [
        {**worst[key], "failing_comparisons": [c for c in worst[key]["comparisons"] if not c["passed"]],
         "count": counts[key]}
        for key in sorted(worst)
    ]


def skips(doc: dict) -> dict[str, Counter]:
    """implementation -> what it was skipped for -> number of checks. A capability skip ("X does not
    support A, B") counts once for each of A and B; any other reason counts as itself."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in doc["results"]:
        if r["status"] == "skip":
            head, found, unsupported = r["reason"].partition(" does not support ")
            reasons = unsupported.split(", ") if found and head == r["implementation"] else [r["reason"]]
            out[r["implementation"]].update(reasons)
    return out


def _backing(doc: dict, conventions: list[str]) -> tuple[bool, str]:
    """Whether the checks a porting line rests on passed for implementations of both conventions, and
    on which: a convention checked only through the reference says so."""
    of = {i["name"]: i["convention"] for i in doc["implementations"]}
    families = {c: sorted({i["family"] for i in doc["implementations"] if i["available"] and i["convention"] == c
                           and i["family"] != "reference"}) for c in conventions}
    passed: dict[tuple[str, str], int] = Counter()
    broken = set()
    for r in doc["results"]:
        conv = of.get(r["implementation"])
        if conv in conventions and r["check"] in PORTING_CHECKS:
            if r["status"] == "pass":
                passed[conv, r["check"]] += 1
            elif r["status"] in BAD_STATUSES:
                broken.add(f"{r['check']} on {r['implementation']}")
    missing = [f"no passing {c} on {conv}" for conv in conventions for c in PORTING_CHECKS if not passed[conv, c]]
    if broken or missing:
        return False, "not verified: " + "; ".join(sorted(broken) + missing)
    sides = "; ".join(f"{c}: {', '.join(families[c]) or 'the reference only'}" for c in conventions)
    return True, f"{sum(passed.values())} passing checks ({sides})"


def porting(doc: dict) -> list[dict]:
    """How to carry a trained BatchNorm between each ordered pair of conventions that were checked."""
    of = {i["convention"] for i in doc["implementations"] if i["available"]}
    names = [n for n in doc["conventions"] if n in of]
    rows = []
    for a in names:
        for b in names:
            if a == b:
                continue
            src, dst = doc["conventions"][a], doc["conventions"][b]
            if src["momentum_weights"] == dst["momentum_weights"]:
                momentum = "same meaning: keep m"
            else:
                momentum = f"m -> 1 - m (default {src['default_momentum']:g} -> {1 - src['default_momentum']:g})"
            if src["cumulative_momentum"] and not dst["cumulative_momentum"]:
                momentum += "; momentum=None (cumulative average) has no equivalent: pick a fixed m"
            eps = (f"same default {src['default_eps']:g}" if src["default_eps"] == dst["default_eps"]
                   else f"pass eps={src['default_eps']:g} (target default {dst['default_eps']:g})")
            axis = (f"same default {src['channel_axis']}" if src["channel_axis"] == dst["channel_axis"]
                    else f"pass axis={src['channel_axis']} (target default {dst['channel_axis']})")
            variance = "copy as is: inference normalizes with it on both sides"
            if src["bessel"] != dst["bessel"]:
                stored = "biased" if dst["bessel"] is False else "unbiased n/(n-1)"
                variance += f"; further training stores the {stored} batch variance"
            ok, backing = _backing(doc, [a, b])
            rows.append({"from": a, "to": b, "momentum": momentum, "eps": eps, "channel axis": axis,
                         "running variance": variance, "verified": ok, "backed by": backing})
    return rows
