"""What the report says, computed from the JSON document alone (so a saved report re-renders the same):
the status matrix, worst error ratios, conventions side by side, deviations, smallest failures and the
porting cheat-sheet. Implementations a transform made into part of another's row (a ported pair) count in
that row."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from ..core.dtypes import ALL_DTYPES
from ..operators.builtin import OPERATORS
from .results import BAD_STATUSES

__all__ = ["KILLING_STATUSES", "conventions_table", "deviations", "dtypes", "exploration", "families", "failures",
           "freezing", "implementations", "involved", "kill_matrix", "matrix", "not_generated_total", "porting",
           "porting_dtypes", "porting_exceptions", "porting_matrix", "rows", "skips", "worst_error_ratio"]

# Check families (test modules) in reading order; any other family follows alphabetically.
_ORDER = ("conventions", "construction", "forward", "running_stats", "gradients", "second_order", "edge_cases",
          "contract", "large", "random", "exploration")

# The parameters that say where a case sits, not what it tests: a failure's group never splits on them.


def families(doc: dict) -> list[str]:
    present = {r["check_family"] for r in doc["results"]} | {f for fams in doc["not_generated"].values() for f in fams}
    return [f for f in _ORDER if f in present] + sorted(present - set(_ORDER))


def rows(doc: dict) -> dict[str, str]:
    """Every implementation's row in the report's tables: its own, or the one its derivation names (a ported
    pair counts in its framework implementation's row)."""
    return {i["name"]: (i["derivation"] or {}).get("row") or i["name"] for i in doc["implementations"]}


def implementations(doc: dict) -> list[str]:
    """The rows of the report's tables, in the document's order."""
    return list(dict.fromkeys(rows(doc).values()))


def matrix(doc: dict) -> dict[str, dict[str, Counter]]:
    """row -> check family -> status counts; checks never generated count as skips."""
    row = rows(doc)
    out: dict[str, dict[str, Counter]] = {name: defaultdict(Counter) for name in implementations(doc)}
    for r in doc["results"]:
        out.setdefault(row.get(r["implementation"], r["implementation"]), defaultdict(Counter))[
            r["check_family"]][r["status"]] += 1
    for name, fams in doc["not_generated"].items():
        for family, counts in fams.items():
            out.setdefault(row.get(name, name), defaultdict(Counter))[family]["skip"] += counts["checks"]
    return out


# A check kills a mutant when it fails it (or its worker dies); a harness error or a stale deviation does not.
KILLING_STATUSES = frozenset({"fail", "crash"})


def involved(doc: dict, result: dict) -> frozenset[str]:
    """The implementations a result's outcome depends on: its own, and those its implementation was derived
    from (porting: source and target)."""
    record = next(i for i in doc["implementations"] if i["name"] == result["implementation"])
    return frozenset({record["name"], *((record["derivation"] or {}).get("bases") or ())})


def kill_matrix(doc: dict) -> list[dict]:
    """Per implementation carrying a seeded bug (a mutant of the suite's self-test): its bug, and per check
    family the number of checks that failed it (``killed_by``); ``killed`` when any did. A check that
    involves other implementations (porting between two) counts only when all the others carry no seeded
    bug, so that the failure is this mutant's."""
    seeded = {i["name"] for i in doc["implementations"] if i["seeded_bug"] is not None}
    counts: dict[str, Counter] = {name: Counter() for name in seeded}
    for r in doc["results"]:
        if r["status"] in KILLING_STATUSES:
            parties = involved(doc, r) & seeded
            if len(parties) == 1:
                counts[next(iter(parties))][r["check_family"]] += 1
    out = []
    for impl in doc["implementations"]:
        if impl["seeded_bug"] is not None:
            killed_by = {f: counts[impl["name"]][f] for f in families(doc) if counts[impl["name"]][f]}
            out.append({"implementation": impl["name"], **impl["seeded_bug"], "killed_by": killed_by,
                        "killed": bool(killed_by)})
    return out


def dtypes(doc: dict) -> list[str]:
    """The dtypes the results ran in, in the order of ``doc["dtypes"]`` (the suite's vocabulary)."""
    present = {r["params"].get("dtype") for r in doc["results"]}
    return [d for d in doc["dtypes"] if d in present]


def worst_error_ratio(doc: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """(row, dtype) -> check family -> the worst comparison summary (``worst``: error ratio and the
    non-finite values behind an infinite one) over the checks that are held to the tolerance (passes and
    failures; registered deviations are expected to exceed it)."""
    row = rows(doc)
    out: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in doc["results"]:
        if r["status"] in ("pass", "fail") and r["worst"] is not None:
            cell = out[row.get(r["implementation"], r["implementation"]), r["params"].get("dtype", "")]
            seen = cell.get(r["check_family"])
            if seen is None or r["worst"]["error_ratio"] > seen["error_ratio"]:
                cell[r["check_family"]] = r["worst"]
    return out


def _behaviour(doc: dict) -> dict[str, dict[str, str]]:
    """implementation -> role -> what it did in the checks with that role (the operator's vocabulary gives
    roles: BatchNorm's training on one value per channel)."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in doc["results"]:
        for role in r["roles"]:
            outcome = next((c for c in r["comparisons"] if c["quantity"] == "outcome"), None)
            if outcome is not None and outcome["raised"]:
                out[r["implementation"]][role] = f"raises {outcome['raised']}"
            elif outcome is not None:
                out[r["implementation"]][role] = "returns an output, no error"
            elif r["status"] in ("pass", "fail"):
                out[r["implementation"]][role] = "returns beta" if r["status"] == "pass" else "returns a wrong output"
    return out


def conventions_table(doc: dict) -> dict[str, list[dict]]:
    """Per operator, per available implementation with a row of its own: its convention record's rules, as
    its operator's vocabulary words them, with the defaults observed in the framework (one table per
    operator: their rules differ)."""
    observed = {r["implementation"]: r["defaults"] for r in doc["results"] if r.get("defaults")}
    behaviour = _behaviour(doc)
    out: dict[str, list[dict]] = {}
    for impl in doc["implementations"]:
        if not impl["available"] or (impl["derivation"] or {}).get("row"):
            continue
        conv, operator = doc["conventions"][impl["convention"]], OPERATORS.get(impl["operator"])
        words = operator.vocabulary.conventions(conv, observed.get(impl["name"], {}), behaviour[impl["name"]]) \
            if operator else {}
        out.setdefault(impl["operator"], []).append({"implementation": impl["name"], "convention": conv["name"],
                                                     **words})
    return out


def deviations(doc: dict) -> list[dict]:
    """Each registry entry that matched, with its registry, the rows and number of checks it covered."""
    row = rows(doc)
    grouped: dict[tuple, dict] = {}
    for r in doc["results"]:
        if r["status"] == "deviation" and r["deviation"]:
            d = r["deviation"]
            key = (d["registry"], str(d["implementation"]), str(d["check"]), str(d["when"]), d["observed"])
            entry = grouped.setdefault(key, {**d, "implementations": set(), "checks": 0})
            entry["implementations"].add(row.get(r["implementation"], r["implementation"]))
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
    went wrong (:func:`_symptom`), each group with its count, its smallest case (fewest elements), the
    ``locator`` that selects its implementation again, and as ``unlike_passing`` what separates the group
    from the passing cases of the same implementation and check: each parameter (the shape aside) whose
    values in the group no passing case has, with those values (``None`` when no case of that check
    passed, so there is nothing to set the group apart from)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    passing: dict[tuple, list[dict]] = defaultdict(list)
    for r in doc["results"]:
        if r["status"] in BAD_STATUSES:
            dtype = str(r["params"].get("dtype", ""))
            groups[r["implementation"], r["check"], r["status"], dtype, _symptom(r)].append(r)
        elif r["status"] == "pass":
            passing[r["implementation"], r["check"]].append(r)
    locators = {i["name"]: i["locator"] for i in doc["implementations"]}
    out = []
    for key in sorted(groups):
        members = groups[key]
        smallest = min(members, key=lambda r: (_size(r["params"]), r["test"]))
        out.append({**smallest, "failing_comparisons": [c for c in smallest["comparisons"] if not c["passed"]],
                    "count": len(members), "locator": locators.get(key[0], ""),
                    "unlike_passing": _apart(members, passing[key[:2]])})
    return out


def _apart(members: list[dict], passed: list[dict]) -> dict[str, list] | None:
    """Each parameter whose values among ``members`` none of ``passed`` has: those values, in order."""
    if not passed:
        return None
    out = {}
    for k in sorted({k for m in members for k in m["params"]} - {"shape"}):
        failing = {repr(m["params"].get(k, "default")): m["params"].get(k, "default") for m in members}
        if failing.keys().isdisjoint(repr(p["params"].get(k, "default")) for p in passed):
            out[k] = [failing[v] for v in sorted(failing)]
    return out


def exploration(doc: dict) -> list[dict]:
    """The stateful exploration per implementation that ran it: its status, what it covered (sequences,
    steps, distinct states), and where it did not pass the (shrunk) sequence it stopped at with the
    ``locator`` that selects the implementation again."""
    locators = {i["name"]: i["locator"] for i in doc["implementations"]}
    return [{"implementation": r["implementation"], "status": r["status"], **(r.get("coverage") or {}),
             "sequence": None if r["status"] == "pass" else r.get("exploration"),
             "failing_comparisons": [c for c in r["comparisons"] if not c["passed"]],
             "deviation": r["deviation"], "locator": locators.get(r["implementation"], ""), "test": r["test"]}
            for r in doc["results"] if r["check"] == "exploration" and r["status"] != "skip"]


def skips(doc: dict) -> dict[str, Counter]:
    """row -> what it was skipped for -> number of checks, those never generated included. A check without a
    capability counts once for each capability it lacks; any other skip counts under its reason."""
    row = rows(doc)
    out: dict[str, Counter] = defaultdict(Counter)
    for r in doc["results"]:
        if r["status"] == "skip":
            out[row.get(r["implementation"], r["implementation"])].update(r["unsupported"] or [r["reason"]])
    for name, fams in doc["not_generated"].items():
        for family in fams.values():
            out[row.get(name, name)].update(family["unsupported"])
    return out


def not_generated_total(doc: dict) -> int:
    return sum(family["checks"] for fams in doc["not_generated"].values() for family in fams.values())


# -- porting (``transforms/porting.py``): pairs of a framework implementation and the reference -----------------

def _ports(doc: dict) -> list[tuple[dict, dict]]:
    """``(result, its implementation's record)`` for every ported pair's result."""
    records = {i["name"]: i for i in doc["implementations"]}
    return [(r, records[r["implementation"]]) for r in doc["results"]
            if (records[r["implementation"]]["derivation"] or {}).get("transform") == "port"]


def porting_dtypes(doc: dict) -> list[str]:
    """The dtypes the ported pairs ran at, widest first."""
    found = {r["params"]["dtype"] for r, _ in _ports(doc)}
    return [d for d in ALL_DTYPES if d in found] + sorted(found - set(ALL_DTYPES))


def _verdict(results: list[dict]) -> str:
    """One cheat-sheet cell: how many ports of a group were verified at one dtype, and what the rest did."""
    counts = Counter("bad" if r["status"] in BAD_STATUSES else r["status"] for r in results)
    ran = counts["pass"] + counts["deviation"] + counts["bad"]
    if not ran:
        return "not run"
    text = f"{counts['pass']}/{ran} verified"
    if counts["deviation"]:
        text += f"; {counts['deviation']} registered deviation(s)"
    if counts["bad"]:
        worst = max((r["worst"]["error_ratio"] for r in results if r["status"] in BAD_STATUSES and r["worst"]),
                    default=math.inf)
        text += f"; {counts['bad']} FAILED (worst error ratio {worst:.3g})"
    return text


def _users(doc: dict, convention: str) -> str:
    """The frameworks of the run whose implementations follow ``convention``."""
    found = sorted({i["framework"] for i in doc["implementations"] if i["convention"] == convention
                    and i["family"] != "reference" and not i["derivation"]})
    return f"{convention} ({', '.join(found)})" if found else convention


def porting(doc: dict) -> list[dict]:
    """The porting cheat-sheet: per ordered pair of conventions whose states were ported, who uses each, how
    each setting carries over (the operator's vocabulary) and, per dtype, how many ports were verified."""
    grouped: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r, record in _ports(doc):
        source, target = record["conventions"]
        grouped[source, target, record["operator"]].append(r)
    out = []
    for (source, target, operator), results in sorted(grouped.items()):
        words = OPERATORS[operator].vocabulary.translation(doc["conventions"][source], doc["conventions"][target]) \
            if operator in OPERATORS else {}
        by_dtype = {d: _verdict([r for r in results if r["params"]["dtype"] == d]) for d in porting_dtypes(doc)}
        out.append({"from": _users(doc, source), "to": _users(doc, target), **words, **by_dtype})
    return out


def settings_translation(doc: dict) -> dict[str, list[dict]]:
    """Per operator without porting checks (LayerNorm, GroupNorm: no running state to carry), how each setting
    carries between the conventions of the run's framework implementations, per ordered pair, as the operator's
    vocabulary words it from the records (whose defaults ``test_defaults_match_convention`` checks)."""
    used: dict[str, list[str]] = defaultdict(list)
    for impl in doc["implementations"]:
        operator = OPERATORS.get(impl["operator"])
        if (impl["family"] != "reference" and not impl["derivation"] and operator is not None
                and "porting" not in operator.grids and impl["convention"] not in used[impl["operator"]]):
            used[impl["operator"]].append(impl["convention"])
    out = {}
    for operator, names in used.items():
        translate = OPERATORS[operator].vocabulary.translation
        conventions = doc["conventions"]
        rows = [{"from": _users(doc, a), "to": _users(doc, b), **translate(conventions[a], conventions[b])}
                for a in sorted(names) for b in sorted(names) if a != b]
        if rows:
            out[operator] = rows
    return out


def freezing(doc: dict) -> list[dict]:
    """How each framework of the run freezes a layer for fine-tuning: per implementation the freeze transform
    made (``transforms/frozen.py``), the call, what a training call then runs (its environment's facts) and its
    checks' statuses. Every frozen layer must leave its parameters without gradients."""
    m = matrix(doc)
    out = []
    for impl in doc["implementations"]:
        if (impl["derivation"] or {}).get("transform") != "freeze":
            continue
        held = sum(m[impl["name"]].values(), Counter())
        env = impl["environment"]
        out.append({"framework": impl["framework"], "implementation": impl["name"], "freeze with": env["frozen"],
                    "a training call": env["frozen_training_call"], "pass": held["pass"],
                    "deviation": held["deviation"], "fail": sum(held[s] for s in BAD_STATUSES)})
    return out


_SYMBOL = {"pass": "ok", "deviation": "dev", "skip": "-"}


def porting_matrix(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Framework implementation x (``to C``: its trained state ported into convention C; ``from C``: a state
    of convention C ported into it); each cell has one mark per dtype (``porting_dtypes`` order): ok, dev (a
    registered deviation), FAIL, or - (not run)."""
    marks: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for r, record in _ports(doc):
        source, target = record["conventions"]
        out_of = record["derivation"]["bases"][0] == record["derivation"]["row"]
        column = f"to {target}" if out_of else f"from {source}"
        marks[record["derivation"]["row"], column][r["params"]["dtype"]] = _SYMBOL.get(r["status"], "FAIL")
    names = [n for n in implementations(doc) if any(n == row for row, _ in marks)]
    columns = sorted({column for _, column in marks}, key=lambda c: (c.split()[1], c.split()[0] == "from"))
    dtype_order = porting_dtypes(doc)
    table = [[n, *(" ".join(marks[n, c].get(d, "-") for d in dtype_order) for c in columns)] for n in names]
    return ["implementation", *columns], table


def porting_exceptions(doc: dict) -> list[dict]:
    """Every port at a dtype that was not verified, with its measured error and the reason."""
    out = []
    for r, record in _ports(doc):
        if r["status"] in ("pass", "skip"):
            continue
        worst = r["worst"]
        error = "no comparison" if not worst else (
            f"{worst['quantity']}: max abs error {worst['max_abs_error']:.3g}, error ratio {worst['error_ratio']:.3g}")
        reason = r["deviation"]["observed"] if r["deviation"] else r["reason"].splitlines()[0][:200]
        out.append({"source": record["derivation"]["bases"][0], "target": record["derivation"]["bases"][1],
                    "dtype": r["params"]["dtype"], "status": r["status"], "measured": error, "reason": reason,
                    "upstream": r["deviation"]["link"] if r["deviation"] else ""})
    return out
