"""The console tables and PNG charts of ``gptedge bench`` and ``gptedge eval``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from gptedge import atomic
from gptedge.errors import write_error


def median(figure: Any) -> float:
    """A figure kept as {"median", "min", "max"} (several runs) or as a plain number."""
    return figure["median"] if isinstance(figure, dict) else figure


def write_report(out: Path, name: str, report: dict, table: str, chart: Callable[[dict, Path], Path | None]) -> None:
    """OUT/name.json, the table on stdout, OUT/name.png (when matplotlib is there), and where they went."""
    import json

    print(table)
    try:
        atomic.write_text(out / f"{name}.json", json.dumps(report, indent=2) + "\n")
        png = chart(report, out / f"{name}.png")
    except OSError as e:  # a folder that could not be made after all (/proc), a full disk
        raise write_error(e, out, "run it again") from None
    print(f"wrote {out / f'{name}.json'}" + (f" and {png}" if png else ""))


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns: the first left-aligned (names), the rest right-aligned (figures)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    )


def pyplot(required: bool = True) -> Any:
    """matplotlib's pyplot on the file-only Agg backend; without matplotlib, None (with a note on
    stderr) unless ``required``, where the ImportError propagates."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if required:
            raise
        print("matplotlib is not installed, so no chart: pip install matplotlib (or gptedge[demo])", file=sys.stderr)
        return None
    return plt


def save_png(fig: Any, path: Path) -> Path:
    """Write the figure atomically and free it."""
    plt = pyplot()
    if fig.get_layout_engine() is None:  # a figure made with its own layout (constrained) keeps it
        fig.tight_layout()
    with atomic.temporary_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
