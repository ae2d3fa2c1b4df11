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


def client_missing(reason: str, fix: str) -> None:
    """A real client a test checks against is not installed: skip, saying how to install it, except
    under CI (``CI`` set), which must run every such check, so there it fails."""
    import os

    import pytest

    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}: CI must run this check; {fix}")
    pytest.skip(f"{reason} ({fix} to run it)")
