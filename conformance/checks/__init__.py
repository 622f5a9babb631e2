"""The checks: one module per property, each parametrized over every implementation and case."""
