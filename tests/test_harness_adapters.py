"""Choosing and loading implementations: clear errors for unknown names, bad locators, wrong objects and
name clashes; a missing framework is a skip naming it; and a declared convention is checked, not
trusted: an implementation following another framework's rules fails, naming the statistic."""

import pytest
from fake_adapters import MISSING_MODULE

from conformance.adapters import builtin, load, process_groups, select

pytest_plugins = ["pytester"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^no implementation matches 'nope\*'; known: ") as raised:
        select(["reference.torch", "nope*"])
    known = str(raised.value).split("known: ")[1].split(", ")
    assert set(known) == {i.name for i in builtin()} | {i.family for i in builtin()}


# locator -> (exception type, text the message must contain)
LOAD_ERRORS = {
    "no such module": ("bn_conformance_meta_no_such_module:IMPLEMENTATIONS", ModuleNotFoundError,
                       "No module named 'bn_conformance_meta_no_such_module'"),
    "no such attribute": ("fake_adapters:NO_SUCH_ATTRIBUTE", AttributeError, "NO_SUCH_ATTRIBUTE"),
    "module without IMPLEMENTATIONS": ("fake_adapters:", AttributeError, "IMPLEMENTATIONS"),
    "a name where an instance belongs": (
        "fake_adapters:NOT_IMPLEMENTATIONS", TypeError,
        "fake_adapters:NOT_IMPLEMENTATIONS must give Implementation instances, got str",
    ),
    "a number": ("fake_adapters:NOT_ITERABLE", TypeError,
                 "fake_adapters:NOT_ITERABLE must give Implementation instances, got int"),
    "a factory returning None": ("fake_adapters:returns_none", TypeError,
                                 "fake_adapters:returns_none must give Implementation instances, got NoneType"),
}


@pytest.mark.parametrize("locator, error, text", LOAD_ERRORS.values(), ids=LOAD_ERRORS.keys())
def test_bad_locator_is_a_clear_error(locator: str, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as raised:
        select([locator])
    assert text in str(raised.value)


def test_loaded_implementations_know_their_locator() -> None:
    # A worker process finds the implementation again by this locator alone.
    assert [(i.name, i.locator) for i in load("fake_adapters:HEALTHY")] == [("healthy.torch", "fake_adapters:HEALTHY")]


@pytest.mark.parametrize(
    "specs", [["fake_adapters:DUPLICATE_NAMES"], ["reference.torch", "fake_adapters:SHADOWS_BUILTIN"]],
    ids=["within one locator", "a locator shadowing a built-in"],
)
def test_two_implementations_with_one_name_are_refused(specs: list[str]) -> None:
    with pytest.raises(ValueError, match=r"^two implementations are named '(dup|reference)\.torch'$"):
        select(specs)


def test_overlapping_specs_choose_each_implementation_once() -> None:
    chosen = select(["reference.torch", "reference.*", "reference"])
    assert sorted(i.name for i in chosen) == sorted(i.name for i in builtin() if i.family == "reference")


# ---- through pytest --------------------------------------------------------------------------------


def test_unknown_impl_stops_the_run_naming_the_known_ones(run_checks) -> None:
    result = run_checks("test_conventions.py", "--impl", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --impl: no implementation matches 'nope'; known: *reference.torch*"])
    result.stdout.no_fnmatch_line("*passed*")


def test_missing_module_is_a_skip_naming_it(run_checks) -> None:
    run_checks(
        "test_forward.py", "test_conventions.py", "-k", "test_training_output and 16x3-cfirst-float32 or test_defaults",
        "--impl", "fake_adapters:NEEDS_MISSING_MODULE",
        outcomes={"skipped": 2},
        lines=[f"SKIPPED [[]1] *{module}:*: needs.missing: {MISSING_MODULE} is not installed"
               for module in ("test_conventions.py", "test_forward.py")],
    )


def test_wrong_convention_fails_naming_the_statistics(run_checks) -> None:
    # The same layer (the reference running the Keras rules) declared as torch, and honestly as keras:
    # the suite translates momentum and Bessel correction per declared convention, never excuses them.
    result = run_checks(
        "test_running_stats.py", "-k", "test_running_statistics and 16x3-cfirst-float32 and not new_batch_weight",
        "--impl", "fake_adapters:KERAS_DECLARED_TORCH", "--impl", "fake_adapters:KERAS_DECLARED_KERAS",
        outcomes={"failed": 1, "passed": 1},
        lines=[
            "E * wrong.keras_as_torch disagrees with the reference (torch convention)"
            " on case 16x3-cfirst-float32-steps=3:",
            "E *   running_mean: max |error| *, error/tolerance * at tolerance *",
            "E *   running_var: max |error| *, error/tolerance * at tolerance *",
            "FAILED *wrong.keras_as_torch*",
        ],
    )
    # Conventions never change the training output, so only the statistics may be blamed.
    assert "   y: " not in result.stdout.str()


def test_second_order_check_fails_a_missing_hessian_term(run_checks) -> None:
    """A double backward without the x-gamma cross terms fails every case with gamma and only those."""
    from conformance.checks.test_second_order import CASES

    with_gamma = sum(case.affine for case in CASES)
    run_checks(
        "test_second_order.py", "--impl", "fake_adapters:NO_CROSS_TERM",
        outcomes={"failed": with_gamma, "passed": len(CASES) - with_gamma},
        lines=["E * wrong.no_cross_term disagrees with the reference (torch convention)*"],
    )


def test_families_are_spelled_like_their_names_and_select_by_that_spelling() -> None:
    for impl in builtin():
        assert impl.name.startswith(f"{impl.family}."), impl.name
    assert {i.name for i in select(["tf_keras"])} == {"tf_keras.fused", "tf_keras.nonfused", "tf_keras.fused.xla",
                                                    "tf_keras.nonfused.xla"}


def test_an_absent_device_is_collected_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import conformance.adapters as adapters

    monkeypatch.setattr(adapters, "devices", lambda: {"cpu"})
    assert all(i.device == "cpu" for i in select([])) and all(i.device == "cpu" for i in select(["torch"]))
    assert {i.name for i in select(["torch.*cuda*"])} >= {"torch.BatchNorm2d[cuda]"}
    monkeypatch.setattr(adapters, "devices", lambda: {"cpu", "cuda"})
    assert "torch.BatchNorm2d[cuda]" in {i.name for i in select(["torch"])}


def test_process_groups_follow_the_process_key() -> None:
    groups = process_groups(builtin())
    assert all(len({i.process_key for i in group}) == 1 for group in groups)
    assert len({group[0].process_key for group in groups}) == len(groups)
    keras = [g for g in groups if g[0].family == "keras"]
    backends = [g[0].process_env["KERAS_BACKEND"] for g in keras]
    # Every backend has processes of its own (per adapter module: eager, compiled), fixed at import.
    assert set(backends) == {"tensorflow", "jax", "torch"}
    assert len(keras) == len({(g[0].locator, backend) for g, backend in zip(keras, backends)})


def test_compiled_variants_are_not_benchmarked_by_default() -> None:
    # Compiling per shape (and JIT code valgrind cannot run) belongs to no default benchmark run.
    compiled = [i for i in builtin() if i.compiled_from]
    assert compiled and not any(i.benchmarked for i in compiled)
