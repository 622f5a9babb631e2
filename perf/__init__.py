"""Tooling around the asv benchmarks (kept out of ``benchmarks/``, which asv imports whole): running them
per group of implementations (``perf.run``), the regression gate (``perf.gate``), the benchmark table of
docs/benchmarks.md (``perf.table``) and the dispersion study (``perf.dispersion``). It imports ``benchmarks``,
never the other way: what a benchmark measures with (callgrind, ``benchmarks/callgrind.py``) lives beside the
benchmarks."""
