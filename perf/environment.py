"""What a counted cost depends on besides this project's code, as facts a baseline records.

``environment()``: what changes the counts, so that a baseline measured with other values cannot be
compared: the interpreter build, the C library, valgrind, the CPU valgrind presents to the measured code
(libraries choose their kernels by its CPUID; valgrind shows a model of its own, not the host's), and the
versions of the distributions the benchmarked implementations run on (the frameworks this project pins
in its extras, NumPy and ml_dtypes). ``host()``: the machine itself (CPU model, its instruction-set
extensions, CPU count), which reaches the counts only through that presented CPU.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from benchmarks import callgrind

from .run import ROOT

__all__ = ["EXTENSIONS", "FRAMEWORK_EXTRAS", "distributions", "environment", "host"]

FRAMEWORK_EXTRAS = ("torch", "keras", "tfkeras", "flax", "onnx")  # pyproject extras of the benchmarked frameworks
# Instruction-set extensions that libraries dispatch kernels on (/proc/cpuinfo's names).
EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile")


def distributions() -> list[str]:
    """NumPy, ml_dtypes and the distributions of the framework extras, as pyproject.toml names them."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = ["numpy", "ml_dtypes", *(Requirement(r).name for extra in FRAMEWORK_EXTRAS for r in extras[extra])]
    return sorted(dict.fromkeys(names))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """The facts a baseline's counts hold for (the module's docstring); needs valgrind."""
    valgrind = subprocess.run(["valgrind", "--version"], check=True, capture_output=True, text=True).stdout.strip()
    return {
        "python": sys.version.replace("\n", " "),
        "libc": " ".join(platform.libc_ver()),
        "valgrind": valgrind,
        "cpu under valgrind": callgrind.presented_cpu(),
        **{d: _version(d) for d in distributions()},
    }


def host(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """The machine: CPU model, which of ``EXTENSIONS`` it has, CPU count."""
    fields: dict[str, str] = {}
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name", platform.processor() or platform.machine()),
            "extensions": [e for e in EXTENSIONS if e in flags], "cpus": os.cpu_count()}
