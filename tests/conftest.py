"""Shared test setup: deterministic per-test random data (Hypothesis profiles: the root conftest), and
running the conformance checks through pytest itself for the harness's meta-tests."""

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

import conformance.checks

CHECKS = Path(conformance.checks.__file__).parent


@pytest.fixture
def rng(request):
    """A generator seeded from the test's node id: the same data on every run, different per test."""
    return np.random.default_rng(zlib.adler32(request.node.nodeid.encode()))


@pytest.fixture
def run_checks(request: pytest.FixtureRequest) -> Callable[..., pytest.RunResult]:
    """``run_checks("test_forward.py", "-k", ..., "--impl", ..., outcomes={"failed": 1}, lines=[...])``:
    one in-process pytest run of check modules of ``conformance/checks`` (named by file name), as a user
    would start it. With ``outcomes`` it asserts them, that the run finished normally (exit status 1
    exactly when something failed) and that the output shows ``lines`` (fnmatch patterns) in order.

    Needs the ``pytester`` plugin (``pytest_plugins = ["pytester"]`` in the calling module). Plugins that
    are installed here but not in tox's ``py`` environment are switched off so that both see the same
    run, the cache stays off so that concurrent runs do not write the repository's ``.pytest_cache``, and
    ``-ra`` is explicit: the skip and xfail reasons the tests read must not depend on the ini's addopts.
    """
    pytester: pytest.Pytester = request.getfixturevalue("pytester")

    def run(
        *args: str, outcomes: dict[str, int] | None = None, lines: Sequence[str] = (), plugins: Sequence[object] = ()
    ) -> pytest.RunResult:
        args = tuple(str(CHECKS / a) if a.endswith(".py") else a for a in args)
        result = pytester.runpytest(
            *args, "-ra", "-p", "no:benchmark", "-p", "no:randomly", "-p", "no:cacheprovider", plugins=list(plugins)
        )
        if outcomes is not None:
            result.assert_outcomes(**outcomes)
            assert result.ret == (pytest.ExitCode.TESTS_FAILED if outcomes.get("failed") else pytest.ExitCode.OK)
            result.stdout.fnmatch_lines(list(lines))
        return result

    return run
