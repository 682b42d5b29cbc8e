"""Plots as PNG bytes (matplotlib's Agg backend: no screen needed)."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: panels a row in a figure of many: 4 panels of ~3 inches fill a report's full-width cell (``report_page``) at
#: 110 dpi without shrinking; more in one row made strips whose text a page shrinks past reading
PANELS_PER_ROW = 4


def panel_grid(n: int, width: float, height: float, per_row: int = PANELS_PER_ROW):
    """A figure of ``n`` panels of ``width`` × ``height`` inches, at most ``per_row`` a row: (figure, the ``n``
    axes in reading order); the grid's spare cells are hidden."""
    cols = max(1, min(n, per_row))
    rows = max(1, -(-n // cols))
    fig, axes = pyplot().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def figure_png(fig, dpi: int = 110) -> bytes:
    """A figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()
