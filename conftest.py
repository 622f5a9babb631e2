"""Root test setup: reproducible Hypothesis runs for the reference tests and the conformance suite.

"deterministic" is the default so that CI and every developer see the same examples; "dev" explores
new ones. Choose with the Hypothesis plugin's standard option: ``pytest --hypothesis-profile dev``.
"""

from hypothesis import settings

settings.register_profile(
    "deterministic", derandomize=True, database=None, deadline=None, max_examples=40, print_blob=True
)
settings.register_profile("dev", derandomize=False, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("deterministic")
