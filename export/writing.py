"""How every command that writes a bundle starts and fails: one after the other, after the wreck
of a killed one is cleared, and with a one-line message when the disk refuses.

    with writing(bundle, "quantize again"):
        manifest = contract.read_manifest(bundle)   # read under the lock, so no update is lost
        ...                                          # new files, then contract.write_manifest

export --force, optimize, quantize and eval each hold the bundle's lock (``atomic.locked``) for
their whole read-modify-write, so two of them on one bundle both land. The manifest is replaced
atomically, so a reader (generate, the demo) never needs the lock.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

from gptedge import atomic
from gptedge.errors import UserError, write_error
from gptedge.runtime import contract


def graph_files() -> set[str]:
    """Every graph file name the export stages write: only these are ever deleted as leftovers."""
    from gptedge.export.bundle import MODEL_FILE
    from gptedge.export.optimize import optimized_name
    from gptedge.export.quantize import PRECISIONS, variant_file

    graphs = {MODEL_FILE, optimized_name(MODEL_FILE), *(variant_file(p) for p in PRECISIONS)}
    return graphs | {f"{g}.data" for g in graphs}


def remove_leftovers(bundle: Path) -> list[Path]:
    """What a killed export, optimize or quantize left: temporary files and folders of ours, and
    graph files of ours that the committed manifest does not list (written, never committed)."""
    removed = atomic.remove_leftovers(bundle.parent, name=bundle.name)
    if not (bundle / contract.MANIFEST_FILE).is_file():
        return removed
    removed += atomic.remove_leftovers(bundle)
    try:
        manifest = contract.read_manifest(bundle)
    except UserError:  # a damaged manifest: the command itself says so; delete nothing on a guess
        return removed
    listed = {f for v in manifest.variants.values() for f, _, _ in v.files()}
    for name in sorted(graph_files() - listed):
        path = bundle / name
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def writing(bundle: str | Path, again: str) -> Iterator[None]:
    """Hold ``bundle``'s writers' lock for the block, clear leftovers first, and turn a refused
    write (disk full, read-only folder) into a one-line error that says to ``again``."""
    bundle = Path(bundle)
    try:
        with atomic.locked(bundle, waiting=lambda message: print(f"gptedge: {message} ...", file=sys.stderr)):
            remove_leftovers(bundle)
            yield
    except OSError as e:
        raise write_error(e, bundle, again) from None
