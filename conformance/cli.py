"""``bn-conformance``: the conformance suite from the installed package, for an implementation kept in
another repository. Every argument is pytest's or the suite's (``--impl``, ``--deviations``, ``--report``):

    bn-conformance --impl my_adapter:IMPLEMENTATIONS --deviations my_deviations.toml --report out/

is ``python -m pytest --pyargs conformance.checks ...`` run from the current directory, which is put on the
import path (as ``python -m`` does) so that the adapter module next to it is found, by the workers too.
The exit status is pytest's: 0 exactly when every check passed, deviated as registered or was skipped.
"""

from __future__ import annotations

import os
import sys

import pytest

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, os.getcwd())
    args = sys.argv[1:] if argv is None else argv
    # This module's own import comes before pytest's: the package cannot be assertion-rewritten, which only
    # concerns its __init__ (the checks are imported, and rewritten, by pytest).
    quiet = "ignore:Module already imported so cannot be rewritten; conformance:pytest.PytestAssertRewriteWarning"
    return int(pytest.main(["-W", quiet, "-p", "conformance.harness.plugin", "--pyargs", "conformance.checks", *args]))


if __name__ == "__main__":
    sys.exit(main())
