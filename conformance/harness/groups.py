"""Groups of checks, run one after another in each process, and the run's lock that keeps a heavy group alone.

A group is the checks that need the same worker process (:attr:`Implementation.group`). The plugin runs a
process's checks group after group; when a group ends its workers stop (:func:`end`). Under pytest-xdist
the processes of a run share a lock file (:class:`RunLock`): a group holds it shared while it runs, and an
implementation that starts many processes of its own (``exclusive``: a world of rank processes) holds it
exclusively, so that no other group's processes are alive beside it and the run's memory stays bounded. A
process waiting for the lock has stopped its workers already.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

from . import isolation

__all__ = ["RunLock"]


class RunLock:
    """``flock`` on one file per run: shared for an ordinary group, exclusive for an exclusive one."""

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            handle, path = tempfile.mkstemp(prefix="bn-run-", suffix=".lock")
            os.close(handle)
        self.path = path
        self._file = None
        self.group: str | None = None

    def enter(self, group: str, exclusive: bool) -> None:
        """Hold the lock for ``group`` (no-op while it already is this process's group)."""
        if group == self.group:
            return
        self.leave()
        self._file = open(self.path, "a")  # noqa: SIM115 - held across calls until leave()
        fcntl.flock(self._file, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        self.group = group

    def leave(self) -> None:
        """The group is over: stop its workers, then let others have the lock."""
        isolation.shutdown()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
        self._file, self.group = None, None

    def remove(self) -> None:
        """Delete the lock file (the xdist controller, at the end of the run)."""
        self.leave()
        if os.path.exists(self.path):
            os.unlink(self.path)
