"""How far a run explores (``BN_EXPLORATION``): the stateful exploration's sequences and steps, and what the
fixed grids' costliest cases run under each profile. One reader of the variable, so that every part agrees
and a misspelt profile is an error, not a default."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["PROFILES", "Profile", "profile_name"]


@dataclass(frozen=True)
class Profile:
    sequences: int
    steps: int
    # When a failure is shrunk: "always", "unexpected" (not where the registry expects the check to fail: its
    # entry holds the sequence already) or "never".
    shrink: str = "unexpected"


# Shrinking a failure costs ten to fifty times finding it, a compiled path's new shape a second or more.
# ``ci``: what CI affords every implementation; ``kill``: the mutation self-test's (NumPy mutants are cheap,
# and whether a check failed is all its verdict reads); ``deep``: ``tox -e report``.
PROFILES = {"ci": Profile(sequences=4, steps=8), "kill": Profile(sequences=8, steps=10, shrink="never"),
            "deep": Profile(sequences=16, steps=12, shrink="always")}


def profile_name() -> str:
    """The profile ``BN_EXPLORATION`` names (``ci`` when unset)."""
    name = os.environ.get("BN_EXPLORATION", "ci")
    if name not in PROFILES:
        raise ValueError(f"BN_EXPLORATION={name!r} is not a profile: {', '.join(PROFILES)}")
    return name
