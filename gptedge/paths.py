"""Where `gptedge build` puts its results by default, so `gptedge demo` can find them.

Kept here, in the torch-free root package, because the demo (which must never import torch) and
the pipeline (which trains with torch) both need the same answer. Paths are relative to the
current folder, like every other path a user types.
"""

from __future__ import annotations

from pathlib import Path

RUNS_DIR = Path("runs")
DEFAULT_PRESET = "tiny"
CHECKPOINT_DIR = "checkpoint"
BUNDLE_DIR = "bundle"


def run_dir(preset: str = DEFAULT_PRESET) -> Path:
    """runs/<preset>: one folder per preset holds the checkpoint and the bundle built from it."""
    return RUNS_DIR / preset


def checkpoint_dir(out: str | Path | None = None, preset: str = DEFAULT_PRESET) -> Path:
    return Path(out if out is not None else run_dir(preset)) / CHECKPOINT_DIR


def bundle_dir(out: str | Path | None = None, preset: str = DEFAULT_PRESET) -> Path:
    return Path(out if out is not None else run_dir(preset)) / BUNDLE_DIR
