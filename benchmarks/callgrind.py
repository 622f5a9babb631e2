"""Counted metrics: instructions and simulated cache misses of an operation, under valgrind's callgrind.

A count does not depend on what else the machine is doing, so it can gate a change on a busy CI runner
where timings cannot (README "Benchmarks" has the measured comparison). What it captures: the work an
operation does (instructions executed, by every thread) and the memory traffic a fixed cache model
implies (first-level and last-level misses of a simulated 32 KiB L1 and 8 MiB last-level cache, the same
model on every machine, each measurement starting with cold caches). What it cannot: real bandwidth,
latency, out-of-order overlap, vector width effects on time, and thread scaling (valgrind runs one thread
at a time; measurements pin every framework to one thread so that no thread pool spins).

The measured process runs under ``valgrind --tool=callgrind --instr-atstart=no``: interpreter start-up
and framework imports run uninstrumented (about 5x slower instead of 50x), and :func:`count` switches
instrumentation on around each call through callgrind's client requests, issued by a five-line C hook
compiled on first use (gcc and valgrind's headers, which Debian's ``valgrind`` package ships).

The combined figure, :attr:`Counts.cost`, is KCachegrind's cycle estimate without branch simulation,
``Ir + 10 * L1 misses + 100 * LL misses``: an instruction costs a cycle, an L1 miss that hits the last
level about 10, a last-level miss (memory) about 100.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_MODEL", "Counts", "count", "measure", "unavailable"]

CACHE_MODEL = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64")
HEADER = Path("/usr/include/valgrind/callgrind.h")
HOOK_SOURCE = """#include <valgrind/callgrind.h>
void bn_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void bn_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
int bn_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
"""
_PART = re.compile(r"^desc: Trigger: Client Request: (?P<name>\S+)$.*?^totals: (?P<totals>[\d ]+)$", re.M | re.S)


@dataclass(frozen=True)
class Counts:
    """One measurement: callgrind's events, with ``--cache-sim=yes``."""

    Ir: int  # instructions executed
    Dr: int  # data reads
    Dw: int  # data writes
    I1mr: int  # first-level instruction cache misses
    D1mr: int  # first-level data read misses
    D1mw: int  # first-level data write misses
    ILmr: int  # last-level misses: instruction reads, data reads, data writes
    DLmr: int
    DLmw: int

    @property
    def instructions(self) -> int:
        return self.Ir

    @property
    def l1_misses(self) -> int:
        return self.I1mr + self.D1mr + self.D1mw

    @property
    def ll_misses(self) -> int:
        return self.ILmr + self.DLmr + self.DLmw

    @property
    def cost(self) -> int:
        """Estimated cycles: ``Ir + 10 * L1 misses + 100 * LL misses`` (see the module's docstring)."""
        return self.instructions + 10 * self.l1_misses + 100 * self.ll_misses


def unavailable() -> str | None:
    """Why counted metrics cannot be measured here, or None."""
    for program in ("valgrind", "gcc"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install valgrind gcc)"
    if not HEADER.exists():
        return f"{HEADER} is missing (Debian's valgrind package ships it)"
    return None


def _hook() -> ctypes.CDLL:
    digest = hashlib.sha256(HOOK_SOURCE.encode()).hexdigest()[:12]
    library = Path(tempfile.gettempdir()) / f"bn-callgrind-hook-{digest}.so"
    if not library.exists():
        with tempfile.TemporaryDirectory(dir=library.parent) as tmp:  # same file system: the rename is atomic
            source, built = Path(tmp) / "hook.c", Path(tmp) / "hook.so"
            source.write_text(HOOK_SOURCE)
            subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", built, source], check=True)
            os.replace(built, library)  # concurrent builders each put a whole library in place
    return ctypes.CDLL(str(library))


def count(name: str, run: Callable[[], object], repeats: int, warmup: int = 3) -> None:
    """In a process under :func:`measure`: ``repeats`` measurements of one call of ``run`` each, saved as
    callgrind dumps named ``name`` (letters, digits and ``_.-`` only), after ``warmup`` uncounted calls
    (the interpreter specializes code that runs repeatedly; counts settle after a few calls)."""
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"measurement name {name!r}: letters, digits and _.- only")
    hook = _hook()
    if not hook.bn_on_valgrind():
        raise RuntimeError("count() measures only in a process started by benchmarks.callgrind.measure()")
    for _ in range(warmup):
        run()
    for _ in range(repeats):
        hook.bn_start()
        run()
        hook.bn_stop(name.encode())


def measure(argv: list[str], env: Mapping[str, str] | None = None, timeout: float = 1800) -> dict[str, list[Counts]]:
    """Run ``python ARGV`` (this interpreter) under callgrind; the counts of every :func:`count` it made,
    by name, in the order made. Raises with the process's output when it fails."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"counted metrics are unavailable: {reason}")
    _hook()  # built here, once, rather than inside the slow instrumented process
    with tempfile.TemporaryDirectory() as out:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--cache-sim=yes", *CACHE_MODEL,
                   "--dump-line=no", f"--callgrind-out-file={out}/callgrind.out", "-q", sys.executable, *argv]
        done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed under callgrind (status {done.returncode}):\n"
                               f"{done.stderr[-4000:]}")
        found: dict[str, list[Counts]] = {}
        parts = sorted(Path(out).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        for part in parts:
            for match in _PART.finditer(part.read_text()):
                values = [int(v) for v in match["totals"].split()]
                found.setdefault(match["name"], []).append(Counts(*values, *[0] * (9 - len(values))))
    return found
