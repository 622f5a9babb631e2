"""The deviation registry: which entry covers which test, clear errors for malformed entries, the real
registry's entries can all match something, and through pytest a covered failure is an xfail while an
entry that no longer deviates fails the run (strict)."""

import ast
import fnmatch
from pathlib import Path
from typing import Any

import pytest

import conformance.checks
from conformance.checks.test_contract import BAD_INPUTS
from conformance.core.dtypes import ALL_DTYPES
from conformance.core.profiles import PROFILES
from conformance.harness.deviations import Deviation, load_registry, match
from conformance.harness.registry import builtin, derived
from conformance.operators.batchnorm.cases import SHARDINGS
from conformance.operators.builtin import OPERATORS
from conformance.transforms.sharded import WORLD_SIZES

pytest_plugins = ["pytester"]


def entry(**fields: Any) -> Deviation:
    """An entry covering everything unless ``fields`` narrow it."""
    return Deviation(**{"implementation": "*", "check": "*", "observed": "o", "reason": "r", "link": ""} | fields)


# (entry fields, (implementation, check, params, version), whether the entry covers that test)
MATCHING = {
    "implementation glob": ({"implementation": "keras.*"}, ("keras.jax", "gradients", {}, None), True),
    "implementation glob, other family": ({"implementation": "keras.*"}, ("tf_keras.fused", "c", {}, None), False),
    "implementation is a whole-name glob": ({"implementation": "keras"}, ("keras.jax", "gradients", {}, None), False),
    "implementation list": ({"implementation": ["keras.jax", "flax.*"]}, ("flax.nnx", "c", {}, None), True),
    "implementation list, other": ({"implementation": ["keras.jax", "flax.*"]}, ("keras.torch", "c", {}, None), False),
    "check glob": ({"check": "*_output"}, ("torch.F", "training_output", {}, None), True),
    "check glob, other check": ({"check": "*_output"}, ("torch.F", "running_statistics", {}, None), False),
    "check list": ({"check": ["gradients", "edge_case"]}, ("torch.F", "edge_case", {}, None), True),
    "check list, other check": ({"check": ["gradients", "edge_case"]}, ("torch.F", "training_output", {}, None), False),
    "when is a subset of params": ({"when": {"dtype": "float64"}}, ("x", "c", {"dtype": "float64", "rank": 4}, None),
                                   True),
    "when value differs": ({"when": {"dtype": "float64"}}, ("x", "c", {"dtype": "float32"}, None), False),
    "when list of values": ({"when": {"edge": ["a", "b"]}}, ("x", "c", {"edge": "b"}, None), True),
    "when list, other value": ({"when": {"edge": ["a", "b"]}}, ("x", "c", {"edge": "c"}, None), False),
    "when key the test lacks": ({"when": {"training": True}}, ("x", "c", {"dtype": "float32"}, None), False),
    # A parameter a check leaves unset (a framework option) is at its default.
    "when default, key unset": ({"when": {"use_fast_variance": "default"}}, ("x", "c", {"dtype": "float32"}, None),
                                True),
    "when default, key set": ({"when": {"use_fast_variance": "default"}}, ("x", "c", {"use_fast_variance": False},
                                                                             None), False),
    # TOML has no null: "None" names a parameter whose value is None (a cumulative average's new-batch weight).
    "when None": ({"when": {"new_batch_weight": "None"}}, ("x", "c", {"new_batch_weight": None}, None), True),
    "when None, a value": ({"when": {"new_batch_weight": "None"}}, ("x", "c", {"new_batch_weight": 0.1}, None), False),
    "when needs every key": ({"when": {"dtype": "float64", "training": True}},
                             ("x", "c", {"dtype": "float64", "training": False}, None), False),
    "when float": ({"when": {"momentum": 0.1}}, ("x", "c", {"momentum": 0.1}, None), True),
    "version in range": ({"versions": ">=2.0,<2.14"}, ("x", "c", {}, "2.13.1"), True),
    "version past range": ({"versions": ">=2.0,<2.14"}, ("x", "c", {}, "2.14.0"), False),
    "version with local label": ({"versions": ">=2.0,<2.14"}, ("x", "c", {}, "2.13.0+cpu"), True),
    # Release candidates and nightlies are what upgrade gates run; packaging < 24 excludes them by default.
    "release candidate in range": ({"versions": "<2.14"}, ("x", "c", {}, "2.13.0rc1"), True),
    "nightly in range": ({"versions": ">=2.14"}, ("x", "c", {}, "2.15.0.dev20250101+cpu"), True),
    # PEP 440: a nightly precedes its release (an entry wanting it says ">=2.14.0.dev0").
    "nightly of the first version": ({"versions": ">=2.14"}, ("x", "c", {}, "2.14.0.dev20250101"), False),
    "unknown version": ({"versions": "<2.14"}, ("x", "c", {}, None), True),
    "no range, any version": ({}, ("x", "c", {}, "99.0"), True),
    # A framework glob names implementations of several operators: an entry may keep to one.
    "operator named": ({"operator": "batchnorm"}, ("keras.jax", "c", {}, None, "batchnorm"), True),
    "operator named, another operator": ({"operator": "batchnorm"}, ("keras.jax.LayerNormalization", "c", {}, None,
                                                                     "layernorm"), False),
    "operator list": ({"operator": ["batchnorm", "cnn"]}, ("flax.nnx.cnn", "c", {}, None, "cnn"), True),
    "operator unnamed: every operator": ({}, ("x", "c", {}, None, "layernorm"), True),
}


@pytest.mark.parametrize("fields, test, covered", MATCHING.values(), ids=MATCHING.keys())
def test_entry_matching(fields: dict, test: tuple, covered: bool) -> None:
    assert entry(**fields).matches(*test) is covered


def test_first_matching_entry_wins() -> None:
    narrow, broad = entry(when={"dtype": "float16"}, observed="narrow"), entry(observed="broad")
    registry = [entry(implementation="other"), narrow, broad]
    assert match(registry, ("torch.F",), "gradients", {"dtype": "float16"}, None) is narrow
    assert match(registry, ("torch.F",), "gradients", {"dtype": "float32"}, None) is broad
    assert match(registry[:1], ("torch.F",), "gradients", {}, None) is None


def test_an_implementations_own_name_comes_before_the_names_it_takes_entries_of() -> None:
    # A ported pair is known by its own name, then its framework implementation's: an entry for the pair
    # explains it before one for the framework does, whatever their order in the file.
    framework, pair = entry(implementation="flax.nnx", observed="framework"), entry(implementation="ported.*")
    names = ("ported.flax.nnx-to-reference.torch", "flax.nnx")
    assert match([framework, pair], names, "porting", {}, None) is pair
    assert match([framework], names, "porting", {}, None) is framework
    assert match([framework, pair], ("flax.linen",), "porting", {}, None) is None


BODY = """
implementation = "torch.*"
check = "gradients"
observed = "o"
reason = "r"
link = ""
"""
GOOD = "[[deviation]]" + BODY
# (an entry appended after GOOD, what the error must say: entry 1 is the second one)
MALFORMED = {
    "misspelt key": (BODY.replace("check =", "chek ="), "entry 1: unknown keys ['chek'], missing ['check']"),
    "missing reason": (BODY.replace('reason = "r"', ""), "entry 1: unknown keys [], missing ['reason']"),
    "bad version range": (BODY + 'versions = ">=2.x"', "entry 1: Invalid specifier: '>=2.x'"),
    "when not a table": (BODY + 'when = "dtype=float64"', "entry 1: when must be a table"),
    "check not a glob": (BODY.replace('"gradients"', "3"), "entry 1: check must be a glob or a list of globs"),
    "empty check list": (BODY.replace('"gradients"', "[]"), "entry 1: check must be a glob or a list of globs"),
    "link not a string": (BODY.replace('link = ""', "link = 1"), "entry 1: link must be a string"),
    "implementation not a glob": (BODY.replace('"torch.*"', "{ name = 'x' }"),
                                  "entry 1: implementation must be a glob or a list of globs"),
}


@pytest.mark.parametrize("body, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_entry_is_a_clear_error_at_load(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "deviations.toml"
    path.write_text(GOOD + "\n[[deviation]]\n" + body.strip() + "\n")
    with pytest.raises(ValueError) as raised:
        load_registry(path)
    assert str(raised.value).startswith(f"deviations.toml {message}")


# ---- the real registry -------------------------------------------------------------------------------

CHECKS = Path(conformance.checks.__file__).parent
# Read from the source: a check module may need a framework to import, its check names never do.
CHECK_NAMES = {
    node.name.removeprefix("test_")
    for module in CHECKS.glob("test_*.py")
    for node in ast.walk(ast.parse(module.read_text()))
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
}
# Parameters a check can be matched on: the case's, plus those the checks add (``conformance(case,
# edge=..., training=...)`` in test_edge_cases and test_gradients, ``bad_input=...`` in test_contract).
# Every operator's cases, and its named edge cases.
PARAM_VALUES: dict[str, set | None] = {key: None for op in OPERATORS.values() for check in op.grids
                                       for _, case in op.cases(check) for key in case.params()}
PARAM_VALUES |= {"dtype": set(ALL_DTYPES), "training": {True, False}, "bad_input": {*BAD_INPUTS, "mismatched_dy"},
                 "edge": {name for op in OPERATORS.values() for name, _ in op.cases("edge_case")}}
# Framework options: their alternatives, or "default" for a case that leaves one unset.
PARAM_VALUES |= {name: {*values, "default"} for op in OPERATORS.values() for name, (values, _) in op.options.items()}
# The synchronized checks' case options (transforms/sharded.py): how the global batch is sharded over how many
# ranks, and whether the framework's own training loop runs the steps.
PARAM_VALUES |= {"sharding": {*SHARDINGS, "default"}, "world_size": {*WORLD_SIZES, "default"},
                 "training_loop": {"model.fit", "default"}}
# A ported pair's parties (transforms/porting.py, Implementation.parameters); its name says the same
# (``ported.SOURCE-to-TARGET``), and an entry may name it by a glob on that instead.
PARAM_VALUES |= {"source": None, "target": None}
# The exploration's one parameter: its profile (checks/test_exploration.py).
PARAM_VALUES |= {"profile": set(PROFILES)}
REGISTRY = load_registry()
# Every implementation a run can have: the built-in ones and what the transforms derive from them (ported pairs).
KNOWN = {impl.name: impl.operator.name for impl in [*builtin(), *derived(builtin())]}


@pytest.mark.parametrize("deviation", REGISTRY, ids=[f"{i}-{d.implementation}" for i, d in enumerate(REGISTRY)])
def test_registry_entry_can_match(deviation: Deviation) -> None:
    # A misspelt implementation, check, parameter or value would make an entry silently cover nothing.
    implementations = deviation.implementation if isinstance(deviation.implementation, list) else [
        deviation.implementation]
    operators = deviation.operator if isinstance(deviation.operator, list) else [deviation.operator]
    for implementation in implementations:  # of an operator the entry names
        assert any(fnmatch.fnmatchcase(name, implementation) and any(fnmatch.fnmatchcase(op, g) for g in operators)
                   for name, op in KNOWN.items()), (implementation, operators)
    checks = deviation.check if isinstance(deviation.check, list) else [deviation.check]
    for check in checks:
        assert any(fnmatch.fnmatchcase(name, check) for name in CHECK_NAMES), f"{check!r} is none of {CHECK_NAMES}"
    for key, wanted in deviation.when.items():
        assert key in PARAM_VALUES, f"when key {key!r} is no parameter of any check"
        if PARAM_VALUES[key] is not None:
            values = wanted if isinstance(wanted, list) else [wanted]
            assert set(values) <= PARAM_VALUES[key], f"when {key} = {wanted!r} is not among {PARAM_VALUES[key]}"


# ---- through pytest --------------------------------------------------------------------------------

REGISTRY_UNDER_TEST = """
[[deviation]]
implementation = "reference.torch"
check = "running_statistics"
when = { dtype = "float32", rank = 2 }
observed = "nothing any more: the reference agrees with itself"
reason = "a stale entry"
link = ""

[[deviation]]
implementation = "wrong.*"
check = ["training_output", "running_statistics"]
when = { new_batch_weight = 0.1 }
observed = "Keras momentum and a biased running variance under the torch convention"
reason = "a known deviation"
link = "https://example.invalid/issue/1"
"""


def test_deviation_is_xfail_and_stale_entry_fails_the_run(run_checks, tmp_path: Path) -> None:
    # A registry of the user's own (--deviations), beside the project's, which covers neither implementation.
    path = tmp_path / "deviations.toml"
    path.write_text(REGISTRY_UNDER_TEST)
    run_checks(
        "test_running_stats.py", "-k", "test_running_statistics and 16x3-cfirst-float32 and not new_batch_weight",
        "--impl", "reference.torch", "--impl", "fake_adapters:KERAS_DECLARED_TORCH", "--deviations", str(path),
        outcomes={"failed": 1, "xfailed": 1},
        lines=[
            "_* test_running_statistics?reference.torch-16x3-cfirst-float32-steps=3? _*",
            "[[]XPASS(strict)] nothing any more: the reference agrees with itself ()",
            "XFAIL *test_running_statistics?wrong.keras_as_torch-16x3-cfirst-float32-steps=3?* - Keras momentum and a"
            " biased running variance under the torch convention (https://example.invalid/issue/1)",
        ],
    )
