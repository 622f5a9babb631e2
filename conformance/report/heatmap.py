"""The error-ratio heatmap: worst |error| / tolerance per implementation and dtype x check family, on a log
scale in two
halves: 1e-4 .. 1 runs from green (far inside the tolerance) to yellow (at it), 1 .. 10 from orange
to red (failing by up to 10x and beyond).
One colour function serves the PNG (matplotlib) and the HTML table, so both show the same picture."""

from __future__ import annotations

import io
import math

__all__ = ["LOW", "HIGH", "colour", "png"]

LOW, HIGH = 1e-4, 10.0
_MISSING = "#eeeeee"


def _position(error_ratio: float) -> float:
    """0..1 along the colour scale."""
    if not math.isfinite(error_ratio):
        return 1.0
    clipped = min(max(error_ratio, LOW), HIGH)
    if clipped <= 1:
        return 0.5 * (math.log10(clipped) - math.log10(LOW)) / -math.log10(LOW)
    return 0.5 + 0.5 * math.log10(clipped) / math.log10(HIGH)


def colour(error_ratio: float | None) -> str:
    """CSS colour of a heatmap cell; grey where nothing was measured."""
    if error_ratio is None:
        return _MISSING
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["RdYlGn_r"](_position(error_ratio)))


def label(error_ratio: float | None, nonfinite: list[str] = ()) -> str:
    """The error ratio as a cell shows it; an infinite one caused by non-finite values names them (NaN)."""
    if error_ratio is None:
        return "-"
    if not math.isfinite(error_ratio):
        return "/".join(nonfinite) or "inf"
    return "0" if error_ratio == 0 else f"{error_ratio:.2g}"


def cell_label(worst: dict | None) -> str:
    """A heatmap cell: the label of a result's ``worst`` summary (None: nothing measured)."""
    return "-" if worst is None else label(worst["error_ratio"], worst.get("actual_nonfinite", ()))


def png(rows: list[str], columns: list[str], cells: dict[str, dict[str, dict]]) -> bytes:
    """The heatmap as PNG bytes; identical bytes for identical input (no timestamp in the metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, Normalize

    fig, ax = plt.subplots(figsize=(1.6 + 1.25 * len(columns), 0.9 + 0.34 * max(len(rows), 1)), dpi=100)
    values = {r: {c: worst["error_ratio"] for c, worst in row.items()} for r, row in cells.items()}
    grid = [[_position(values.get(r, {})[c]) if c in values.get(r, {}) else math.nan for c in columns] for r in rows]
    cmap = ListedColormap([colour(None)]) if not rows else matplotlib.colormaps["RdYlGn_r"].with_extremes(bad=_MISSING)
    ax.imshow(grid if rows else [[math.nan]], cmap=cmap, norm=Normalize(0, 1), aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            ax.text(j, i, cell_label(cells.get(r, {}).get(c)), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title("worst error / tolerance (<= 1 passes)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
