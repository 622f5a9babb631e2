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
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_MODEL", "Counts", "count", "measure", "presented_cpu", "unavailable"]

CACHE_MODEL = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64")
HEADER = Path("/usr/include/valgrind/callgrind.h")
HOOK_SOURCE = """#include <valgrind/callgrind.h>
void bn_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void bn_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
int bn_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
"""
CPU_PROBE = """#include <cpuid.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    unsigned r[12], a, b, c, d;
    char vendor[13] = {0}, brand[49] = {0};
    __cpuid(0, a, b, c, d);
    memcpy(vendor, &b, 4); memcpy(vendor + 4, &d, 4); memcpy(vendor + 8, &c, 4);
    for (unsigned i = 0; i < 3; i++) __cpuid(0x80000002 + i, r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
    memcpy(brand, r, 48);
    __cpuid(1, a, b, c, d);
    printf("%s, %s, CPUID %08x %08x %08x", brand, vendor, a, c, d);
    __cpuid_count(7, 0, a, b, c, d);
    printf(" %08x %08x %08x\\n", b, c, d);
    return 0;
}
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


def _compiled(code: str, *flags: str) -> Path:
    """``code`` compiled by gcc with ``flags``, once per source and flags (kept in the temporary directory)."""
    digest = hashlib.sha256(" ".join([code, *flags]).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"bn-callgrind-{digest}"
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # same file system: the rename is atomic
            source, built = Path(tmp) / "source.c", Path(tmp) / "built"
            source.write_text(code)
            subprocess.run(["gcc", "-O2", *flags, "-o", built, source], check=True)
            os.replace(built, target)  # concurrent builders each put a whole file in place
    return target


def _hook() -> ctypes.CDLL:
    return ctypes.CDLL(str(_compiled(HOOK_SOURCE, "-shared", "-fPIC")))


def presented_cpu() -> str:
    """The CPU that valgrind shows the measured code: vendor, brand and the CPUID feature words (leaf 1:
    signature, ecx, edx; leaf 7: ebx, ecx, edx) that libraries choose their kernels by. valgrind presents a
    model of its own, chosen by what the host supports (an AVX2 host: a Haswell), not the host's CPU."""
    if platform.machine() != "x86_64":
        return platform.machine()  # no CPUID
    probe = _compiled(CPU_PROBE)
    return subprocess.run(["valgrind", "-q", "--tool=none", probe], check=True, capture_output=True,
                          text=True).stdout.strip()


def count(name: str, run: Callable[[], object], repeats: int, warmup: int = 3) -> None:
    """In a process under :func:`measure`: ``repeats`` measurements of one call of ``run`` each, saved as
    callgrind dumps named ``name`` (letters, digits and ``_.-`` only), after ``warmup`` uncounted calls
    (the interpreter specializes code that runs repeatedly: CPython 3.11 a function's from its 8th call on,
    and the counts of a small operation drop by about 3% until then)."""
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"measurement name {name!r}: letters, digits and _.- only")
    hook = _hook()
    if not hook.bn_on_valgrind():
        raise RuntimeError("count() measures only in a process started by benchmarks.callgrind.measure()")
    # ctypes looks a function up on its first call: done here, or the first measurement would count it.
    start, stop, label = hook.bn_start, hook.bn_stop, name.encode()
    for _ in range(warmup):
        run()
    for _ in range(repeats):
        start()
        run()
        stop(label)


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
