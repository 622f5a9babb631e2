"""What a check works with: :class:`Conformance`, the ``conformance`` fixture's object.

``conformance(case, **extra)`` is the usual start: skip what the implementation does not support, expect a
registered deviation for the case's parameters (plus ``extra``: the check's own parameters), and return a
:class:`~conformance.harness.mirror.Mirror` that records every comparison. What the report needs goes onto
the test's report as ``user_properties``, as facts, never sentences: the case's parameters, every
comparison, the deviation matched (with its registry), what was unsupported, and the role the operator's
vocabulary gives the result.
"""

from __future__ import annotations

import pytest

from ..adapters.base import Implementation
from ..core.case import Case
from ..core.comparison import Comparison
from .deviations import Deviation, match
from .mirror import Mirror

__all__ = ["Conformance"]

# Facts of one Hypothesis example: replaced with the example (:meth:`Conformance.example`).
_EXAMPLE = ("exploration",)


class Conformance:
    """One check of one implementation: its skips, deviations and recording. A Hypothesis-driven check
    starts each example with :meth:`example`, so that the report holds the example that decided the outcome
    (the last one run: the shrunk failure, or the last of a passing run), not every example's comparisons."""

    def __init__(self, request: pytest.FixtureRequest, impl: Implementation, registry: list[Deviation]) -> None:
        self.impl, self.registry = impl, registry
        self.check = request.node.originalname.removeprefix("test_")
        self._request = request
        self._properties = request.node.user_properties
        if reason := impl.missing():
            pytest.skip(reason)

    def __call__(self, case: Case, constructed: bool = False, **extra) -> Mirror:
        """``constructed=True``: the layer keeps the state it was built with (see :class:`Mirror`)."""
        self.require(case)
        self.expect_deviation(case.params() | self.impl.parameters() | extra)
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
        return match(self.registry, self.impl.deviation_names(), check or self.check, params, version,
                     self.impl.operator.name)

    def expect_deviation(self, params: dict) -> None:
        """Record ``params`` (and the role they give the result); if a registry entry covers them, the check is
        expected to fail (strict)."""
        self._properties.append(("params", params))
        if role := self.impl.operator.vocabulary.roles(self.check, params):
            self._properties.append(("roles", [role]))
        if entry := self.deviation(params):
            self._properties.append(("deviation", entry.as_dict()))
            self._request.applymarker(pytest.mark.xfail(reason=f"{entry.observed} ({entry.link})", strict=True))

    def record(self, comparison: Comparison) -> None:
        self._properties.append(("comparison", comparison.as_dict()))

    def mirror(self, case: Case, constructed: bool = False, aliasing: bool = False) -> Mirror:
        return Mirror(self.impl, case, on_compare=self.record, constructed=constructed, aliasing=aliasing)

    def example(self, case: Case, aliasing: bool = False) -> Mirror:
        """A Mirror for one Hypothesis example, replacing the parameters and comparisons of earlier ones (and
        the facts :meth:`fact` recorded for them)."""
        self._properties[:] = [(k, v) for k, v in self._properties if k not in ("params", "comparison", *_EXAMPLE)]
        self._properties.append(("params", case.params() | self.impl.parameters()))
        return self.mirror(case, aliasing=aliasing)

    def fact(self, name: str, value: object) -> None:
        """A fact of this check for the report (``exploration``: a shrunk sequence and its replay command;
        ``coverage``: what it covered), replacing an earlier one of that name."""
        self._properties[:] = [(k, v) for k, v in self._properties if k != name]
        self._properties.append((name, value))
