"""What the report says, computed from the JSON document alone (so a saved report re-renders the same):
the status matrix, worst error ratios, conventions side by side, deviations, smallest failures and the
porting cheat-sheet."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from ..adapters.base import ALL_DTYPES
from .results import BAD_STATUSES

__all__ = ["KILLING_STATUSES", "cnn", "conventions_table", "deviations", "dtypes", "exported", "families", "failures",
           "involved", "kill_matrix", "matrix", "not_generated_total", "porting", "porting_dtypes",
           "porting_exceptions", "porting_matrix", "porting_results", "skips", "worst_error_ratio"]

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


# Checks that involve a second implementation name it in these parameters (porting: source -> target).
_PARTIES = ("source", "target")


def involved(result: dict) -> frozenset[str]:
    """The implementations a result's outcome depends on: its own, and those its parameters name."""
    return frozenset({result["implementation"], *(result["params"][k] for k in _PARTIES if k in result["params"])})


def kill_matrix(doc: dict) -> list[dict]:
    """Per implementation carrying a seeded bug (a mutant of the suite's self-test): its bug, and per check
    family the number of checks that failed it (``killed_by``); ``killed`` when any did. A check that
    involves other implementations (porting between two) counts only when all the others carry no seeded
    bug, so that the failure is this mutant's."""
    seeded = {i["name"] for i in doc["implementations"] if i["seeded_bug"] is not None}
    counts: dict[str, Counter] = {name: Counter() for name in seeded}
    for r in doc["results"]:
        if r["status"] in KILLING_STATUSES:
            parties = involved(r) & seeded
            if len(parties) == 1:
                counts[next(iter(parties))][r["check_family"]] += 1
    rows = []
    for impl in doc["implementations"]:
        if impl["seeded_bug"] is not None:
            killed_by = {f: counts[impl["name"]][f] for f in families(doc) if counts[impl["name"]][f]}
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


def _group(impl: dict) -> str:
    """The cheat-sheet's key for an implementation: its framework and its convention."""
    return f"{impl['framework']} ({impl['convention']})"


def _translation(src: dict, dst: dict) -> dict:
    """How each setting carries from convention ``src`` to ``dst`` (``conformance.porting.port``)."""
    if src["momentum_weights"] == dst["momentum_weights"]:
        momentum = "same meaning: keep m"
    else:
        momentum = f"m -> 1 - m (default {src['default_momentum']:g} -> {1 - src['default_momentum']:g})"
    if src["cumulative_momentum"] and not dst["cumulative_momentum"]:
        momentum += "; momentum=None (cumulative average) has no equivalent: pick a fixed m"
    eps = (f"same default {src['default_eps']:g}" if src["default_eps"] == dst["default_eps"]
           else f"pass eps={src['default_eps']:g} (target default {dst['default_eps']:g})")
    axis = (f"same default {src['channel_axis']}" if src["channel_axis"] == dst["channel_axis"]
            else f"move channels {src['channel_axis']} -> {dst['channel_axis']} in the inputs")
    variance = "copy as is: inference normalizes with it on both sides"
    if src["bessel"] != dst["bessel"]:
        stored = "biased" if dst["bessel"] is False else "unbiased n/(n-1)"
        variance += f"; further training stores the {stored} batch variance"
    return {"momentum": momentum, "eps": eps, "channel axis": axis, "running variance": variance}


def porting_results(doc: dict) -> list[dict]:
    """The porting pairs' results (``checks/test_porting.py``): one per source, target and dtype."""
    return [r for r in doc["results"] if r["check"] == "porting" and r["params"].get("target")]


def porting_dtypes(doc: dict) -> list[str]:
    """The dtypes the porting pairs ran at, widest first."""
    found = {r["params"]["dtype"] for r in porting_results(doc)}
    return [d for d in ALL_DTYPES if d in found] + sorted(found - set(ALL_DTYPES))


def _verdict(results: list[dict]) -> str:
    """One cheat-sheet cell: how many pairs of a group were verified at one dtype, and what the rest did."""
    counts = Counter("bad" if r["status"] in BAD_STATUSES else r["status"] for r in results)
    ran = counts["pass"] + counts["deviation"] + counts["bad"]
    if not ran:
        return "not run"
    text = f"{counts['pass']}/{ran} pairs verified"
    if counts["deviation"]:
        text += f"; {counts['deviation']} registered deviation(s)"
    if counts["bad"]:
        worst = max((r["worst"]["error_ratio"] for r in results if r["status"] in BAD_STATUSES and r["worst"]),
                    default=math.inf)
        text += f"; {counts['bad']} FAILED (worst error ratio {worst:.3g})"
    return text


def porting(doc: dict) -> list[dict]:
    """The porting cheat-sheet: per ordered pair of frameworks (with their conventions) whose pairs of
    implementations were ported, how each setting carries over, and per dtype how many pairs were verified."""
    impls = {i["name"]: i for i in doc["implementations"]}
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in porting_results(doc):
        source, target = impls.get(r["params"]["source"]), impls.get(r["params"]["target"])
        if source and target and _group(source) != _group(target):
            grouped[_group(source), _group(target)].append(r)
    conventions = {_group(i): i["convention"] for i in doc["implementations"]}
    rows = []
    for (a, b), results in sorted(grouped.items()):
        src, dst = doc["conventions"][conventions[a]], doc["conventions"][conventions[b]]
        by_dtype = {d: _verdict([r for r in results if r["params"]["dtype"] == d]) for d in porting_dtypes(doc)}
        rows.append({"from": a, "to": b, **_translation(src, dst), **by_dtype})
    return rows


_SYMBOL = {"pass": "ok", "deviation": "dev", "skip": "-"}


def porting_matrix(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Source x target implementations; each cell has one mark per dtype (``porting_dtypes`` order): ok,
    dev (a registered deviation), FAIL, or - (not run)."""
    marks: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for r in porting_results(doc):
        marks[r["params"]["source"], r["params"]["target"]][r["params"]["dtype"]] = _SYMBOL.get(r["status"], "FAIL")
    names = [n for n in implementations(doc) if any(n in pair for pair in marks)]
    dtypes = porting_dtypes(doc)
    rows = [[a, *("" if a == b else " ".join(marks[a, b].get(d, "-") for d in dtypes) for b in names)] for a in names]
    return names, rows


def porting_exceptions(doc: dict) -> list[dict]:
    """Every ported pair and dtype that was not verified, with its measured error and the reason."""
    rows = []
    for r in porting_results(doc):
        if r["status"] in ("pass", "skip"):
            continue
        worst = r["worst"]
        error = "no comparison" if not worst else (
            f"{worst['quantity']}: max abs error {worst['max_abs_error']:.3g}, error ratio {worst['error_ratio']:.3g}")
        reason = r["deviation"]["observed"] if r["deviation"] else r["reason"].splitlines()[0][:200]
        link = r["deviation"]["link"] if r["deviation"] else ""
        rows.append({"source": r["params"]["source"], "target": r["params"]["target"], "dtype": r["params"]["dtype"],
                     "status": r["status"], "measured": error, "reason": reason, "upstream": link})
    return rows


def cnn(doc: dict) -> list[dict]:
    """The seeds' CNN end to end (``checks/test_cnn.py``): per framework, its status and the error ratio of
    each compared quantity group (BN statistics, BN gradients, logits) against PyTorch float64."""
    rows = []
    for r in doc["results"]:
        if r["check"] != "cnn_one_step" or r["status"] == "skip":
            continue
        groups: dict[str, float] = {}
        for c in r["comparisons"]:
            q = c["quantity"]
            group = "logits" if q == "logits" else "BN gradients" if ".d" in q else "BN statistics"
            groups[group] = max(groups.get(group, 0.0), c["error_ratio"])
        cells = {g: f"{groups[g]:.3g}" if g in groups else "-" for g in ("BN statistics", "BN gradients", "logits")}
        rows.append({"framework": r["params"].get("framework", r["implementation"]), "status": r["status"], **cells})
    return rows


def exported(doc: dict) -> list[dict]:
    """PyTorch modules exported to ONNX (``checks/test_export.py``): per module, its status, the output's
    error ratio against the reference and whether the exporter wrote the attributes and nodes expected."""
    rows = []
    for r in doc["results"]:
        if r["check"] not in ("exported_inference", "exported_cnn") or r["status"] == "skip":
            continue
        by = {c["quantity"]: c for c in r["comparisons"]}
        output = by.get("y") or by.get("logits")
        written = [q for q in ("epsilon", "momentum", "batchnorm_nodes", "conv_nodes") if q in by]
        model = "seed 002 CNN" if r["check"] == "exported_cnn" else r["implementation"]
        rows.append({"model": model, "exporter": r["params"].get("exporter", ""),
                     "runtime": r["params"].get("runtime", ""), "status": r["status"],
                     "output error ratio": f"{output['error_ratio']:.3g}" if output else "-",
                     "written as expected": ", ".join(f"{q}: {'yes' if by[q]['passed'] else by[q]['note']}"
                                                      for q in written)})
    return rows
