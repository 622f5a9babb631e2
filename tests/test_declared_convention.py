"""End to end: a framework the suite has no record for declares its own, and the conventions, construction,
running-statistics and porting checks hold its layer to it, from construction onward.

The layers (``tests/declared_adapters.py``) are correct NumPy ones loaded by locator as a third party's: a
Haiku-style layer whose running averages are hidden values debiased by a counter, with no default momentum,
and one that averages the standard deviation. Every check passes (no deviation entry, no skip), each record's
constraints decide which cases are generated (no momentum that leaves a debiased average no new batch), the
report's facts carry the record's missing default as "required", and every porting pair with the reference
runs both ways, in each built-in record and the layer's own. The same layers with the bug each record
invites fail.
"""

from __future__ import annotations

import pytest
from declared_adapters import HAIKU_STYLE, STDDEV_STYLE
from facts import Properties, values

from conformance.operators.batchnorm import BATCHNORM
from reference import CONVENTIONS

pytest_plugins = ["pytester"]

MODULES = ("test_conventions.py", "test_construction.py", "test_running_stats.py", "test_porting.py")
DECLARED = {"declared_adapters:HAIKU_STYLE": HAIKU_STYLE, "declared_adapters:STDDEV_STYLE": STDDEV_STYLE}


def test_correct_layers_with_their_own_records_pass(run_checks) -> None:
    seen = Properties()
    impls = [arg for locator in DECLARED for arg in ("--impl", locator)]
    result = run_checks(*MODULES, *impls, plugins=[seen])
    assert result.ret == pytest.ExitCode.OK
    assert set(result.parseoutcomes()) <= {"passed", "deselected", "warnings"}  # no failure, deviation, skip, error
    assert set(seen.outcomes.values()) == {"passed"} and len(seen.outcomes) > 200

    ran: dict[str, set[str]] = {}
    for test, properties in seen.by_test.items():
        (name,) = values(properties, "implementation")
        ran.setdefault(name, set()).update(values(properties, "check"))
    for impl in DECLARED.values():
        # Every check of the four families, on the layer itself ...
        assert ran[impl.name] == {"defaults_match_convention", "state_from_construction", "running_statistics",
                                  "train_eval_train", "layer_options"}, impl.name
        # ... and porting both ways with the reference in every built-in record and its own.
        records = [*CONVENTIONS, impl.convention.name]
        pairs = {f"ported.{impl.name}-to-reference.{c}" for c in records} | {
            f"ported.reference.{c}-to-{impl.name}" for c in records}
        assert {name for name in ran if impl.name in name and name.startswith("ported.")} == pairs
        assert all(ran[pair] == {"porting"} for pair in pairs)

    # The report's facts: the framework's defaults as its constructor has them, a missing one "required".
    defaults = {values(p, "implementation")[0]: values(p, "defaults") for p in seen.by_test.values()
                if values(p, "check") == ["defaults_match_convention"]}
    assert defaults == {"haiku_style.numpy": [{"momentum": "required", "eps": 1e-5, "channel_axis": -1}],
                        "stddev_style.numpy": [{"momentum": "required", "eps": 1e-5, "channel_axis": -1}]}

    # What a record rules out is not generated, and counted: a debiased average cannot take new-batch weight 0
    # (momentum 1), neither record has the cumulative average (momentum=None), neither layer other dtypes.
    haiku = seen.not_generated["haiku_style.numpy"]["running_stats"]["unsupported"]
    weights = [case.new_batch_weight for _, case in BATCHNORM.cases("running_statistics")]
    assert haiku[next(k for k in haiku if k.startswith("momentum 1.0 ("))] == weights.count(0.0)
    assert haiku["momentum=None"] == weights.count(None)
    stddev = seen.not_generated["stddev_style.numpy"]["running_stats"]["unsupported"]
    assert not any(k.startswith("momentum 1.0") for k in stddev) and stddev["momentum=None"] == weights.count(None)
    assert seen.not_generated["haiku_style.numpy"]["construction"]["unsupported"]["dtype float16"] > 0


# (locator, check selection, a line the failure must show)
BUGS = {
    "not debiased": ("declared_adapters:NOT_DEBIASED", "train_eval_train and 16x3-cfirst-float32",
                     "E *   y: max |error| *, error/tolerance * at tolerance *"),
    "root of the averaged variance": ("declared_adapters:VARIANCE_ROOT",
                                      "running_statistics and 16x3-cfirst-float64 and 0.5-steps",
                                      "E *   running_std: max |error| *, error/tolerance * at tolerance *"),
}


@pytest.mark.parametrize("locator, selection, line", BUGS.values(), ids=BUGS.keys())
def test_the_bug_each_record_invites_fails(run_checks, locator: str, selection: str, line: str) -> None:
    result = run_checks("test_running_stats.py", "-k", selection, "--impl", locator, outcomes={"failed": 1},
                        lines=["E * disagrees with the reference (*_style convention) on case *", line])
    # Training itself is right: only what the record's rules decide is blamed.
    assert "running_mean: max" not in result.stdout.str()
