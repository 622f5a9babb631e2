"""``python -m conformance.report render`` re-renders Markdown, HTML and PNG from a saved
``conformance.json``; ``python -m conformance.report readme`` puts its summary matrix into a page (docs/results.md)
between the ``conformance-matrix`` markers (so the matrix is generated, never hand-edited);
``python -m conformance.report merge --out DIR SHARD.json...`` merges the reports of the shards of one run
(``pytest --shard i/n``) into one (``conformance/report/merge.py``);
``python -m conformance.report diff OLD.json NEW.json [--factor F] [--markdown FILE] [--json FILE]`` says what
changed between two reports, exit status 1 when anything got worse (``conformance/report/diff.py``)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .blocks import Text, to_markdown
from .content import matrix_table, verdict
from .results import dumps, load
from .write import render

BEGIN, END = "<!-- conformance-matrix:begin -->", "<!-- conformance-matrix:end -->"


def readme_section(doc: dict) -> str:
    backends: dict[str, list[str]] = {}
    for i in doc["implementations"]:
        if i["available"] and i["family"] != "reference" and i["version"]:  # a pair with no case never ran
            names = backends.setdefault(f"{i['framework']} {i['version']}", [])
            if i["backend"] and i["backend"] not in names:
                names.append(i["backend"])
    versions = ", ".join(f"{fw} (on {', '.join(b)})" if b else fw for fw, b in backends.items())
    intro = Text(f"From `tox -e report` on {doc['created'][:10]} ({doc['environment']['platform']}; "
                 f"{versions or 'no framework available'}). {verdict(doc)}")
    return to_markdown([intro, matrix_table(doc)])


def update_readme(readme: Path, doc: dict, markers: tuple[str, str] = (BEGIN, END), section=readme_section) -> None:
    """Replace what lies between ``markers`` in ``readme`` with ``section(doc)``."""
    begin, end = markers
    text = readme.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {begin} ... {end} markers")
    readme.write_text(pattern.sub(lambda _: f"{begin}\n{section(doc)}{end}", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.report", description=__doc__)
    parser.add_argument("command", choices=("render", "readme", "merge", "diff"))
    parser.add_argument("reports", nargs="*", type=Path,
                        help="the shards' conformance.json (merge); OLD.json NEW.json (diff)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="where the merged report goes (merge)")
    parser.add_argument("--report", type=Path, default=Path("report/conformance.json"), help="the saved report")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="README to update (readme)")
    parser.add_argument("--factor", type=float, default=2.0,
                        help="an error ratio moved where new / old is above this or below its inverse (diff)")
    parser.add_argument("--markdown", type=Path, help="write the Markdown here instead of stdout (diff)")
    parser.add_argument("--json", type=Path, help="write the differences as JSON here (diff)")
    args = parser.parse_intermixed_args(argv)
    if args.command == "merge":
        return _merge(args.reports, args.out)
    if args.command == "diff":
        if len(args.reports) != 2:
            parser.error("diff takes two reports: OLD.json NEW.json")
        return _diff(*args.reports, args.factor, args.markdown, args.json)
    doc = load(args.report)
    if args.command == "render":
        for path in render(doc, args.report.parent):
            print(path)
    else:
        update_readme(args.readme, doc)
        print(f"updated the summary matrix in {args.readme}")
    return 0


def _merge(shards: list[Path], out: Path) -> int:
    from .merge import MergeError, merge_files

    try:
        doc, paths = merge_files(shards, out)
    except (MergeError, ValueError, OSError) as exc:
        print(f"merge: {exc}", file=sys.stderr)
        return 2
    print(verdict(doc))
    for path in paths:
        print(path)
    return 0


def _diff(old: Path, new: Path, factor: float, markdown: Path | None, json_out: Path | None) -> int:
    from .diff import compare
    from .diff_content import blocks

    try:
        d = compare(load(old), load(new), factor)
    except (ValueError, OSError) as exc:
        print(f"diff: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(blocks(d))
    if markdown is None:
        sys.stdout.write(text)
    else:
        markdown.write_text(text)
    if json_out is not None:
        json_out.write_text(dumps(d))
    return 1 if d["worse"] else 0


if __name__ == "__main__":
    sys.exit(main())
