"""The run's record beside its checkpoint: ``log.jsonl`` (one JSON object per line) and ``loss.png``.

Lines are appended as training goes; a resumed run first drops the lines written after its
checkpoint (a killed run may have logged steps it never saved), so the log always tells the story
of the weights in the checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gptedge import atomic


class RunLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):  # not a line edited by hand
                rows.append(row)
        return rows

    def truncate_after(self, step: int) -> None:
        rows = [r for r in self.read() if r["step"] <= step]
        atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def write(self, **row: Any) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def plot_losses(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss (raw and smoothed) and held-out loss against the step, written atomically."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    held = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps, losses = np.array(train).T
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
        w = max(1, len(losses) // 40) | 1  # odd: a centred moving average, which does not lag
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w // 2 : len(steps) - w // 2], smooth, color="tab:blue", label="training loss (smoothed)")
    if held:
        steps, losses = zip(*held)
        ax.plot(steps, losses, "o-", color="tab:orange", label="held-out loss")
    baseline = next((r["unigram_loss"] for r in rows if "unigram_loss" in r), None)
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="unigram baseline (held-out)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic.temporary_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
