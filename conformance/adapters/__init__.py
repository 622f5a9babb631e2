"""Implementations under test, one adapter module each.

Every module here except ``base`` (the protocol) defines ``IMPLEMENTATIONS``, a list of
:class:`~conformance.adapters.base.Implementation` instances; adding an implementation means adding one
such module (the harness finds it: :mod:`conformance.harness.registry`). Adapter modules import the
protocol, the operators and the reference, never the harness.
"""
