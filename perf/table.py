"""The benchmark table (docs/benchmarks.md), from saved asv results: each implementation's fraction of the bandwidth
floor per operation and dtype on the machine that ran them.

    python -m perf.table [--config asv.conf.json] [--commit HEAD] [--machine NAME] [--readme docs/benchmarks.md]

A cell is the geometric mean, over the shapes and channel positions the implementation ran, of
``bench_bandwidth.BatchNorm.track_copy_fraction``: the floor's bytes per second (``common.PASSES``)
over the copy bandwidth measured in the same process. 1.0 moves the unavoidable bytes as fast as a plain
copy; above 1 is possible where a tensor fits in cache. The table replaces what stands between the
``perf.table`` markers of that file; without ``--readme`` it is printed.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from .results import load, values
from .run import ROOT, commit_of

__all__ = ["MARKERS", "render", "write"]

FRACTION = "bench_bandwidth.BatchNorm.track_copy_fraction"
MARKERS = ("<!-- perf.table: start -->", "<!-- perf.table: end -->")
OPERATIONS = {"forward_training": "training forward", "forward_inference": "inference forward",
              "forward_backward": "forward+backward"}
DTYPES = ("float32", "bfloat16")


def render(config: Path, commit: str, machine: str | None = None) -> str:
    """The markdown table of ``commit``'s results under ``config``, of ``machine`` (needed where results of
    several machines are saved)."""
    results = load(config, commit)
    machines = sorted({r.params["machine"] for r in results})
    if not results:
        raise SystemExit(f"perf.table: no results for {commit[:8]} under {config}: run `python -m perf.run` first")
    if machine is None and len(machines) > 1:
        raise SystemExit(f"perf.table: results of several machines ({', '.join(machines)}): name one with --machine")
    results = [r for r in results if machine in (None, r.params["machine"])]
    if not results:
        raise SystemExit(f"perf.table: no results of machine {machine!r}; there are: {', '.join(machines)}")
    cells: dict[tuple[str, str, str], list[float]] = {}
    for result in results:
        for (impl, operation, _shape, _axis, dtype), fraction in values(result, FRACTION).items():
            cells.setdefault((impl, operation, dtype), []).append(fraction)
    machine = values(results[0], "bench_machine.Machine.track_copy_bandwidth").get(())
    threads = values(results[0], "bench_machine.Machine.track_threads").get(())
    columns = [(op, dtype) for dtype in DTYPES for op in OPERATIONS]
    lines = [
        f"Machine `{results[0].params['machine']}` ({results[0].params.get('cpu', '')}, "
        f"{threads and int(threads)} threads, copy bandwidth {machine and f'{machine:.1f}'} GB/s), commit "
        f"{commit[:8]}; geometric mean over shapes and channel positions.",
        "",
        "| implementation | " + " | ".join(f"{OPERATIONS[op]} {dtype}" for op, dtype in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for impl in sorted({key[0] for key in cells}):
        row = [cells.get((impl, op, dtype)) for op, dtype in columns]
        lines.append(f"| `{impl}` | " + " | ".join(
            f"{math.exp(sum(map(math.log, v)) / len(v)):.2f}" if v else "–" for v in row) + " |")
    return "\n".join(lines)


def write(readme: Path, table: str, markers: tuple[str, str] = MARKERS) -> None:
    """Replace what stands between the markers in ``readme`` with ``table``."""
    start, end = map(re.escape, markers)
    text, count = re.subn(f"{start}.*?{end}", lambda _: f"{markers[0]}\n{table}\n{markers[1]}",
                          readme.read_text(), flags=re.S)
    if count != 1:
        raise SystemExit(f"{readme} needs the markers {markers[0]} and {markers[1]} once")
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "asv.conf.json")
    parser.add_argument("--commit", default="HEAD", help="whose results (default HEAD)")
    parser.add_argument("--machine", help="whose results, where several machines' are saved")
    parser.add_argument("--readme", type=Path, help="write the table into this file, between the markers")
    args = parser.parse_args(argv)
    table = render(args.config, commit_of(args.commit), args.machine)
    if args.readme:
        write(args.readme, table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
