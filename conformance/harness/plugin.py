"""The conformance suite's pytest plugin: which implementations run, which checks and cases each gets, how
each check is set up and recorded, and how the run is scheduled.

Installed as a pytest plugin (entry point ``pytest11``, ``conformance.harness.plugin``), so that ``pytest
--pyargs conformance.checks`` (or ``bn-conformance``) runs the suite from any directory; in a checkout the
root ``conftest.py`` loads it too. It acts only on the checks, the tests marked ``conformance`` (every
module of ``conformance/checks``); any other test session in the same environment only sees its options.

``--impl SPEC`` (repeatable; or ``BN_CONFORMANCE_IMPL``, comma-separated) chooses implementations:
built-in names, families or globs (``torch``, ``keras.jax``, ``tf_keras.*``) or a third-party
``package.module:attribute``; the transforms add what they derive from them (porting pairs).
``--deviations FILE`` (repeatable) adds a deviation registry of the user's own to the project's.
``--sample OPERATOR:K`` (repeatable) runs one case in K of each grid of OPERATOR's implementations: the quick
gate ``tox`` runs over the normalization family, where ``tox -e report`` runs every case.

Every check runs once per implementation whose check families include its module's, and once per case its
operator's grid for that check holds (:meth:`Operator.cases`); a case the implementation cannot build is
not generated at all, and counted per what it lacks. Checks are ordered, and under pytest-xdist grouped
(``--dist loadgroup``, which a plain ``-n`` switches to), by the worker process their implementation needs,
so that every process runs one group at a time and keeps one worker (:mod:`.isolation`); within a group,
implementation by implementation (what one holds, a world of rank processes, is then started once).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from ..adapters.base import Implementation, ImplementationCrashed
from ..core.case import Case
from . import isolation
from .conformance import Conformance
from .deviations import REGISTRY, Deviation, load_registry
from .groups import RunLock
from .processes import TreeSampler
from .registry import conventions, derived, select

__all__ = ["IMPLEMENTATIONS", "MARKER", "NOT_GENERATED", "REGISTRIES"]

IMPLEMENTATIONS = pytest.StashKey[list[Implementation]]()
LOCK = pytest.StashKey[RunLock]()
EXCLUSIVE = pytest.StashKey[set[str]]()  # the groups holding an exclusive implementation: they run alone
_LOCK_PATH = "bn_run_lock"  # how the xdist controller hands its lock file to the workers
_LOADGROUP = "bn_loadgroup"  # and that it schedules by group
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
        "--sample", metavar="OPERATOR:K", action="append", default=[], type=_sample,
        help="run one case in K of each implementation's grid for each check of OPERATOR (every implementation "
        "and check still runs, on cases spread over the grid's layouts and dtypes; repeatable)",
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


def _sample(text: str) -> tuple[str, int]:
    from ..operators.builtin import OPERATORS

    name, _, k = text.partition(":")
    if name not in OPERATORS or not (k.isdigit() and int(k) >= 1):
        raise pytest.UsageError(f"--sample takes OPERATOR:K with K >= 1 and an operator of {sorted(OPERATORS)}, "
                                f"got {text!r}")
    return name, int(k)


def _sampled(items: list[pytest.Item], sample: dict[str, int]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """``items`` less all but every K-th case of each (implementation, check) of a sampled operator, counted in
    the grid's order after the cases the implementation cannot build (so an InstanceNorm keeps some of its own);
    what is kept, then what is dropped."""
    kept, dropped, seen = [], [], Counter()
    for item in items:
        impl = _impl_of(item)
        k = sample.get(impl.operator.name, 1) if impl is not None and "case" in item.callspec.params else 1
        if k > 1:
            key = (impl.name, item.originalname)
            seen[key] += 1
            if (seen[key] - 1) % k:
                dropped.append(item)
                continue
        kept.append(item)
    return kept, dropped


def _chosen(config: pytest.Config) -> list[Implementation]:
    specs = config.getoption("--impl") or [s for s in os.environ.get("BN_CONFORMANCE_IMPL", "").split(",") if s]
    try:
        chosen = [isolation.isolate(impl) for impl in select(specs)]
        chosen += derived(chosen)  # the transforms' implementations run their parties' workers
        conventions(chosen)  # one record per convention name
    except (ValueError, TypeError, ImportError, AttributeError) as exc:  # a bad --impl is the user's to fix
        raise pytest.UsageError(f"--impl: {exc}") from None
    return chosen


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
        "markers", f"{MARKER}(transform=None): a conformance check, run once per implementation whose check "
        "families include its module's (a transform's own family, transform=..., runs only where an "
        "implementation lists it)",
    )
    config.stash[IMPLEMENTATIONS] = _chosen(config)
    config.stash[REGISTRIES] = _registries(config)
    config.stash[LOCK] = RunLock(getattr(config, "workerinput", {}).get(_LOCK_PATH))
    config.stash[EXCLUSIVE] = {impl.group for impl in config.stash[IMPLEMENTATIONS] if impl.exclusive}
    if getattr(config.option, "dist", "no") == "load":  # checks of one worker process go to one xdist worker
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get(_LOADGROUP):  # an xdist worker, which parses only the command line
        config.option.loadgroup = True  # xdist's worker-side switch that appends the group to the node ids
    if config.getoption("--report") and not hasattr(config, "workerinput"):  # the xdist controller only
        from ..report.plugin import ReportPlugin

        sampler = TreeSampler()  # the whole run's process tree: xdist workers, implementation workers, ranks
        plugin = ReportPlugin(config, config.stash[IMPLEMENTATIONS], lambda node=None: not_generated(config, node),
                              sampler.stop)
        config.pluginmanager.register(plugin, "bn_report")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist's controller: every worker of the run shares its lock, and learns that the run is scheduled by
    group (a worker reads only the command line, where a plain ``-n`` says ``load``)."""
    node.workerinput[_LOCK_PATH] = node.config.stash[LOCK].path
    node.workerinput[_LOADGROUP] = node.config.getvalue("dist") == "loadgroup"


def pytest_unconfigure(config: pytest.Config) -> None:
    lock = config.stash.get(LOCK, None)
    if lock is None:
        isolation.shutdown()
    elif hasattr(config, "workerinput"):
        lock.leave()
    else:
        lock.remove()


def _is_check(node: pytest.Item | pytest.Function) -> bool:
    return node.get_closest_marker(MARKER) is not None


def _family(module_name: str) -> str:
    """A check's family: its module's name (``conformance.checks.test_forward`` -> ``forward``)."""
    return module_name.rpartition(".")[2].removeprefix("test_")


def _runs(impl: Implementation, family: str, transform: str | None) -> bool:
    """Whether ``impl`` runs the checks of ``family``: those it lists, or without a list every family that is
    not a transform's own."""
    return family in impl.families if impl.families is not None else transform is None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_check(metafunc.definition):
        return
    transform = next((m.kwargs["transform"] for m in metafunc.definition.iter_markers(MARKER)
                      if "transform" in m.kwargs), None)
    impls = [i for i in metafunc.config.stash[IMPLEMENTATIONS]
             if _runs(i, _family(metafunc.module.__name__), transform)]
    if "case" not in metafunc.fixturenames:
        metafunc.parametrize("impl", impls, ids=[i.name for i in impls])
        return
    check = metafunc.definition.originalname.removeprefix("test_")
    names = ("impl", "case_name", "case") if "case_name" in metafunc.fixturenames else ("impl", "case")
    params = [pytest.param(impl, *((name,) if len(names) == 3 else ()), case, id=f"{impl.name}-{name}")
              for impl in impls for name, case in impl.cases(check)]
    metafunc.parametrize(names, params)


def _impl_of(item: pytest.Item) -> Implementation | None:
    impl = item.callspec.params.get("impl") if _is_check(item) and hasattr(item, "callspec") else None
    return impl if isinstance(impl, Implementation) else None


def pytest_itemcollected(item: pytest.Item) -> None:
    """The check, its family (module) and implementation as facts on every report of the test, from its
    first phase; its xdist group (before xdist's own hooks read the marks)."""
    if _is_check(item):
        item.user_properties.append(("check", item.originalname.removeprefix("test_")))
        item.user_properties.append(("check_family", _family(item.module.__name__)))
        if (impl := _impl_of(item)) is not None:
            item.user_properties.append(("implementation", impl.name))
            item.add_marker(pytest.mark.xdist_group(impl.group))


@pytest.hookimpl(trylast=True)  # after -k and -m: what they deselect is not counted
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Checks of a case the implementation cannot build are not generated at all (as PyTorch's
    ``dtypesIfCUDA`` does): deselected, and counted per capability for the report's Skipped section; nor
    are checks no implementation has a grid for (pytest's empty parameter set). The rest are ordered in
    groups of the worker process they need, in order of first appearance, so that a process runs one group
    after another."""
    checks: dict[str, Counter] = defaultdict(Counter)
    lacking: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    kept, dropped = [], []
    for item in items:
        impl = _impl_of(item)
        if impl is None and _is_check(item) and hasattr(item, "callspec"):
            dropped.append(item)  # an empty parameter set: nothing to run it on
            continue
        if impl is not None and isinstance(case := item.callspec.params.get("case"), Case):
            if missing := impl.unsupported(case.spec(impl.convention)):
                family = _family(item.module.__name__)
                checks[impl.name][family] += 1
                lacking[impl.name][family].update(missing)
                dropped.append(item)
                continue
        kept.append(item)
    kept, sampled_out = _sampled(kept, dict(config.getoption("--sample")))
    dropped += sampled_out
    order: dict[str, int] = {}  # worker groups, then implementations, in order of first appearance
    for item in kept:
        if (impl := _impl_of(item)) is not None:
            order.setdefault(impl.group, len(order))
            order.setdefault(impl.name, len(order))
    kept.sort(key=lambda item: (order[impl.group], order[impl.name]) if (impl := _impl_of(item)) else (-1, -1))
    if (shard := config.getoption("--shard")) is not None:
        # Every N-th check by sorted test id: every machine (and xdist worker) picks the same ones, and the
        # N shards cover the run exactly once.
        i, n = shard
        position = {nodeid: k for k, nodeid in enumerate(sorted(item.nodeid for item in kept))}
        dropped += [item for item in kept if position[item.nodeid] % n != i - 1]
        kept = [item for item in kept if position[item.nodeid] % n == i - 1]
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Once a check's reports are out, its item lets go of their facts: pytest keeps every item to the end of
    the session, and 25,000 checks' comparisons held twice (each xdist worker's items, the controller's
    reports) grew a report run past 4 GiB."""
    result = yield
    item.user_properties.clear()
    return result


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every plugin has read the report's facts (the report plugin its results, an xdist worker what it sends
    to the controller); pytest's terminal statistics keep the report itself to the end, so the facts go."""
    report.user_properties = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A group's first check takes the run's lock for it (exclusively for a group with an exclusive
    implementation)."""
    if (impl := _impl_of(item)) is not None:
        item.config.stash[LOCK].enter(impl.group, impl.group in item.config.stash[EXCLUSIVE])


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Between checks no layer of a worker is in use: at the end of a group its workers stop and the lock is
    let go (the next group needs other workers), within one a worker grown past its bound is recycled."""
    impl, following = _impl_of(item), nextitem and _impl_of(nextitem)
    if impl is not None and (following is None or following.group != impl.group):
        item.config.stash[LOCK].leave()
    else:
        isolation.recycle()


@pytest.fixture(autouse=True)
def _record_environment(request: pytest.FixtureRequest) -> None:
    """The implementation's versions (when it is installed) on every check's report."""
    impl = _impl_of(request.node)
    if impl is not None and not impl.missing():
        environment = {k: str(v) for k, v in impl.environment().items()}  # plain str for xdist's wire format
        request.node.user_properties.append(("environment", environment))


@pytest.fixture
def conformance(request: pytest.FixtureRequest, impl: Implementation) -> Conformance:
    """The :class:`Conformance` of this check and implementation (a missing framework skips here)."""
    return Conformance(request, impl, request.config.stash[REGISTRIES])
