"""Each implementation's own constructor defaults are those of the convention record it declares (a
default the constructor lacks is :data:`reference.REQUIRED`): the conventions table in the report is backed
by what the frameworks really do."""

import pytest

from reference import REQUIRED

pytestmark = pytest.mark.conformance


def test_defaults_match_convention(impl, conformance, request):
    conformance.expect_deviation({})
    defaults = impl.defaults()
    # The report's conventions table: a missing default is written "required".
    request.node.user_properties.append(("defaults", {k: "required" if v is REQUIRED else v
                                                      for k, v in defaults.items()}))
    expected = impl.convention.defaults()
    assert defaults == expected, f"{impl.name} defaults {defaults} differ from the {impl.convention.name!r} convention"
