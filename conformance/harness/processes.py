"""The processes a run starts, kept bounded and never left behind, and what they cost.

:func:`spawn` starts every helper process of the suite (implementation workers, the ranks of a
distributed world, a framework run in a fresh interpreter), and each calls :func:`adopt` first thing: on
Linux the kernel then kills it when the process that started it dies (``PR_SET_PDEATHSIG``), so a run
stopped from outside (a CI time limit's SIGKILL) takes its whole tree down with it, ranks included.
:class:`TreeSampler` measures a process tree while it runs: its peak proportional set size (PSS: shared
pages divided among the processes sharing them, so the tree's sum is what it occupies) and its most
processes alive at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["TreeSampler", "adopt", "pss", "spawn", "tree", "tree_pss"]

_PR_SET_PDEATHSIG = 1
_PARENT = "BN_PARENT_PID"  # how spawn tells a child who started it


def spawn(argv: Sequence[str], env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    """``subprocess.Popen(argv, ...)`` of one of the suite's own programs, which calls :func:`adopt`. The
    child sees what this process imports from (``PYTHONPATH``: a third party's adapter module included)."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           _PARENT: str(os.getpid())}
    return subprocess.Popen(list(argv), env=env, **popen)


def adopt() -> None:
    """In a child :func:`spawn` started: die when the parent does (Linux). Where the parent died before this
    took effect, exit now. Elsewhere the child exits when its pipe to the parent closes, as every worker of
    the suite does."""
    parent = os.environ.pop(_PARENT, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):
        os._exit(1)


def tree(root: int) -> list[int]:
    """``root`` and every process descending from it (Linux ``/proc``; ``[root]`` elsewhere)."""
    if not os.path.isdir("/proc"):
        return [root]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def pss(pid: int) -> int:
    """One process's PSS in bytes (0 where it cannot be read: gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss(root: int) -> tuple[int, int]:
    """``(PSS in bytes, processes)`` of the tree under ``root`` now."""
    pids = tree(root)
    return sum(pss(pid) for pid in pids), len(pids)


class TreeSampler:
    """Samples the tree under ``root`` (default: this process) every ``interval_s`` in a daemon thread until
    :meth:`stop`, which returns ``{"peak_pss_bytes", "peak_processes", "wall_s", "samples"}``."""

    def __init__(self, root: int | None = None, interval_s: float = 0.5) -> None:
        self.root, self.interval_s = root or os.getpid(), interval_s
        self.peak_pss = self.peak_processes = self.samples = 0
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        total, processes = tree_pss(self.root)
        self.peak_pss, self.peak_processes = max(self.peak_pss, total), max(self.peak_processes, processes)
        self.samples += 1

    def stop(self) -> dict[str, float | int]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {"peak_pss_bytes": self.peak_pss, "peak_processes": self.peak_processes,
                "wall_s": round(time.perf_counter() - self._started, 3), "samples": self.samples}
