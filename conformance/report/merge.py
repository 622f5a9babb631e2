"""Merging the ``conformance.json`` of shards of one run (``pytest --shard i/n`` on several machines) into
one report, as if one run had made it.

Refused, with the offending test or implementation named: documents of different format versions or
project versions, an implementation with different versions, and the same test with different results.
A test in several shards with the same result is kept once. Run-specific fields are combined: ``created``
is the earliest, ``duration_s`` the sum, ``command`` the first shard's, the machine description the
first shard's; the resources measured (each shard's on its own machine) are left out.
"""

from __future__ import annotations

from pathlib import Path

from .results import STATUSES, dumps, load

__all__ = ["MergeError", "merge", "merge_files"]

# A result's fields that differ between two runs of the same test on different machines.
RUN_SPECIFIC = frozenset({"duration_s"})


class MergeError(ValueError):
    """The shards cannot be one run's."""


def _same(what: str, values: dict[str, object]) -> object:
    distinct = {repr(v) for v in values.values()}
    if len(distinct) > 1:
        listed = "; ".join(f"{source}: {value!r}" for source, value in values.items())
        raise MergeError(f"the shards disagree on {what}: {listed}")
    return next(iter(values.values()))


def _implementations(docs: dict[str, dict]) -> list[dict]:
    merged: dict[str, dict] = {}
    for source, doc in docs.items():
        for record in doc["implementations"]:
            held = merged.get(record["name"])
            if held is None or (record["version"] is not None and held["version"] is None):
                merged[record["name"]] = record  # a shard that ran it knows its versions
            elif record["version"] is not None and record["environment"] != held["environment"]:
                raise MergeError(f"implementation {record['name']}: {source} ran {record['environment']}, "
                                 f"another shard {held['environment']}")
    order = [r["name"] for doc in docs.values() for r in doc["implementations"]]
    return [merged[name] for name in dict.fromkeys(order)]


def _results(docs: dict[str, dict]) -> list[dict]:
    merged: dict[str, tuple[str, dict]] = {}
    for source, doc in docs.items():
        for result in doc["results"]:
            key = {k: v for k, v in result.items() if k not in RUN_SPECIFIC}
            if result["test"] in merged:
                first, held = merged[result["test"]]
                if {k: v for k, v in held.items() if k not in RUN_SPECIFIC} != key:
                    raise MergeError(f"{result['test']} ran in {first} ({held['status']}) and in {source} "
                                     f"({result['status']}) with different results")
                continue
            merged[result["test"]] = (source, result)
    return sorted((r for _, r in merged.values()), key=lambda r: (r["implementation"], r["test"]))


def merge(docs: dict[str, dict]) -> dict:
    """One document from shard documents keyed by where each came from (a path, for the messages)."""
    if not docs:
        raise MergeError("nothing to merge")
    _same("format_version", {s: d["format_version"] for s, d in docs.items()})
    _same("project version", {s: d["environment"].get("project_version") for s, d in docs.items()})
    _same("conventions", {s: d["conventions"] for s, d in docs.items()})
    first = next(iter(docs.values()))
    results = _results(docs)
    counts = {status: sum(r["status"] == status for r in results) for status in STATUSES}
    # Every shard collects every module: the same error may come from each, once per module here.
    errors = {e["node"]: e for d in docs.values() for e in d["collection_errors"]}
    # What each shard's processes took was measured on its own machine: no sum or maximum means the run's.
    environment = {**first["environment"], "resources": None}
    return {**first, "environment": environment, "created": min(d["created"] for d in docs.values()),
            "duration_s": round(sum(d["duration_s"] for d in docs.values()), 3),
            "implementations": _implementations(docs), "counts": counts, "results": results,
            "collection_errors": [errors[node] for node in sorted(errors)]}


def merge_files(paths: list[Path], directory: Path) -> tuple[dict, list[Path]]:
    """Merge the reports at ``paths`` into ``directory`` (JSON, then everything rendered from it)."""
    from .write import render

    doc = merge({str(p): load(p) for p in paths})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "conformance.json"
    path.write_text(dumps(doc))
    doc = load(path)
    return doc, [path, *render(doc, directory)]
