"""Where results go by default, and what a folder a user names stands for.

Kept here, in the torch-free root package, because the demo (which must never import torch) and
the pipeline (which trains with torch) both need the same answer. Paths are relative to the
current folder, like every other path a user types.

Each command takes what the one before it wrote: ``gptedge train --out RUN`` makes RUN/checkpoint,
``gptedge build --out RUN`` also RUN/bundle, so a command that needs a checkpoint or a bundle also
accepts the run folder holding it. ``resolve_checkpoint`` and ``resolve_bundle`` are that rule, in
one place, called by the command-line front ends only: the library functions stay strict about
what they are given.
"""

from __future__ import annotations

from pathlib import Path

RUNS_DIR = Path("runs")
DEFAULT_PRESET = "tiny"
CHECKPOINT_DIR = "checkpoint"
BUNDLE_DIR = "bundle"
CHECKPOINT_FILE = "config.json"  # what makes a folder a checkpoint (train/checkpoint.py CONFIG_FILE)
BUNDLE_FILE = "manifest.json"  # what makes a folder a bundle (runtime/contract.py MANIFEST_FILE)


def run_dir(preset: str = DEFAULT_PRESET) -> Path:
    """runs/<preset>: one folder per preset holds the checkpoint and the bundle built from it."""
    return RUNS_DIR / preset


def checkpoint_dir(out: str | Path | None = None, preset: str = DEFAULT_PRESET) -> Path:
    return Path(out if out is not None else run_dir(preset)) / CHECKPOINT_DIR


def bundle_dir(out: str | Path | None = None, preset: str = DEFAULT_PRESET) -> Path:
    return Path(out if out is not None else run_dir(preset)) / BUNDLE_DIR


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder a user means by ``path``: see ``_resolve``."""
    return _resolve(Path(path), CHECKPOINT_FILE, CHECKPOINT_DIR)


def resolve_bundle(path: str | Path) -> Path:
    """The bundle folder a user means by ``path``: see ``_resolve``."""
    return _resolve(Path(path), BUNDLE_FILE, BUNDLE_DIR)


def _resolve(path: Path, marker: str, inner: str) -> Path:
    """``path`` itself if it holds ``marker``; its ``inner`` folder if that holds it (a run folder);
    the folder of ``path`` if ``path`` is the marker file itself (``bundle/manifest.json``);
    otherwise ``path`` unchanged, so that the reader's own error names what the user typed."""
    if (path / marker).is_file():
        return path
    if (path / inner / marker).is_file():
        return path / inner
    if path.name == marker and path.is_file():
        return path.parent
    return path


def output_folder(path: str | Path, flag: str) -> Path:
    """``path`` as a folder a command may write reports into, refused at once (before minutes of
    measuring) in one line naming the flag: a file, or a place no folder can be made (under a file,
    or in a folder that is not writable). Nothing is made yet: a command refused later leaves none."""
    import os

    from gptedge.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file: pass a folder for the reports")
    existing = next(p for p in (path, *path.parents) if p.exists())  # the folder it would be made in
    if not existing.is_dir():
        raise UserError(f"cannot write {flag} {path} ({existing} is a file): pass a folder that can be made")
    if not os.access(existing, os.W_OK):
        raise UserError(f"cannot write {flag} {path} ({existing} is not writable): check the folder and its "
                        "permissions")
    return path
