"""The suite's pytest plugin: which implementations run, and how each check is set up and recorded.

``--impl SPEC`` (repeatable; or ``BN_CONFORMANCE_IMPL``, comma-separated) chooses implementations:
built-in names, families or globs (``torch``, ``keras.jax``, ``tf_keras.*``) or a third-party
``package.module:attribute``. Every test taking the ``impl`` fixture runs once per implementation; a
missing framework or an unsupported case is a skip whose reason names it.

Each check calls ``conformance(case)``, which returns a :class:`~conformance.mirror.Mirror` after
(1) skipping what the implementation does not support and (2) marking a registered deviation as an
expected failure (strict). The comparisons are attached to the test report as ``user_properties``
for the conformance report.
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


def _chosen(config: pytest.Config) -> list:
    specs = config.getoption("--impl") or [s for s in os.environ.get("BN_CONFORMANCE_IMPL", "").split(",") if s]
    return [isolate(impl) for impl in select(specs)]


def pytest_configure(config: pytest.Config) -> None:
    config._bn_impls = _chosen(config)
    config._bn_registry = load_registry()


def pytest_unconfigure(config: pytest.Config) -> None:
    shutdown()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" in metafunc.fixturenames:
        impls = metafunc.config._bn_impls
        metafunc.parametrize("impl", impls, ids=[i.name for i in impls], scope="session")


@pytest.fixture
def check_name(request: pytest.FixtureRequest) -> str:
    return request.node.originalname.removeprefix("test_")


@pytest.fixture
def conformance(request: pytest.FixtureRequest, impl, check_name: str):
    """``conformance(case, **params)`` -> Mirror, with skips and deviations applied."""
    if reason := impl.missing():
        pytest.skip(reason)
    properties = request.node.user_properties

    def start(case: Case, **extra) -> Mirror:
        if reason := impl.unsupported(case.spec(impl.convention)):
            pytest.skip(reason)
        expect_deviation(case.params() | extra)
        return Mirror(impl, case, on_compare=lambda c: properties.append(("comparison", c.as_dict())))

    def expect_deviation(params: dict) -> None:
        version = impl.environment().get("version")
        properties.append(("params", params))
        if entry := match(request.config._bn_registry, impl.name, check_name, params, version):
            properties.append(("deviation", entry.as_dict()))
            request.applymarker(pytest.mark.xfail(reason=f"{entry.observed} ({entry.link})", strict=True))

    start.expect_deviation = expect_deviation
    return start
