"""The conformance suite's pytest plugin: which implementations run, and how each check is set up and recorded.

Installed as a pytest plugin (entry point ``pytest11``, ``conformance.plugin``), so that ``pytest --pyargs
conformance.checks`` (or ``bn-conformance``) runs the suite from any directory; in a checkout the root
``conftest.py`` loads it too. It acts only on the checks, the tests marked ``conformance`` (every module
of ``conformance/checks``); any other test session in the same environment only sees its options.

``--impl SPEC`` (repeatable; or ``BN_CONFORMANCE_IMPL``, comma-separated) chooses implementations:
built-in names, families or globs (``torch``, ``keras.jax``, ``tf_keras.*``) or a third-party
``package.module:attribute``. Every check runs once per implementation. ``--deviations FILE``
(repeatable) adds a deviation registry of the user's own to the project's (``conformance/deviations.py``).

Each check takes the ``conformance`` fixture, a :class:`Conformance`: ``conformance(case)`` returns a
:class:`~conformance.mirror.Mirror` after (1) skipping what the implementation does not support and (2)
marking a registered deviation as an expected failure (strict). What the report needs is attached to
each test's report as ``user_properties``, as facts, never sentences: the implementation (at
collection), its versions, the case's parameters, every comparison, the deviation matched (with its
registry), what was unsupported, the check's report roles and whether the implementation's process
crashed. ``--report DIR`` turns them into the conformance report (``conformance/report/``).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from .adapters import select
from .adapters.base import Implementation, ImplementationCrashed
from .cases import Case
from .deviations import REGISTRY, Deviation, load_registry, match
from .isolation import isolate, shutdown
from .mirror import Mirror
from .tolerances import Comparison

__all__ = ["IMPLEMENTATIONS", "MARKER", "NOT_GENERATED", "REGISTRIES", "Conformance"]

IMPLEMENTATIONS = pytest.StashKey[list[Implementation]]()
REGISTRIES = pytest.StashKey[list[Deviation]]()
# implementation -> check family -> {"checks": number not generated, "unsupported": {capability: checks}}.
NOT_GENERATED = pytest.StashKey[dict[str, dict[str, dict]]]()
MARKER = "conformance"
_WORKER_OUTPUT = "bn_not_generated"  # how an xdist worker hands NOT_GENERATED to the controller

# "deterministic" (the default) makes CI and every developer see the same Hypothesis examples; "dev"
# explores new ones: ``pytest --hypothesis-profile dev``.
settings.register_profile(
    "deterministic", derandomize=True, database=None, deadline=None, max_examples=40, print_blob=True
)
settings.register_profile("dev", derandomize=False, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("deterministic")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "BatchNorm conformance suite")
    group.addoption(
        "--impl", action="append", default=[],
        help="implementation(s) to check: built-in name, family or glob, or package.module:attribute "
        "(repeatable; default: $BN_CONFORMANCE_IMPL or every built-in one)",
    )
    group.addoption(
        "--deviations", metavar="FILE", action="append", default=[],
        help="a deviation registry of your own (TOML, the schema of conformance/deviations.toml), "
        "used besides the project's (repeatable)",
    )
    group.addoption(
        "--shard", metavar="I/N", default=None, type=_shard,
        help="run the I-th of N shards of the collected checks (1 <= I <= N), for a run spread over machines; "
        "merge their reports with: python -m conformance.report merge",
    )
    group.addoption(
        "--report", metavar="DIR", default=None,
        help="write the conformance report (conformance.json, .md, .html, heatmap.png) into DIR",
    )


def _shard(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise pytest.UsageError(f"--shard takes I/N with 1 <= I <= N, got {text!r}")
    return int(i), int(n)


def _chosen(config: pytest.Config) -> list[Implementation]:
    specs = config.getoption("--impl") or [s for s in os.environ.get("BN_CONFORMANCE_IMPL", "").split(",") if s]
    try:
        chosen = select(specs)
    except (ValueError, TypeError, ImportError, AttributeError) as exc:  # a bad --impl is the user's to fix
        raise pytest.UsageError(f"--impl: {exc}") from None
    return [isolate(impl) for impl in chosen]


def _registries(config: pytest.Config) -> list[Deviation]:
    """The project's registry, then each ``--deviations`` file in the order given."""
    entries = load_registry(REGISTRY)
    for name in config.getoption("--deviations"):
        path = Path(name)
        if not path.is_file():
            raise pytest.UsageError(f"--deviations: {name} is not a file")
        try:
            entries += load_registry(path)
        except ValueError as exc:  # a malformed entry is the user's to fix, named before anything runs
            raise pytest.UsageError(f"--deviations: {exc}") from None
    return entries


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(roles=(), per_implementation=True): a conformance check, run once per implementation "
        "(or choosing its own: per_implementation=False); roles name what the report reads it for "
        "(one_value_per_channel: its behaviour there, for the conventions table)",
    )
    config.stash[IMPLEMENTATIONS] = _chosen(config)
    config.stash[REGISTRIES] = _registries(config)
    if config.getoption("--report") and not hasattr(config, "workerinput"):  # the xdist controller only
        from .report.plugin import ReportPlugin

        config.pluginmanager.register(ReportPlugin(config, config.stash[IMPLEMENTATIONS]), "bn_report")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutdown()


def _is_check(node: pytest.Item | pytest.Function) -> bool:
    return node.get_closest_marker(MARKER) is not None


def _per_implementation(node: pytest.Item | pytest.Function) -> bool:
    """Run once per implementation, unless the check chooses its own (``per_implementation=False``: porting
    pairs, whole networks), which then records its ``implementation`` itself."""
    return all(mark.kwargs.get("per_implementation", True) for mark in node.iter_markers(MARKER))


def _family(item: pytest.Item) -> str:
    """The check's family: its module's name (``conformance.checks.test_forward`` -> ``forward``)."""
    return item.module.__name__.rpartition(".")[2].removeprefix("test_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if _is_check(metafunc.definition) and _per_implementation(metafunc.definition):
        # Distributed implementations run the checks that take a world (``synchronized``), and only those.
        wants_world = "synchronized" in metafunc.fixturenames
        impls = [i for i in metafunc.config.stash[IMPLEMENTATIONS] if (i.capabilities.world is not None) == wants_world]
        metafunc.parametrize("impl", impls, ids=[i.name for i in impls], scope="session")


def pytest_itemcollected(item: pytest.Item) -> None:
    """The check, its family (module), implementation and report roles as facts on every report of the
    test, from its first phase."""
    if _is_check(item):
        item.user_properties.append(("check", item.originalname.removeprefix("test_")))
        item.user_properties.append(("check_family", _family(item)))
        if _per_implementation(item):
            item.user_properties.append(("implementation", item.callspec.params["impl"].name))
        roles = sorted({role for mark in item.iter_markers(MARKER) for role in mark.kwargs.get("roles", ())})
        item.user_properties.append(("roles", roles))


@pytest.hookimpl(trylast=True)  # after -k and -m: what they deselect is not counted
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Checks of a case the implementation cannot build are not generated at all (as PyTorch's
    ``dtypesIfCUDA`` does): deselected, and counted per capability for the report's Skipped section."""
    checks: dict[str, Counter] = defaultdict(Counter)
    lacking: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    kept, dropped = [], []
    for item in items:
        params = item.callspec.params if _is_check(item) and _per_implementation(item) else {}
        if isinstance(case := params.get("case"), Case):
            impl = params["impl"]
            if missing := impl.unsupported(case.spec(impl.convention)):
                checks[impl.name][_family(item)] += 1
                lacking[impl.name][_family(item)].update(missing)
                dropped.append(item)
                continue
        kept.append(item)
    if (shard := config.getoption("--shard")) is not None:
        # Every N-th check by sorted test id: every machine (and xdist worker) picks the same ones, and the
        # N shards cover the run exactly once.
        i, n = shard
        order = {nodeid: k for k, nodeid in enumerate(sorted(item.nodeid for item in kept))}
        dropped += [item for item in kept if order[item.nodeid] % n != i - 1]
        kept = [item for item in kept if order[item.nodeid] % n == i - 1]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    config.stash[NOT_GENERATED] = {
        name: {family: {"checks": n, "unsupported": dict(lacking[name][family])} for family, n in families.items()}
        for name, families in checks.items()
    }


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):  # an xdist worker: the controller writes the report
        session.config.workeroutput[_WORKER_OUTPUT] = session.config.stash.get(NOT_GENERATED, {})


def not_generated(config: pytest.Config, node: object = None) -> dict[str, dict[str, dict]]:
    """:data:`NOT_GENERATED` of this process, or of the xdist worker ``node`` (every worker collects alike)."""
    if node is not None:
        return node.workeroutput.get(_WORKER_OUTPUT, {})
    return config.stash.get(NOT_GENERATED, {})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(ImplementationCrashed) and _is_check(item):
        item.user_properties.append(("crashed", True))
        report.user_properties = list(item.user_properties)
    return report


@pytest.fixture(autouse=True)
def _record_environment(request: pytest.FixtureRequest) -> None:
    """The implementation's versions (when it is installed) on every check's report."""
    if _is_check(request.node) and _per_implementation(request.node):
        impl = request.getfixturevalue("impl")
        if not impl.missing():
            environment = {k: str(v) for k, v in impl.environment().items()}  # plain str for xdist's wire format
            request.node.user_properties.append(("environment", environment))


class Conformance:
    """What a check works with: the implementation, its skips and deviations, and the recording.

    ``conformance(case, **extra)`` is the usual start: skip what the implementation does not support,
    expect a registered deviation for the case's parameters (plus ``extra``), and return a Mirror that
    records every comparison. A Hypothesis-driven check starts each example with :meth:`example`, so
    that the report holds the example that decided the outcome (the last one run: the shrunk failure,
    or the last of a passing run), not every example's comparisons.
    """

    def __init__(self, request: pytest.FixtureRequest, impl: Implementation) -> None:
        self.impl = impl
        self.check = request.node.originalname.removeprefix("test_")
        self._request = request
        self._properties = request.node.user_properties
        if reason := impl.missing():
            pytest.skip(reason)

    def __call__(self, case: Case, constructed: bool = False, **extra) -> Mirror:
        """``constructed=True``: the layer keeps the state it was built with (see :class:`Mirror`)."""
        self.require(case)
        self.expect_deviation(case.params() | extra)
        return self.mirror(case, constructed)

    def require(self, case: Case) -> None:
        """Skip, recording what is not supported, unless the implementation supports ``case``."""
        self.unsupported(*self.impl.unsupported(case.spec(self.impl.convention)))

    def unsupported(self, *what: str) -> None:
        """Skip, recording ``what`` (each a capability: ``dtype float16``, ``gradients``), if any."""
        if what:
            self._properties.append(("unsupported", list(what)))
            pytest.skip(f"{self.impl.name} does not support {', '.join(what)}")

    def deviation(self, params: dict, check: str | None = None) -> Deviation | None:
        """The registered deviation of this implementation on ``check`` (default: this one) with ``params``."""
        version = self.impl.environment().get("version")
        return match(self._request.config.stash[REGISTRIES], self.impl.name, check or self.check, params, version)

    def expect_deviation(self, params: dict) -> None:
        """Record ``params``; if a registry entry covers them, the check is expected to fail (strict)."""
        self._properties.append(("params", params))
        if entry := self.deviation(params):
            self._properties.append(("deviation", entry.as_dict()))
            self._request.applymarker(pytest.mark.xfail(reason=f"{entry.observed} ({entry.link})", strict=True))

    def record(self, comparison: Comparison) -> None:
        self._properties.append(("comparison", comparison.as_dict()))

    def mirror(self, case: Case, constructed: bool = False) -> Mirror:
        return Mirror(self.impl, case, on_compare=self.record, constructed=constructed)

    def example(self, case: Case) -> Mirror:
        """A Mirror for one Hypothesis example, replacing the parameters and comparisons of earlier ones."""
        self._properties[:] = [(k, v) for k, v in self._properties if k not in ("params", "comparison")]
        self._properties.append(("params", case.params()))
        return self.mirror(case)


@pytest.fixture
def conformance(request: pytest.FixtureRequest, impl: Implementation) -> Conformance:
    """The :class:`Conformance` of this check and implementation (a missing framework skips here)."""
    return Conformance(request, impl)


@pytest.fixture
def record_comparison(request: pytest.FixtureRequest) -> Callable[[Comparison], None]:
    """Attach a comparison to this test's report: for the checks that choose their own implementations
    (``per_implementation=False``), which have no :class:`Conformance`."""
    return lambda comparison: request.node.user_properties.append(("comparison", comparison.as_dict()))
