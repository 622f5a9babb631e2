"""What the report says, computed from the JSON document alone (so a saved report re-renders the same):
the status matrix, worst error ratios, conventions side by side, deviations, smallest failures and the
porting cheat-sheet."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from .results import BAD_STATUSES

__all__ = ["KILLING_STATUSES", "conventions_table", "deviations", "dtypes", "families", "failures", "kill_matrix",
           "matrix", "not_generated_total", "porting", "porting_checks", "skips", "worst_error_ratio"]

# Check families (test modules) in reading order; any other family follows alphabetically.
_ORDER = ("conventions", "construction", "forward", "running_stats", "gradients", "second_order", "edge_cases",
          "contract", "large", "random")

# The parameters that say where a case sits, not what it tests: a failure's group never splits on them.
_LAYOUT = frozenset({"shape", "rank", "channel_axis"})


def families(doc: dict) -> list[str]:
    present = {r["check_family"] for r in doc["results"]} | {f for fams in doc["not_generated"].values() for f in fams}
    return [f for f in _ORDER if f in present] + sorted(present - set(_ORDER))


def implementations(doc: dict) -> list[str]:
    return [i["name"] for i in doc["implementations"]]


def matrix(doc: dict) -> dict[str, dict[str, Counter]]:
    """implementation -> check family -> status counts; checks never generated count as skips."""
    out: dict[str, dict[str, Counter]] = {name: defaultdict(Counter) for name in implementations(doc)}
    for r in doc["results"]:
        out.setdefault(r["implementation"], defaultdict(Counter))[r["check_family"]][r["status"]] += 1
    for name, families in doc["not_generated"].items():
        for family, counts in families.items():
            out.setdefault(name, defaultdict(Counter))[family]["skip"] += counts["checks"]
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


def dtypes(doc: dict) -> list[str]:
    """The dtypes the results ran in, in the order of ``doc["dtypes"]`` (the suite's vocabulary)."""
    present = {r["params"].get("dtype") for r in doc["results"]}
    return [d for d in doc["dtypes"] if d in present]


def worst_error_ratio(doc: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """(implementation, dtype) -> check family -> the worst comparison summary (``worst``: error ratio and
    the non-finite values behind an infinite one) over the checks that are held to the tolerance (passes
    and failures; registered deviations are expected to exceed it)."""
    out: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in doc["results"]:
        if r["status"] in ("pass", "fail") and r["worst"] is not None:
            cell = out[r["implementation"], r["params"].get("dtype", "")]
            seen = cell.get(r["check_family"])
            if seen is None or r["worst"]["error_ratio"] > seen["error_ratio"]:
                cell[r["check_family"]] = r["worst"]
    return out


def _one_value_behaviour(doc: dict) -> dict[str, str]:
    """What each implementation did when training on one value per channel (the checks with that role)."""
    out = {}
    for r in doc["results"]:
        if "one_value_per_channel" in r["roles"]:
            outcome = next((c for c in r["comparisons"] if c["quantity"] == "outcome"), None)
            if outcome is not None and outcome["raised"]:
                out[r["implementation"]] = f"raises {outcome['raised']}"
            elif outcome is not None:
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
    """Each registry entry that matched, with its registry, the implementations and number of checks it covered."""
    grouped: dict[tuple, dict] = {}
    for r in doc["results"]:
        if r["status"] == "deviation" and r["deviation"]:
            d = r["deviation"]
            key = (d["registry"], d["implementation"], str(d["check"]), str(d["when"]), d["observed"])
            entry = grouped.setdefault(key, {**d, "implementations": set(), "checks": 0})
            entry["implementations"].add(r["implementation"])
            entry["checks"] += 1
    return [{**e, "implementations": sorted(e["implementations"])} for e in grouped.values()]


def _size(params: dict) -> int:
    return math.prod(params.get("shape") or [0])


def _symptom(r: dict) -> tuple:
    """What went wrong, as facts: each failing quantity with how it failed (the exception type raised, the
    non-finite values found, or out of tolerance); a crash; otherwise the status alone."""
    if r["crashed"]:
        return ("crash",)
    return tuple(sorted(
        (c["quantity"], c["raised"] or ",".join(c["actual_nonfinite"]) or
         ("non-finite" if c["nonfinite_mismatches"] else "out of tolerance"))
        for c in r["comparisons"] if not c["passed"]
    ))


def failures(doc: dict) -> list[dict]:
    """Every distinct failure: the failed checks grouped by implementation, check, status, dtype and what
    went wrong (:func:`_symptom`), each group with its count, its smallest case (fewest elements) and, as
    ``when``, the values its checks share of the parameters that differ among that implementation's
    failures of that check (the layout aside): what sets the group apart."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in doc["results"]:
        if r["status"] in BAD_STATUSES:
            dtype = str(r["params"].get("dtype", ""))
            groups[r["implementation"], r["check"], r["status"], dtype, _symptom(r)].append(r)
    values: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for (implementation, check, *_), members in groups.items():
        for m in members:
            for k, v in m["params"].items():
                values[implementation, check][k].add(repr(v))
    out = []
    for key in sorted(groups):
        members = groups[key]
        smallest = min(members, key=lambda r: (_size(r["params"]), r["test"]))
        differ = {k for k, seen in values[key[:2]].items() if len(seen) > 1} - _LAYOUT
        shared = {k: v for k, v in smallest["params"].items()
                  if k in differ and all(m["params"].get(k) == v for m in members)}
        out.append({**smallest, "failing_comparisons": [c for c in smallest["comparisons"] if not c["passed"]],
                    "count": len(members), "when": shared})
    return out


def skips(doc: dict) -> dict[str, Counter]:
    """implementation -> what it was skipped for -> number of checks, those never generated included. A
    check without a capability counts once for each capability it lacks; any other skip counts under its
    reason."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in doc["results"]:
        if r["status"] == "skip":
            out[r["implementation"]].update(r["unsupported"] or [r["reason"]])
    for name, families in doc["not_generated"].items():
        for family in families.values():
            out[name].update(family["unsupported"])
    return out


def not_generated_total(doc: dict) -> int:
    return sum(family["checks"] for families in doc["not_generated"].values() for family in families.values())


def porting_checks(doc: dict) -> list[str]:
    """The checks the porting cheat-sheet rests on: those with the ``porting`` role."""
    return sorted({r["check"] for r in doc["results"] if "porting" in r["roles"]})


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
        if conv in conventions and "porting" in r["roles"]:
            if r["status"] == "pass":
                passed[conv, r["check"]] += 1
            elif r["status"] in BAD_STATUSES:
                broken.add(f"{r['check']} on {r['implementation']}")
    missing = [f"no passing {c} on {conv}" for conv in conventions for c in porting_checks(doc) if not passed[conv, c]]
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
