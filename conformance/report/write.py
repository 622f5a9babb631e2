"""Writing the report directory: ``conformance.json``, ``conformance.md``, ``conformance.html`` and
``heatmap.png``. Everything but the JSON is rendered from the JSON document, so ``python -m
conformance.report render`` gives the same files from a saved report."""

from __future__ import annotations

from pathlib import Path

from .blocks import Figure, to_html, to_markdown
from .content import blocks
from .results import dumps, load

__all__ = ["render", "write_report"]


def render(doc: dict, directory: Path) -> list[Path]:
    """Markdown, HTML and the heatmap PNG of ``doc`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = blocks(doc)
    figure = next(b for b in parts if isinstance(b, Figure))
    paths = [directory / "conformance.md", directory / "conformance.html", directory / figure.markdown_path]
    paths[0].write_text(to_markdown(parts))
    paths[1].write_text(to_html(parts, "BatchNorm conformance report"))
    paths[2].write_bytes(figure.png)
    return paths


def write_report(directory: Path, doc: dict) -> tuple[dict, list[Path]]:
    """The JSON document (:func:`conformance.report.results.document`), then everything rendered from it (as
    read back, so exactly what ``render`` gives from the saved file). Returns that document and the paths
    written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "conformance.json"
    path.write_text(dumps(doc))
    doc = load(path)
    return doc, [path, *render(doc, directory)]
