"""Results: one record per test, built from pytest's reports, and the JSON document that holds them.

Statuses:
    pass             every comparison within its tolerance
    fail             a comparison out of tolerance, or an unexpected exception
    crash            the implementation's process died (segfault, abort, out of memory): ``crashed``
    deviation        failed as a registry entry says it does (strict xfail)
    unexpected_pass  a registry entry matched but the check passed: the entry is stale
    skip             not run, with the reason (framework missing, combination unsupported)
    error            the harness itself failed (fixture setup or teardown)

The document's layout is ``conformance.schema.json`` (JSON Schema, next to this module); its
``format_version`` changes whenever a field changes meaning or goes away.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters.base import ALL_DTYPES, Implementation

__all__ = ["FORMAT", "FORMAT_VERSION", "SCHEMA", "STATUSES", "Result", "document", "dumps", "finish_status",
           "implementation_record", "load", "test_id", "text"]

FORMAT = "batchnorm-conformance-report"
FORMAT_VERSION = 6
SCHEMA = Path(__file__).with_name("conformance.schema.json")
STATUSES = ("pass", "deviation", "fail", "crash", "unexpected_pass", "error", "skip")
BAD_STATUSES = frozenset({"fail", "crash", "unexpected_pass", "error"})


def test_id(nodeid: str) -> str:
    """The node id pytest accepts back: without the ``@group`` xdist's ``--dist loadgroup`` appends."""
    head, at, group = nodeid.rpartition("@")
    return head if at and "]" not in group else nodeid


def text(longrepr: Any) -> str:
    """The one-paragraph message of a failure or skip (pytest gives tuples, objects or strings)."""
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # a skip: (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    return str(crash.message if crash is not None else longrepr).strip()


@dataclass
class Result:
    """One test of one implementation."""

    test: str
    check_family: str = ""
    check: str = ""
    implementation: str | None = None
    params: dict = field(default_factory=dict)
    status: str = "error"
    reason: str = ""
    deviation: dict | None = None
    defaults: dict | None = None
    comparisons: list[dict] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # what a skip was for (``dtype float16``, ...)
    roles: list[str] = field(default_factory=list)  # what the report reads the check for (one_value_per_channel)
    crashed: bool = False  # the implementation's process died during the test
    exploration: dict | None = None  # the stateful exploration's last (after a failure: shrunk) sequence
    coverage: dict | None = None  # what the stateful exploration covered: sequences, steps, states
    duration_s: float = 0.0
    environment: dict | None = None  # goes into the implementation's record, not the result's
    phases: dict[str, tuple[str, str, bool]] = field(default_factory=dict)

    @classmethod
    def start(cls, nodeid: str) -> Result:
        return cls(test=nodeid)

    def update(self, report: Any) -> None:
        """Take one phase's report (setup, call, teardown); properties are cumulative, keep the last."""
        self.duration_s += report.duration
        xfail = hasattr(report, "wasxfail")
        self.phases[report.when] = (report.outcome, text(report.longrepr) or getattr(report, "wasxfail", ""), xfail)
        comparisons = []
        for name, value in report.user_properties:
            if name == "comparison":
                comparisons.append(value)
            elif name in ("check", "check_family", "implementation", "environment", "params", "deviation", "defaults",
                          "unsupported", "roles", "crashed", "exploration", "coverage"):
                setattr(self, name, value)
        self.comparisons = comparisons

    def worst(self) -> dict | None:
        """The comparison that came closest to (or went furthest past) its tolerance."""
        return max(self.comparisons, key=lambda c: c["error_ratio"], default=None)

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("environment", "phases")}
        worst = self.worst()
        data["worst"] = None if worst is None else {
            "quantity": worst["quantity"], "error_ratio": worst["error_ratio"], "max_abs_error": worst["max_abs_error"],
            "max_rel_error": worst["max_rel_error"], "tolerance": worst["tolerance"],
            "actual_nonfinite": worst["actual_nonfinite"],
        }
        return data


def finish_status(result: Result) -> None:
    """Set ``status`` and ``reason`` from the phases seen (called after teardown)."""
    setup = result.phases.get("setup", ("passed", "", False))
    call = result.phases.get("call")
    teardown = result.phases.get("teardown", ("passed", "", False))
    if setup[0] != "passed":
        phase = setup
        status = "skip" if setup[0] == "skipped" else "error"
    elif call is None:
        phase, status = teardown, "error"
    elif call[0] == "skipped":
        phase, status = call, "deviation" if call[2] else "skip"
    elif call[0] == "failed":
        phase = call
        status = "unexpected_pass" if call[1].startswith("[XPASS(strict)]") else "fail"
    else:
        phase, status = call, "unexpected_pass" if call[2] else "pass"
    if teardown[0] == "failed":
        phase, status = teardown, "error"
    if status in ("fail", "error") and result.crashed:
        status = "crash"
    result.status, result.reason = status, phase[1]


def implementation_record(impl: Implementation, environment: dict | None) -> dict:
    """Who was checked: name, operator, framework and version, backend, device(s), convention, how a
    transform made it (``derivation``: transform, the implementations it wraps, the row the report shows it
    in; null for a plain one), the ``--impl`` value that selects it again (``locator``), and whether it
    could run here (``missing`` says why not: a framework not installed, no CUDA device). The device is
    the one the framework reports running on (``environment["device"]``), else the one the adapter declares."""
    environment = environment or {}
    missing = impl.missing()
    return {
        "name": impl.name,
        "locator": impl.locator,
        "operator": impl.operator.name,
        "family": impl.family,
        "framework": impl.framework,
        "convention": impl.convention.name,
        "conventions": [c.name for c in impl.conventions()],
        "derivation": None if impl.derivation is None else asdict(impl.derivation),
        "version": environment.get("version"),
        "backend": environment.get("backend"),
        "environment": environment,
        "devices": [environment.get("device") or impl.device],
        "available": missing is None,
        "missing": missing or "",
        "seeded_bug": None if impl.seeded_bug is None else asdict(impl.seeded_bug),
    }


def document(implementations: list[dict], conventions: dict[str, dict], results: list[Result], started: datetime,
             duration_s: float, command: list[str], not_generated: dict | None = None,
             collection_errors: list[dict] | None = None, resources: dict | None = None) -> dict:
    """The whole report as plain data (see ``conformance.schema.json``). ``conventions``: every convention
    record of the run by name (:meth:`reference.Convention.as_dict`). ``not_generated``: implementation ->
    check family -> ``{"checks": n, "unsupported": {capability: n}}``, the checks never generated because
    the implementation cannot build their case (``conformance.harness.plugin.NOT_GENERATED``).
    ``collection_errors``: each test module pytest could not collect (``node``, ``reason``), whose checks are
    therefore missing. ``resources``: what the run's process tree took (``TreeSampler``: peak PSS, peak
    processes, wall time), where it was measured."""
    counts = {status: 0 for status in STATUSES}
    for r in results:
        counts[r.status] += 1
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": started.isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "command": command,
        "environment": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "project_version": _project_version(),
            "pythonhashseed": os.environ.get("PYTHONHASHSEED", ""),
            "seed": "inputs seeded by adler32 of the case id; Hypothesis derandomized (profile 'deterministic')",
            "resources": resources,
        },
        "conventions": conventions,
        "dtypes": list(ALL_DTYPES),
        "implementations": implementations,
        "counts": counts,
        "collection_errors": collection_errors or [],
        "results": [r.as_dict() for r in results],
        "not_generated": not_generated or {},
    }


def _project_version() -> str:
    """This project's version, so that shards of different versions are never merged."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batchnorm-conformance")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _finite(value: Any) -> Any:
    """JSON has no infinities or NaN: they are written as the strings "inf", "-inf" and "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_NUMBERS = frozenset({"error_ratio", "max_abs_error", "max_rel_error", "tolerance"})


def _numbers(value: Any) -> Any:
    """Undo :func:`_finite` for the error fields (and only there: ``data = "inf"`` is a case's name)."""
    if isinstance(value, dict):
        return {k: float(v) if k in _NUMBERS and isinstance(v, str) else _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def dumps(doc: dict) -> str:
    return json.dumps(_finite(doc), sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"


def load(path: Path) -> dict:
    """A written report, with "inf"/"nan" strings turned back into floats. A ValueError names the file and
    what it is instead: not JSON, JSON but no report, a report of another format version."""
    try:
        doc = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a conformance report (no \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {doc.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    return _numbers(doc)
