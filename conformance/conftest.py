"""The suite's pytest plugin: which implementations run, and how each check is set up and recorded.

``--impl SPEC`` (repeatable; or ``BN_CONFORMANCE_IMPL``, comma-separated) chooses implementations:
built-in names, families or globs (``torch``, ``keras.jax``, ``tf_keras.*``) or a third-party
``package.module:attribute``. Every test taking the ``impl`` fixture runs once per implementation; a
missing framework or an unsupported case is a skip whose reason names it.

Each check calls ``conformance(case)`` (``constructed=True``: the layer keeps the state it was built with),
which returns a :class:`~conformance.mirror.Mirror` after
(1) skipping what the implementation does not support and (2) marking a registered deviation as an
expected failure (strict). The implementation, its versions, the case and every comparison are
attached to the test report as ``user_properties``; ``--report DIR`` turns them into the conformance
report (``conformance/report/``).
"""

from __future__ import annotations

import os

import pytest

from .adapters import select
from .adapters.worker import isolate, shutdown
from .cases import Case
from .deviations import load_registry, match
from .mirror import Mirror


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--impl", action="append", default=[],
        help="implementation(s) to check: built-in name, family or glob, or package.module:attribute "
        "(repeatable; default: $BN_CONFORMANCE_IMPL or every built-in one)",
    )
    parser.addoption(
        "--report", metavar="DIR", default=None,
        help="write the conformance report (conformance.json, .md, .html, heatmap.png) into DIR",
    )


def _chosen(config: pytest.Config) -> list:
    specs = config.getoption("--impl") or [s for s in os.environ.get("BN_CONFORMANCE_IMPL", "").split(",") if s]
    try:
        chosen = select(specs)
    except (ValueError, TypeError, ImportError, AttributeError) as exc:  # a bad --impl is the user's to fix
        raise pytest.UsageError(f"--impl: {exc}") from None
    return [isolate(impl) for impl in chosen]


def pytest_configure(config: pytest.Config) -> None:
    config._bn_impls = _chosen(config)
    config._bn_registry = load_registry()
    if config.getoption("--report") and not hasattr(config, "workerinput"):  # the xdist controller only
        from .report.plugin import ReportPlugin

        config.pluginmanager.register(ReportPlugin(config, config._bn_impls), "bn_report")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutdown()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" in metafunc.fixturenames:
        impls = metafunc.config._bn_impls
        metafunc.parametrize("impl", impls, ids=[i.name for i in impls], scope="session")


@pytest.fixture(autouse=True)
def _record_implementation(request: pytest.FixtureRequest) -> None:
    """Name the implementation (and, when it is installed, its versions) on every test's report."""
    if "impl" in request.fixturenames:
        impl = request.getfixturevalue("impl")
        request.node.user_properties.append(("implementation", impl.name))
        if not impl.missing():
            environment = {k: str(v) for k, v in impl.environment().items()}  # plain str for xdist's wire format
            request.node.user_properties.append(("environment", environment))


@pytest.fixture
def record_comparison(request: pytest.FixtureRequest):
    """Callback attaching one :class:`~conformance.tolerances.Comparison` to the test's report."""
    return lambda comparison: request.node.user_properties.append(("comparison", comparison.as_dict()))


@pytest.fixture
def check_name(request: pytest.FixtureRequest) -> str:
    return request.node.originalname.removeprefix("test_")


@pytest.fixture
def conformance(request: pytest.FixtureRequest, impl, check_name: str, record_comparison):
    """``conformance(case, **params)`` -> Mirror, with skips and deviations applied."""
    if reason := impl.missing():
        pytest.skip(reason)
    properties = request.node.user_properties

    def start(case: Case, constructed: bool = False, **extra) -> Mirror:
        if reason := impl.unsupported(case.spec(impl.convention)):
            pytest.skip(reason)
        expect_deviation(case.params() | extra)
        return Mirror(impl, case, on_compare=record_comparison, constructed=constructed)

    def expect_deviation(params: dict) -> None:
        version = impl.environment().get("version")
        properties.append(("params", params))
        if entry := match(request.config._bn_registry, impl.name, check_name, params, version):
            properties.append(("deviation", entry.as_dict()))
            request.applymarker(pytest.mark.xfail(reason=f"{entry.observed} ({entry.link})", strict=True))

    start.expect_deviation = expect_deviation
    return start
