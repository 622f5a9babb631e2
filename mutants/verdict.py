"""The mutation self-test's verdict, from the facts of a conformance report's JSON (never its text).

    python -m mutants.verdict report-mutants/conformance.json [--readme docs/mutants.md]

Exit status 0 when the run is complete, every correct baseline passed every check it ran, and every
mutant failed at least one check; 1 otherwise, listing each problem; 2 when there is no readable report.
``--readme`` also writes the mutant catalogue with its kill matrix into that file (docs/mutants.md), between
its ``mutants:begin``/``mutants:end`` markers.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from conformance.report.__main__ import update_readme
from conformance.report.blocks import Text, to_markdown
from conformance.report.content import kill_matrix_table
from conformance.report.results import load
from conformance.report.summary import involved, kill_matrix, rows

__all__ = ["judge", "main"]

BEGIN, END = "<!-- mutants:begin -->", "<!-- mutants:end -->"
# What a correct baseline may show: a pass, or a skip (a check or option no NumPy layer has, e.g. Flax's).
BASELINE_STATUSES = frozenset({"pass", "skip"})


def _statuses(doc: dict) -> tuple[dict[str, Counter], dict[str, Counter]]:
    """Per row of the report (a ported pair counts in its framework implementation's): the statuses of all its
    results, and of those that involve no mutant (a check between a baseline and a mutant fails because of the
    mutant)."""
    seeded = {i["name"] for i in doc["implementations"] if i["seeded_bug"] is not None}
    row = rows(doc)
    every: dict[str, Counter] = defaultdict(Counter)
    clean: dict[str, Counter] = defaultdict(Counter)
    for r in doc["results"]:
        every[row[r["implementation"]]][r["status"]] += 1
        if not involved(doc, r) & seeded:
            clean[row[r["implementation"]]][r["status"]] += 1
    return every, clean


def judge(doc: dict) -> list[str]:
    """Every reason the self-test failed; empty when it passed."""
    problems = [f"collection error in {e['node']}: its checks did not run" for e in doc["collection_errors"]]
    baselines = {i["convention"]: i["name"] for i in doc["implementations"]
                 if i["seeded_bug"] is None and not (i["derivation"] or {}).get("row")}
    statuses, baseline_only = _statuses(doc)
    mutants = [i for i in doc["implementations"] if i["seeded_bug"] is not None]
    if not baselines:
        problems.append("no correct baseline (an implementation without a seeded bug) in the report")
    if not mutants:
        problems.append("no mutant (an implementation with a seeded bug) in the report")
    for impl in doc["implementations"]:
        if not impl["available"]:
            problems.append(f"{impl['name']} could not run: {impl['missing']}")
    for name in baselines.values():
        wrong = {s: n for s, n in baseline_only[name].items() if s not in BASELINE_STATUSES}
        if wrong:
            problems.append(f"baseline {name} is not clean: {', '.join(f'{n} {s}' for s, n in sorted(wrong.items()))}")
        if not statuses[name]["pass"]:
            problems.append(f"baseline {name} passed no check")
    for impl in mutants:
        name, baseline = impl["name"], baselines.get(impl["convention"])
        if baseline is None:
            problems.append(f"{name}: no baseline of its convention {impl['convention']!r} to compare with")
        elif sum(statuses[name].values()) != sum(statuses[baseline].values()):
            problems.append(f"{name}: incomplete, {sum(statuses[name].values())} results where {baseline} has "
                            f"{sum(statuses[baseline].values())}")
        if statuses[name]["error"]:
            problems.append(f"{name}: {statuses[name]['error']} checks errored in the harness")
    problems += [f"{row['implementation']} survived every check ({row['bug']})"
                 for row in kill_matrix(doc) if not row["killed"]]
    return problems


def readme_section(doc: dict) -> str:
    rows = kill_matrix(doc)
    killed = sum(r["killed"] for r in rows)
    intro = Text(f"From `tox -e mutants` on {doc['created'][:10]}: {killed} of {len(rows)} mutants killed; "
                 f"a cell counts the checks of a family that failed the mutant.")
    return to_markdown([intro, kill_matrix_table(doc)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutants.verdict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="conformance.json of the self-test's run")
    parser.add_argument("--readme", type=Path, help="README whose mutant catalogue to regenerate")
    args = parser.parse_args(argv)
    try:
        doc = load(args.report)
    except (OSError, ValueError) as exc:  # missing, unreadable, or another format_version
        print(f"mutation self-test: no usable report: {exc}", file=sys.stderr)
        return 2
    problems = judge(doc)
    rows = kill_matrix(doc)
    for problem in problems:
        print(f"mutation self-test: {problem}", file=sys.stderr)
    if args.readme:
        update_readme(args.readme, doc, (BEGIN, END), readme_section)
    print(f"mutation self-test: {sum(r['killed'] for r in rows)} of {len(rows)} mutants killed, "
          f"{'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
