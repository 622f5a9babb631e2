"""Choosing and loading implementations: clear errors for unknown names, bad locators, wrong objects, bad
conventions and name clashes; a missing framework is a skip naming it; and a declared convention is checked,
not trusted: an implementation following another framework's rules fails, naming the statistic."""

import pytest
from fake_adapters import MISSING_MODULE, ReferenceAs

from conformance.adapters.base import Capabilities
from conformance.adapters.groupnorm_torch import TORCH_FUNCTIONAL_GROUPNORM, TORCH_FUNCTIONAL_INSTANCENORM
from conformance.adapters.layernorm_torch import TORCH_FUNCTIONAL_LAYERNORM
from conformance.adapters.rmsnorm_torch import TORCH_FUNCTIONAL_RMSNORM
from conformance.adapters.torch_nn import TORCH_FUNCTIONAL
from conformance.harness import registry
from conformance.harness.registry import builtin, conventions, derived, load, process_groups, select
from conformance.operators.batchnorm import BATCHNORM
from conformance.operators.builtin import OPERATORS
from conformance.operators.cnn import CNN
from conformance.operators.groupnorm import GROUPNORM
from conformance.operators.layernorm import LAYERNORM
from reference import CONVENTIONS, GROUPNORM_CONVENTIONS, KERAS, LAYERNORM_CONVENTIONS, TORCH

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
    "an unknown convention name": ("fake_adapters:UNKNOWN_CONVENTION", TypeError,
                                   "fake_adapters:UNKNOWN_CONVENTION: bad.caffe: unknown convention 'caffe'"),
    "a convention that is no record": (
        "fake_adapters:CONVENTION_NOT_A_RECORD", TypeError,
        "fake_adapters:CONVENTION_NOT_A_RECORD: bad.number: convention must be a name or a Convention, got int"),
}


@pytest.mark.parametrize("locator, error, text", LOAD_ERRORS.values(), ids=LOAD_ERRORS.keys())
def test_bad_locator_is_a_clear_error(locator: str, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as raised:
        select([locator])
    assert text in str(raised.value)


def test_loaded_implementations_know_their_locator() -> None:
    # A worker process finds the implementation again by this locator alone.
    assert [(i.name, i.locator) for i in load("fake_adapters:HEALTHY")] == [("healthy.torch", "fake_adapters:HEALTHY")]


def test_a_conventions_name_gives_its_built_in_record() -> None:
    (impl,) = load("fake_adapters:CONVENTION_BY_NAME")
    assert impl.convention is KERAS


def test_one_name_stands_for_one_record() -> None:
    # The conventions table and porting read records by name: two different ones of one name are refused.
    (honest,) = load("fake_adapters:KERAS_DECLARED_KERAS")
    assert conventions([honest, *builtin()])["keras"] is KERAS
    (impostor,) = load("fake_adapters:IMPOSTOR_KERAS")
    with pytest.raises(ValueError, match="two different conventions are named 'keras'"):
        conventions([honest, impostor])


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
               for module in ("test_forward.py", "test_conventions.py")],
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


def test_an_impostor_record_stops_the_run(run_checks) -> None:
    result = run_checks("test_conventions.py", "--impl", "reference.keras", "--impl", "fake_adapters:IMPOSTOR_KERAS")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --impl: two different conventions are named 'keras'*"])


def test_second_order_check_fails_a_missing_hessian_term(run_checks) -> None:
    """A double backward without the x-gamma cross terms fails every case with gamma and only those."""
    cases = [case for _, case in BATCHNORM.cases("hessian_vector_product")]
    with_gamma = sum(case.affine for case in cases)
    run_checks(
        "test_second_order.py", "--impl", "fake_adapters:NO_CROSS_TERM",
        outcomes={"failed": with_gamma, "passed": len(cases) - with_gamma},
        lines=["E * wrong.no_cross_term disagrees with the reference (torch convention)*"],
    )


def test_a_wrong_output_fails_the_output_checks_not_the_caller_arrays_check(run_checks) -> None:
    caller = BATCHNORM.cases("caller_arrays_unmodified")
    run_checks("test_contract.py", "--impl", "fake_adapters:OFF_BY_ONE", "-k", "caller_arrays_unmodified",
               outcomes={"passed": 2 * len(caller)})  # both modes
    outputs = BATCHNORM.cases("training_output")
    run_checks("test_forward.py", "--impl", "fake_adapters:OFF_BY_ONE", "-k", "training_output",
               outcomes={"failed": len(outputs)}, lines=["E *y: max |error| 1 (relative*"])


def test_families_are_spelled_like_their_names_and_select_by_that_spelling() -> None:
    for impl in builtin():
        assert impl.name.startswith(f"{impl.family}."), impl.name
    assert {i.name for i in select(["tf_keras"])} == {"tf_keras.fused", "tf_keras.nonfused", "tf_keras.fused.xla",
                                                    "tf_keras.nonfused.xla", "tf_keras.cnn",
                                                    "tf_keras.LayerNormalization", "tf_keras.GroupNormalization",
                                                    "tf_keras.fused.frozen", "tf_keras.nonfused.frozen",
                                                    "tf_keras.fused.masked", "tf_keras.nonfused.masked"}


def test_an_absent_device_is_collected_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "devices", lambda: {"cpu"})
    assert all(i.device == "cpu" for i in select([])) and all(i.device == "cpu" for i in select(["torch"]))
    assert {i.name for i in select(["torch.*cuda*"])} >= {"torch.BatchNorm2d[cuda]"}
    monkeypatch.setattr(registry, "devices", lambda: {"cpu", "cuda"})
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
    compiled = [i for i in builtin() if i.derivation is not None and i.derivation.transform == "compile"]
    assert compiled and not any(i.benchmarked for i in compiled)
    # Each names the eager implementation it compiles, which exists.
    names = {i.name for i in builtin()}
    assert all(len(i.derivation.bases) == 1 and i.derivation.bases[0] in names for i in compiled)


def test_every_built_in_implementation_declares_a_record() -> None:
    # Each a record of its operator's kind (BatchNorm's, the CNN's BatchNorms', LayerNorm's, GroupNorm's).
    for impl in builtin():
        assert impl.operator is OPERATORS[impl.operator.name], impl.name
        assert isinstance(impl.convention, impl.operator.convention), impl.name
    # The modules' record, and the functional form's own (no batch counter): an adapter module may declare one.
    torch = [i for i in builtin() if i.family == "torch"]
    assert {i.convention for i in torch if i.operator in (BATCHNORM, CNN)} == {TORCH, TORCH_FUNCTIONAL}
    assert {i.convention for i in torch if i.operator is LAYERNORM} == {
        LAYERNORM_CONVENTIONS["torch_layernorm"], TORCH_FUNCTIONAL_LAYERNORM,
        LAYERNORM_CONVENTIONS["torch_rmsnorm"], TORCH_FUNCTIONAL_RMSNORM}
    assert {i.convention for i in torch if i.operator is GROUPNORM} == {
        GROUPNORM_CONVENTIONS["torch_groupnorm"], TORCH_FUNCTIONAL_GROUPNORM,
        GROUPNORM_CONVENTIONS["torch_instancenorm"], TORCH_FUNCTIONAL_INSTANCENORM}


def test_porting_pairs_every_framework_with_the_reference_in_every_record_both_ways() -> None:
    (keras,) = select(["keras.jax"])
    pairs = derived([keras])
    both_ways = (("keras.jax", "reference.{}"), ("reference.{}", "keras.jax"))
    assert {p.name for p in pairs} == {f"ported.{a.format(c)}-to-{b.format(c)}" for c in CONVENTIONS
                                       for a, b in both_ways}
    assert all(p.derivation.transform == "port" and p.derivation.row == "keras.jax" for p in pairs)
    assert all(p.families == frozenset({"porting"}) and p.group == keras.group for p in pairs)
    # The reference alone, or a transform's implementation, gets no pairs.
    assert derived(select(["reference.torch", "keras.jax.jit"])) == []


def test_a_pair_of_a_float32_only_rank_4_layer_runs_the_cases_it_takes() -> None:
    # A layout is the pair's when any of its cases is supported (the first case there may be float64).
    fused = ReferenceAs("fused.float32", "keras")
    fused.capabilities = Capabilities(dtypes=frozenset({"float32"}), ranks=frozenset({4}))
    for pair in derived([fused]):
        cases = [case for _, case in pair.cases("porting")]
        assert cases and {(c.rank, c.dtype) for c in cases if not pair.unsupported(c.spec(pair.convention))} \
            == {(4, "float32")}, pair.name
