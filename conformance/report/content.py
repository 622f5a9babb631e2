"""The report's sections, as blocks, from the JSON document: one source for Markdown and HTML."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import PurePosixPath

from ..core.comparison import describe_nonfinite
from . import heatmap, summary
from .blocks import Block, Figure, Heading, Items, Table, Text
from .results import BAD_STATUSES

__all__ = ["HEATMAP_PNG", "blocks", "describe", "kill_matrix_table", "matrix_table", "replay", "verdict"]

HEATMAP_PNG = "heatmap.png"

_READING = (
    "How to read it: each cell of the summary matrix counts checks as pass / deviation / fail. A deviation "
    "is a difference a registry (`conformance/deviations.toml`, or a `--deviations` file: the Deviations "
    "table names which) explains, with its upstream link; a fail "
    "is anything else, and comes with the smallest case that shows it. Conventions (momentum meaning, eps, "
    "channel axis, Bessel correction) are translated before comparing, never counted as differences. "
    "The error ratio is the worst |error| / tolerance of a family's passing or failing checks: up to 1 passes, and "
    "the closer to 1, the closer the implementation came to failing (the tolerance model is in "
    "`conformance/tolerances.py`)."
)


def _counts(counter) -> tuple[int, int, int]:
    return counter["pass"], counter["deviation"], sum(counter[s] for s in BAD_STATUSES)


def verdict(doc: dict) -> str:
    counts = doc["counts"]
    bad = {s: counts[s] for s in sorted(BAD_STATUSES) if counts.get(s)}
    ran = sum(counts.values()) - counts["skip"]
    if not bad:
        return f"All {ran} checks that ran pass or deviate as registered ({counts['deviation']} deviations)."
    return f"{sum(bad.values())} of {ran} checks went wrong: " + ", ".join(f"{n} {s}" for s, n in bad.items()) + "."


def matrix_table(doc: dict) -> Table:
    """Implementation x check family: pass / deviation / fail counts."""
    families = summary.families(doc)
    m = summary.matrix(doc)
    available = {i["name"]: i["available"] for i in doc["implementations"]}
    rows = []
    for name in summary.implementations(doc):
        cells = []
        for family in families:
            counter = m[name][family]
            if not available[name]:
                cells.append("unavailable")
            elif not counter:
                cells.append("-")
            elif sum(_counts(counter)) == 0:
                cells.append("skipped")
            else:
                cells.append("%d / %d / %d" % _counts(counter))
        rows.append([name, *cells])
    return Table(["implementation", *families], rows, id="matrix")


def kill_matrix_table(doc: dict) -> Table:
    """Mutant x check family: how many checks of each family failed the mutant (``-``: none)."""
    families = summary.families(doc)
    rows = [
        [row["implementation"], row["bug"], f"{row['origin']}: {row['link']}",
         *(str(row["killed_by"].get(f, "-")) for f in families), "killed" if row["killed"] else "SURVIVED"]
        for row in summary.kill_matrix(doc)
    ]
    return Table(["mutant", "bug class", "where it happened", *families, "verdict"], rows, id="kill-matrix")


def _mutants(doc: dict) -> list[Block]:
    """The mutation self-test's section, where the run has mutants (implementations with a seeded bug)."""
    rows = summary.kill_matrix(doc)
    if not rows:
        return []
    survivors = [r["implementation"] for r in rows if not r["killed"]]
    return [
        Heading(2, "Mutation self-test: kill matrix"),
        Text(f"Each mutant carries one bug a real BatchNorm has had; a cell counts the checks of a family that "
             f"failed it. {len(rows) - len(survivors)} of {len(rows)} mutants killed"
             + (f"; survivors: {', '.join(survivors)}." if survivors else ".")),
        kill_matrix_table(doc),
    ]


def _implementations(doc: dict) -> Table:
    m = summary.matrix(doc)
    rows = []
    for impl in doc["implementations"]:
        if (impl["derivation"] or {}).get("row"):
            continue  # counted in the row it names
        total = sum(m[impl["name"]].values(), Counter())
        p, d, f = _counts(total)
        version = (impl["version"] or "") if impl["available"] else f"unavailable: {impl['missing']}"
        derived = impl["derivation"]
        made = f"{derived['transform']} of {', '.join(derived['bases'])}" if derived else ""
        rows.append([impl["name"], impl["operator"], impl["framework"], version, impl["backend"] or "",
                     ", ".join(impl["devices"]), _world(impl["environment"]), impl["convention"], made, str(p), str(d),
                     str(f), str(total["skip"])])
    return Table(["implementation", "operator", "framework", "version", "backend", "devices", "world", "convention",
                  "made by", "pass", "deviation", "fail", "skip"], rows, id="implementations")


def _world(environment: dict) -> str:
    """A distributed implementation's engine, world size and transport (``adapters/synchronized.py``)."""
    if "world_size" not in environment:
        return ""
    return f"{environment['engine']}, {environment['world_size']} ranks, {environment['transport']}"


def _error_ratios(doc: dict) -> list[Block]:
    """One row per implementation and dtype (float64 headroom says nothing about bfloat16's)."""
    worst = summary.worst_error_ratio(doc)
    measured = {f for values in worst.values() for f in values}
    families = [f for f in summary.families(doc) if f in measured]  # not the families without comparisons
    keys = [(name, dtype) for name in summary.implementations(doc) for dtype in summary.dtypes(doc)
            if (name, dtype) in worst]
    labels = [f"{name} {dtype}" for name, dtype in keys]
    rows, styles = [], []
    for (name, dtype), row_label in zip(keys, labels):
        cells = [worst[name, dtype].get(f) for f in families]
        rows.append([name, dtype, *(heatmap.cell_label(c) for c in cells)])
        styles.append(["", "", *(f"background:{heatmap.colour(c and c['error_ratio'])}" for c in cells)])
    png = heatmap.png(labels, families, {row_label: worst[key] for key, row_label in zip(keys, labels)})
    return [
        Table(["implementation", "dtype", *families], rows, id="heatmap", styles=styles),
        Figure(png, "heatmap of worst error / tolerance", "heatmap-png", HEATMAP_PNG),
    ]


def _table(rows: list[dict], id: str, drop: tuple[str, ...] = ()) -> Table:
    header = [k for k in rows[0] if k not in drop] if rows else []
    return Table(header, [[str(r[k]) for k in header] for r in rows], id=id)


def _deviations(doc: dict) -> list[Block]:
    entries = summary.deviations(doc)
    if not entries:
        return [Text("No registered deviation matched.")]
    rows = [
        [", ".join(e["implementations"]), e["check"] if isinstance(e["check"], str) else ", ".join(e["check"]),
         json.dumps(e["when"], sort_keys=True) if e["when"] else "any",
         e["observed"], e["reason"], e["link"] or "(none found)", e["registry"], str(e["checks"])]
        for e in entries
    ]
    return [Table(["implementations", "check", "when", "observed", "why", "upstream", "registry", "checks"], rows,
                  id="deviations")]


def _case(params: dict) -> str:
    shape = "x".join(map(str, params.get("shape") or [])) or "?"
    rest = {k: v for k, v in sorted(params.items()) if k not in ("shape", "dtype", "rank")}
    return ", ".join([f"shape {shape}", str(params.get("dtype", "?")), *(f"{k}={v}" for k, v in rest.items())])


def _failures(doc: dict) -> list[Block]:
    found = summary.failures(doc)
    if not found:
        return [Text("None.")]
    rows = []
    for f in found:
        what = "; ".join(describe(c) for c in f["failing_comparisons"]) or f["reason"].splitlines()[0][:300]
        rows.append([f["implementation"], f["check"], f["status"], _apart(f["unlike_passing"]), str(f["count"]),
                     _case(f["params"]), what, replay(f["test"], f["locator"])])
    return [Table(["implementation", "check", "status", "unlike its passing cases", "checks", "smallest case",
                   "what went wrong", "replay"], rows, id="failures")]


def _apart(unlike: dict[str, list] | None) -> str:
    if unlike is None:
        return "no case of this check passes"
    return "; ".join(f"{k}={v[0]}" if len(v) == 1 else f"{k} in {', '.join(map(str, v))}"
                     for k, v in unlike.items()) or "no single parameter"


def replay(test: str, locator: str) -> str:
    """The command that runs the one check again, from any folder where ``locator`` imports: the node id as
    a module of the installed ``conformance.checks``, however the run named its file."""
    path, _, name = test.partition("::")
    module = f"conformance.checks.{PurePosixPath(path).stem}::{name}"
    return f"pytest --pyargs {shlex.quote(module)} --impl {shlex.quote(locator)}"


def describe(c: dict) -> str:
    """What went wrong in one comparison: its note, the non-finite values, or the error against the tolerance."""
    if c["note"]:
        return f"{c['quantity']}: {c['note']}"
    if c["nonfinite_mismatches"]:
        return describe_nonfinite(c["quantity"], c["nonfinite_mismatches"], c["actual_nonfinite"],
                                  c["expected_nonfinite"])
    return (f"{c['quantity']}: max abs error {c['max_abs_error']:.3g} vs tolerance {c['tolerance']:.3g} "
            f"(error ratio {heatmap.label(c['error_ratio'])})")


def _step(step: dict) -> str:
    """One step of an explored sequence, as the report shows it."""
    what = {k: v for k, v in step.items() if k not in ("step", "size", "shape", "x_memory", "dy_memory")}
    if "shape" in step:
        what = {"shape": "x".join(map(str, step["shape"])), "memory": f"{step['x_memory']}/{step['dy_memory']}",
                **what}
    return f"{step['step']}({', '.join(f'{k}={v}' for k, v in what.items())})"


def _exploration(doc: dict) -> list[Block]:
    rows = summary.exploration(doc)
    if not rows:
        return []
    table = [[r["implementation"], r["status"], str(r.get("sequences", "")), str(r.get("steps", "")),
              str(r.get("states", ""))] for r in rows]
    blocks: list[Block] = [
        Heading(2, "Stateful exploration"),
        Text("Sequences of calls driven against the reference in lockstep (`checks/test_exploration.py`): sequences "
             "and steps run per implementation (shrinking's replays included) and the distinct states met. Below, "
             "each sequence that did not pass, shrunk, with the command that replays it."),
        Table(["implementation", "status", "sequences", "steps", "distinct states"], table, id="exploration"),
    ]
    for r in rows:
        if (sequence := r["sequence"]) is None:
            continue
        what = "; ".join(describe(c) for c in r["failing_comparisons"]) or (r["deviation"] or {}).get("observed", "")
        command = f"BN_EXPLORATION={sequence['profile']} {replay(r['test'], r['locator'] or sequence['impl'])}"
        blocks += [Heading(3, f"{r['implementation']} ({r['status']})"),
                   Text(f"Layer {sequence['case']}; {what}"),
                   Items([_step(step) for step in sequence["steps"]]),
                   Text(f"Replay: `{command}`")]
    return blocks


def _settings(doc: dict) -> list[Block]:
    """The operators without ported state: how their settings carry between the frameworks of the run."""
    blocks: list[Block] = []
    for operator, rows in summary.settings_translation(doc).items():
        blocks += [Heading(3, f"Settings between frameworks: {operator}"),
                   Text(f"{operator} has no porting checks: how each setting carries between the conventions of "
                        "the run, read off the records (whose defaults every run checks against the constructors)."),
                   _table(rows, f"settings-{operator}")]
    return blocks


def _freezing(doc: dict) -> list[Block]:
    """How to freeze a layer on each side of a port, from the run's frozen implementations."""
    rows = summary.freezing(doc)
    if not rows:
        return []
    return [Heading(3, "How to freeze"),
            Text("Freezing a trained layer on the target side for fine-tuning (`transforms/frozen.py`): the call per "
                 "framework and what a training step then runs (inference: running statistics, no update; "
                 "training: batch statistics and updated running statistics), checked as implementations. A frozen "
                 "layer's parameters get no gradient."),
            _table(rows, "freezing")]


def _porting(doc: dict) -> list[Block]:
    """The porting cheat-sheet and matrix, from the porting pairs' results (``checks/test_porting.py``), and the
    settings of the operators without state to port."""
    head = [Heading(2, "Porting cheat-sheet")]
    rows = summary.porting(doc)
    if not rows:
        return [*head, Text("Nothing was ported in this run (the porting checks pair every selected implementation "
                            "with the reference in each convention)."), *_settings(doc), *_freezing(doc)]
    dtypes = summary.porting_dtypes(doc)
    header, matrix = summary.porting_matrix(doc)
    exceptions = summary.porting_exceptions(doc)
    return [
        *head,
        Text("Carrying a trained BatchNorm (gamma, beta, running statistics, eps, momentum) from one convention to "
             "another with `reference.port`, the recipe below. Every implementation was ported both ways, out of "
             "its convention into each other one and in from each, with the reference on the other side: trained "
             "three steps, ported at its first inference call, then used there (inference, the eps and momentum the "
             "target holds, one further training step), against the reference in the source's convention and then "
             "in the target's, built from the case rather than the ported settings. Between two frameworks a port "
             "is the two halves, meeting in a float64 state. The dtype columns count the verified ports."),
        _table(rows, "porting"),
        Heading(3, "Porting matrix"),
        Text(f"`to C`: the implementation's trained state ported into convention C; `from C`: a state of convention "
             f"C ported into it. One mark per dtype ({', '.join(dtypes)}): ok (verified), dev (registered deviation), "
             "FAIL, - (not run: unsupported)."),
        Table(header, matrix, id="porting-matrix"),
        Heading(3, "Ports not verified"),
        _table(exceptions, "porting-exceptions") if exceptions else Text("None: every port that ran was verified."),
        *_settings(doc),
        *_freezing(doc),
    ]


def blocks(doc: dict) -> list[Block]:
    env = doc["environment"]
    counts = doc["counts"]
    skips = summary.skips(doc)
    return [
        Heading(1, "BatchNorm conformance report"),
        Text(f"{doc['created']}, {doc['duration_s']:.0f} s; {env['platform']}, {env['cpu_count']} CPUs, Python "
             f"{env['python']}, NumPy {env['numpy']}. {verdict(doc)}"),
        Items([f"{status}: {n}" for status, n in counts.items()]),
        *([Text(f"Besides, {generated} checks were not generated: cases the implementation cannot build (counted "
                "as skips in the tables below).")] if (generated := summary.not_generated_total(doc)) else []),
        Text(_READING),
        Heading(2, "Implementations"),
        _implementations(doc),
        Heading(2, "Summary matrix (pass / deviation / fail)"),
        matrix_table(doc),
        *_mutants(doc),
        Heading(2, "Error ratio: worst |error| / tolerance"),
        *_error_ratios(doc),
        Heading(2, "Conventions side by side"),
        Text("Rules of each implementation's declared convention, with the defaults its constructor really has "
             "(`test_defaults_match_convention`) and what it did when training on one value per channel."),
        *(_table(rows, "conventions" if operator == "batchnorm" else f"conventions-{operator}")
          for operator, rows in summary.conventions_table(doc).items()),
        *_porting(doc),
        *_exploration(doc),
        Heading(2, "Deviations"),
        *_deviations(doc),
        Heading(2, "Failures"),
        *_failures(doc),
        Heading(2, "Skipped"),
        Text("Checks not run, per implementation: what it does not support (number of checks), or why it "
             "could not run at all."),
        Table(["implementation", "skipped for"],
              [[name, "; ".join(f"{what} ({n})" for what, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))]
               for name, c in skips.items()], id="skips") if skips else Text("None."),
    ]
