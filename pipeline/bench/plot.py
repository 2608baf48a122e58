"""The card's speedup figure: per-workload bars and the context x concurrency matrix, as PNG bytes.

Byte-stable for a given matplotlib: the Agg canvas, matplotlib's default style (not the user's
matplotlibrc), a fixed size and dpi, and no "Software" PNG text chunk.
"""

from __future__ import annotations

import io

from pipeline.bench.aggregate import Comparison, Report
from pipeline.bench.document import MISSING, percent

FIGURE_HEIGHT_IN = 4.2
PANEL_WIDTH_IN = 5.6
DPI = 110
BAR_COLOR = "#3a7ca5"
MISSING_COLOR = "#dddddd"


def render_plot(report: Report) -> bytes | None:
    """The figure's PNG bytes, or None when there is neither a summary nor a matrix."""
    compared = [row for row in report.summary if row.comparison.speedup is not None]
    if not compared and report.matrix is None:
        return None
    # Imported here: matplotlib takes a noticeable time to import and only this stage needs it.
    import matplotlib
    import matplotlib.style
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = int(bool(compared)) + int(report.matrix is not None)
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        figure = Figure(figsize=(PANEL_WIDTH_IN * panels, FIGURE_HEIGHT_IN), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = list(figure.subplots(1, panels, squeeze=False)[0])
        if compared:
            ax = axes.pop(0)
            speedups = [row.comparison.speedup or 0.0 for row in compared]
            names = [row.workload.name for row in compared]
            values = [speedup * 100 for speedup in speedups]
            bars = ax.bar(names, values, color=BAR_COLOR)
            ax.bar_label(bars, labels=[percent(speedup, 1) for speedup in speedups], padding=2)
            ks = sorted({row.comparison.k for row in compared if row.comparison.k})
            ax.set_title("Decode speedup by workload" + (f" (K={', '.join(map(str, ks))})" if ks else ""))
            ax.set_ylabel("speedup over no speculation (%)")
            ax.set_ylim(min(0.0, *values) * 1.2, max(1.0, *values) * 1.2)
            ax.axhline(0, color="black", linewidth=0.8)
        if report.matrix is not None:
            ax = axes.pop(0)
            matrix = report.matrix
            grid = np.array([[_percent_or_nan(c.comparison) for c in row] for row in matrix.cells])
            cmap = matplotlib.colormaps["Greens"].with_extremes(bad=MISSING_COLOR)
            finite = grid[np.isfinite(grid)]
            high = float(finite.max()) if finite.size else 1.0
            ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=min(0.0, float(finite.min(initial=0.0))),
                      vmax=high * 1.4, aspect="auto")  # fmt: skip
            for i, row in enumerate(matrix.cells):
                for j, cell in enumerate(row):
                    speedup = cell.comparison.speedup if cell.comparison else None
                    text = MISSING if speedup is None else percent(speedup, 0)
                    ax.text(j, i, text, ha="center", va="center", color="black")
            ax.set_xticks(range(len(matrix.spec.concurrencies)), [f"C={c}" for c in matrix.spec.concurrencies])
            ax.set_yticks(range(len(matrix.spec.contexts)), list(matrix.spec.contexts))
            ax.set_xlabel("concurrency")
            ax.set_ylabel("context")
            ax.set_title(f"{matrix.spec.name}: speedup by context and concurrency")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _percent_or_nan(comparison: Comparison | None) -> float:
    speedup = comparison.speedup if comparison else None
    return float("nan") if speedup is None else speedup * 100
