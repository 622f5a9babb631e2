"""Stateful exploration: a Hypothesis ``RuleBasedStateMachine`` drives each implementation and its reference
side in lockstep through sequences of calls the fixed grids never make, all through one Mirror per sequence
(so every comparison is the tolerance model's, every deviation the registry's).

A sequence builds a layer (any spec the implementation supports, drawn by the operator's ``exploration``
strategies), then takes steps: assign a state (values real training reaches: negative, zero, tiny and large
scales, zero and huge variances, offsets, counters), training and inference forwards, forward with backward
(again on the same batch, several times), mode switches, and new states between inference calls. After every
step the state is read and compared; a step with any failed comparison fails the sequence. The caller writes
into every array it exchanged with the layer once a call returned (``harness/aliasing.py``), so memory a
layer shares with what it returned or was given shows in a later result.

Hypothesis shrinks a failing sequence; the report holds the shrunk one (steps, shapes, value summaries) and
the command that replays it (the run is derandomized, so the same command finds the same sequence), and per
implementation the sequences, steps and distinct states covered. ``BN_EXPLORATION`` picks the profile
(:mod:`conformance.core.profiles`): ``ci`` (the default), ``kill`` (``tox -e mutants``) or ``deep``
(``tox -e report``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conformance.core.profiles import PROFILES, profile_name
from conformance.harness.conformance import Conformance
from conformance.harness.mirror import Mirror

pytestmark = pytest.mark.conformance


# The checks whose registered deviations a sequence stays clear of (they are the fixed grids' to record).
_COVERED = ("gradients", "running_statistics", "inference_after_training", "production_size")


@dataclass
class Coverage:
    """What the exploration of one implementation covered: sequences and steps run (shrinking's replays
    included) and the distinct abstract states met (the step, the mode, the batch's size class and memory
    layouts, the kinds of state last assigned)."""

    sequences: int = 0
    steps: int = 0
    states: set = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"sequences": self.sequences, "steps": self.steps, "states": len(self.states)}


def _replay(conformance: Conformance, request: pytest.FixtureRequest, profile: str) -> dict:
    """What the report builds the replay command from: the test, the ``--impl`` selection, the profile."""
    impl = conformance.impl
    selection = impl.locator if ":" in impl.locator else impl.name
    return {"test": request.node.nodeid, "impl": selection, "profile": profile}


def _machine(conformance: Conformance, coverage: Coverage, replay: dict) -> type[RuleBasedStateMachine]:
    impl = conformance.impl
    exploration = impl.operator.exploration

    class Exploration(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.mirror: Mirror | None = None
            self.training, self.assigned = True, ()
            self.last: object = None  # the last batch, for a backward again on it
            self.log: list[dict] = []

        def _record(self, step: dict) -> None:
            self.log.append(step)
            coverage.steps += 1
            coverage.states.add((step["step"], self.training, step.get("size"), step.get("x_memory"),
                                 step.get("dy_memory"), self.assigned))
            conformance.fact("exploration", {**replay, "case": self.case.id, "steps": self.log})

        def _assigned(self, summary: dict) -> None:
            self.assigned = tuple(sorted({kind for kinds in summary.values() if isinstance(kinds, list)
                                          for kind in kinds}))

        @initialize(data=st.data())
        def build(self, data) -> None:
            case = exploration.case(data.draw, impl.capabilities, impl.convention)
            assume(not impl.unsupported(case.spec(impl.convention)))
            for check in _COVERED:
                assume(conformance.deviation(case.params() | {"training": True}, check=check) is None)
            coverage.sequences += 1
            self.case = case
            self.mirror = conformance.example(case, aliasing=True)
            # Every sequence starts from a drawn state and mode: a short sequence still meets both.
            state, summary = exploration.state(data.draw, case, impl.convention)
            self.mirror.assign(state)
            self.training = data.draw(st.booleans())
            self._assigned(summary)
            self._record({"step": "build", "case": case.id, "training": self.training, **summary})

        @rule(data=st.data())
        def assign_state(self, data) -> None:
            state, summary = exploration.state(data.draw, self.case, impl.convention)
            self.mirror.assign(state)
            self._assigned(summary)
            self._record({"step": "assign_state", **summary})

        @rule()
        def switch_mode(self) -> None:
            self.training = not self.training
            self._record({"step": "switch_mode", "training": self.training})

        @rule(data=st.data())
        def forward(self, data) -> None:
            batch = exploration.batch(data.draw, self.case, self.training)
            self.mirror.forward(batch.x, self.training, may_raise=True)
            self.last = None
            self._record({"step": "forward", "training": self.training, **batch.summary})

        @precondition(lambda self: not impl.capabilities.no_gradients)
        @rule(data=st.data())
        def forward_backward(self, data) -> None:
            batch = exploration.batch(data.draw, self.case, self.training)
            self.mirror.forward_backward(batch.x, batch.dy, self.training, may_raise=True)
            self.last = (batch, self.training)
            self._record({"step": "forward_backward", "training": self.training, **batch.summary})

        @rule(data=st.data())
        def assign_between_inference_calls(self, data) -> None:
            """Inference, a new state, inference again: what a layer derived from the state it held must
            follow the new one."""
            before, after = (exploration.batch(data.draw, self.case, False) for _ in range(2))
            state, summary = exploration.state(data.draw, self.case, impl.convention)
            self.mirror.forward(before.x, False, may_raise=True)
            self.mirror.assign(state)
            self.mirror.forward(after.x, False, may_raise=True)
            self.last = None
            self._assigned(summary)
            self._record({"step": "assign_between_inference_calls", **summary, **after.summary})

        @precondition(lambda self: self.last is not None)
        @rule(times=st.integers(1, 3))
        def backward_again(self, times: int) -> None:
            """The same batch and upstream gradient again, in the mode of that call (a second backward
            through one forward is, behind the protocol, the call repeated)."""
            batch, training = self.last
            for _ in range(times):
                self.mirror.forward_backward(batch.x, batch.dy, training, may_raise=True)
            self._record({"step": "backward_again", "times": times, "training": training, **batch.summary})

        @invariant()
        def agrees(self) -> None:
            if self.mirror is None:
                return
            self.mirror.compare_state()
            self.mirror.verify()

    return Exploration


@pytest.fixture(name="profile_name")
def _profile_name() -> str:
    return profile_name()


@pytest.fixture
def available(conformance: Conformance, profile_name: str) -> Conformance:
    """``conformance``, with any entry covering this whole check applied once, outside the sequences; the
    profile is its one parameter (a deeper profile finds what a shallower one does not reach)."""
    conformance.expect_deviation({"profile": profile_name})
    return conformance


def test_exploration(available: Conformance, profile_name: str, request: pytest.FixtureRequest) -> None:
    impl = available.impl
    if impl.operator.exploration is None:
        available.unsupported("stateful exploration")
    profile, coverage = PROFILES[profile_name], Coverage()
    expected = available.deviation({"profile": profile_name})
    shrink = profile.shrink == "always" or profile.shrink == "unexpected" and expected is None
    machine = _machine(available, coverage, _replay(available, request, profile_name))
    try:
        run_state_machine_as_test(machine, settings=settings(
            max_examples=profile.sequences, stateful_step_count=profile.steps, derandomize=True, database=None,
            deadline=None, print_blob=False, suppress_health_check=list(HealthCheck),
            phases=[phase for phase in Phase if shrink or phase not in (Phase.shrink, Phase.explain)]))
    finally:
        available.fact("coverage", coverage.as_dict())
