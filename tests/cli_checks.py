"""Assertions every stage's bad-input tests share: one line, no traceback, nothing touched."""

from __future__ import annotations

from pathlib import Path

from gptedge.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and a single-line message on stderr; return the message."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes (subfolders included, by relative path), to prove a failed step left a
    folder exactly as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
