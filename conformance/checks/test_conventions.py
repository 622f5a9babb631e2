"""Each implementation's own constructor defaults are those of the convention it declares: the
conventions table in the README and report is backed by what the frameworks really do."""

import pytest

from reference import get_convention

pytestmark = pytest.mark.conformance


def test_defaults_match_convention(impl, conformance, request):
    conformance.expect_deviation({})
    conv = get_convention(impl.convention)
    defaults = impl.defaults()
    request.node.user_properties.append(("defaults", defaults))  # the report's conventions table
    expected = {"momentum": conv.default_momentum, "eps": conv.default_eps, "channel_axis": conv.channel_axis}
    assert defaults == expected, (
        f"{impl.name} defaults {defaults} differ from the {conv.name!r} convention"
    )
