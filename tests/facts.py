"""What the meta-tests read off an in-process run of the checks: each check's final facts (its user properties)."""

from __future__ import annotations

import pytest

__all__ = ["Properties", "values"]


class Properties:
    """Plugin: each check's final user properties (the teardown report's) and outcome, by test id, and which
    checks the harness did not generate (``conformance.harness.plugin.NOT_GENERATED``)."""

    def __init__(self) -> None:
        self.by_test: dict[str, list[tuple[str, object]]] = {}
        self.outcomes: dict[str, str] = {}
        self.not_generated: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.nodeid] = report.outcome
        if report.when == "teardown":
            self.by_test[report.nodeid] = list(report.user_properties)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from conformance.harness.plugin import NOT_GENERATED

        self.not_generated = session.config.stash.get(NOT_GENERATED, {})


def values(properties: list[tuple[str, object]], name: str) -> list[object]:
    return [v for k, v in properties if k == name]
