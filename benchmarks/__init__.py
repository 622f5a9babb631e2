"""asv benchmarks of BatchNorm implementations: speed, memory, bandwidth and accuracy (README "Benchmarks").

asv imports this package before any benchmark module in every process it starts, so thread counts are
pinned here, before any framework is imported (frameworks size their thread pools when first imported):
``BN_BENCH_THREADS`` threads (default: every CPU this process may use) for every framework and the
reference.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

_CPUS = sorted(os.sched_getaffinity(0))
THREADS = int(os.environ.get("BN_BENCH_THREADS") or len(_CPUS))
if THREADS < len(_CPUS):
    # XLA's CPU client (JAX) has no thread-count setting; it sizes its pool from the CPUs it may use.
    os.sched_setaffinity(0, _CPUS[:THREADS])
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "REFERENCE_NUM_THREADS",
                  "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ[_variable] = str(THREADS)

# JAX compiles every operation it runs eagerly, in every benchmark's child process again; a shared
# on-disk cache halves the time a run spends on that (it is never inside a timed call: setup warms up).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".asv" / "jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# asv's forkserver (``asv_runner run_server``) imports this package once and forks one child per
# benchmark; modules named in BN_BENCH_PREIMPORT (set by ``python -m perf.run`` for one group of
# implementations that share their import-time environment, e.g. one Keras backend) are imported here
# once instead of in every child. asv's discovery process imports this package too and gains nothing.
if sys.argv[1:2] == ["run_server"]:
    for _module in filter(None, os.environ.get("BN_BENCH_PREIMPORT", "").split(",")):
        importlib.import_module(_module)
