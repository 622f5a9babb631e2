"""The pytest plugin behind ``pytest conformance --report DIR``: it turns test reports into results,
shows progress per implementation while the suite runs, and writes the report when the session ends.

It runs in the pytest process that sees every test report (the xdist controller under ``-n``), so it
reads only what reports carry: outcome, and the facts ``conformance.harness.plugin`` attaches as
``user_properties`` (implementation, environment, params, comparisons, deviation, defaults, unsupported,
roles, crashed); the failure text is kept as the reason, never parsed.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ..adapters.base import Implementation
from .content import verdict
from .results import Result, document, finish_status, implementation_record, test_id, text
from .write import write_report

__all__ = ["ReportPlugin"]


class ReportPlugin:
    def __init__(self, config: pytest.Config, impls: list[Implementation], not_generated: Callable[[object], dict],
                 resources: Callable[[], dict] | None = None) -> None:
        """``not_generated(node=None)``: the checks never generated, of this process or of the xdist worker
        ``node`` (the harness's facts, :data:`conformance.harness.plugin.NOT_GENERATED`); ``resources()``: what
        the run's process tree took, asked for once at the end (the harness measures it)."""
        if importlib.util.find_spec("matplotlib") is None:  # refused now, not after the whole run
            raise pytest.UsageError("--report needs matplotlib for its heatmap: install the report extra "
                                    "(pip install 'batchnorm-conformance[report]')")
        self.config, self._not_generated, self._resources = config, not_generated, resources
        self.directory = Path(config.getoption("--report"))
        self.impls = impls
        # Progress only (the xdist controller sees collected test ids, not items): longest names first, so
        # "torch.BatchNorm2d_channels_last" never counts as "torch.BatchNorm2d". Results name theirs as a fact.
        self._names = sorted((i.name for i in impls), key=len, reverse=True)
        # Progress is per row of the report: a derived implementation shown in another's row counts there.
        self._rows = {i.name: (i.derivation.row if i.derivation and i.derivation.row else i.name) for i in impls}
        self.results: dict[str, Result] = {}
        self.collection_errors: dict[str, str] = {}  # every xdist worker reports the same ones
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.started = datetime.now(timezone.utc)
        self.clock = time.perf_counter()
        self.not_generated: dict | None = None  # from the first xdist worker that finishes, else this process

    # -- progress --------------------------------------------------------------------------------
    def _implementation_of(self, nodeid: str) -> str | None:
        """The report row a collected test id counts in (its implementation's, or the one it is shown in)."""
        params = test_id(nodeid).partition("[")[2]
        name = next((n for n in self._names if params == f"{n}]" or params.startswith(f"{n}-")), None)
        return self._rows.get(name, name)

    def _count(self, nodeids: list[str]) -> None:
        if self.totals:
            return  # every xdist worker collects the same tests
        for nodeid in nodeids:
            if name := self._implementation_of(nodeid):
                self.totals[name] = self.totals.get(name, 0) + 1
        order = list(dict.fromkeys(self._rows[i.name] for i in self.impls if self._rows[i.name] in self.totals))
        self._say(f"{sum(self.totals.values())} checks over {len(order)} implementations: {', '.join(order)}")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._count([item.nodeid for item in session.items])  # after -k/-m deselection

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        self._count(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        if self.not_generated is None and hasattr(node, "workeroutput"):
            self.not_generated = self._not_generated(node)

    def _say(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"[report] {line}")

    def _progress(self, result: Result, name: str) -> None:
        """Count ``result`` in the row ``name``; say so when the row is done."""
        self.done[name] = self.done.get(name, 0) + 1
        total = self.totals.get(name, 0)
        if self.done[name] == total:
            counts = {}
            for r in self.results.values():
                if r.implementation is not None and self._rows.get(r.implementation, r.implementation) == name:
                    counts[r.status] = counts.get(r.status, 0) + 1
            finished = sum(self.done.values())
            overall = sum(self.totals.values())
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            self._say(f"{name}: done: {summary} [{finished}/{overall} checks, {100 * finished // max(overall, 1)}%]")

    # -- results ---------------------------------------------------------------------------------
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors[report.nodeid] = text(report.longrepr)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.get(report.nodeid)
        if result is None:
            result = self.results[report.nodeid] = Result.start(test_id(report.nodeid))
        result.update(report)
        if report.when == "teardown":
            finish_status(result)
            if result.implementation is not None:  # a check, not some other test of the session
                self._progress(result, self._rows.get(result.implementation, result.implementation))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        environments = {r.implementation: r.environment for r in self.results.values() if r.environment}
        implementations = [implementation_record(impl, environments.get(impl.name)) for impl in self.impls]
        conventions = {c.name: c.as_dict() for impl in self.impls for c in impl.conventions()}
        results = sorted(
            (r for r in self.results.values() if r.implementation is not None), key=lambda r: (r.implementation, r.test)
        )
        doc, paths = write_report(self.directory, document(
            implementations, conventions, results, started=self.started,
            duration_s=time.perf_counter() - self.clock, command=list(self.config.invocation_params.args),
            not_generated=self.not_generated if self.not_generated is not None else self._not_generated(None),
            collection_errors=[{"node": n, "reason": reason} for n, reason in sorted(self.collection_errors.items())],
            resources=self._resources() if self._resources else None,
        ))
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_sep("-", "conformance report")
            reporter.write_line(verdict(doc))
            for path in paths:
                reporter.write_line(f"written: {path}")
