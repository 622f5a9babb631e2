"""This checkout's sources, copied without what a checkout holds besides them (environments, builds, caches,
reports), for the tests that install the project as a user would."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Anywhere in the tree, and (the outputs of runs, some named like packages: conformance/report) at its root only.
_CACHES = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis", ".pytest_cache")
_AT_ROOT = {".git", ".tox", ".venv", ".asv", "build", "report", "report-mutants", "site"}


def _ignored(directory: str, names: list[str]) -> set[str]:
    return _CACHES(directory, names) | (_AT_ROOT & set(names) if Path(directory) == ROOT else set())


def copy_sources(destination: Path) -> Path:
    """The working tree's sources at ``destination`` (pip then builds in the copy, never in the checkout,
    where an earlier build may have left modules that no longer exist)."""
    shutil.copytree(ROOT, destination, ignore=_ignored)
    return destination
