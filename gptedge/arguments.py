"""What every stage's ``cli.py`` shares: argument types that refuse a bad number at parse time,
and the check for an optional dependency. Kept out of ``gptedge.cli`` (which imports the stage
CLIs) so that the stage CLIs and the root CLI do not import each other."""

from __future__ import annotations

import argparse
import importlib
import math
import os
from typing import Callable

from gptedge.errors import UserError

# What a BUNDLE or CHECKPOINT argument takes: the folder, or the run folder holding it
# (``gptedge.paths.resolve_bundle`` / ``resolve_checkpoint``).
BUNDLE_HELP = "a bundle folder from gptedge export, or the run folder holding it"
CHECKPOINT_HELP = "a checkpoint folder from gptedge train or import, or the run folder holding it"


def require(module: str, extra: str) -> None:
    """Fail with the install command if an optional dependency of a subcommand is missing."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise UserError(
            f"this command needs '{module}' ({e}): install it with pip install 'gptedge[{extra}]'"
        ) from None


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum`` (and <= ``maximum``), refused at parse
    time (before any model is loaded) with the range in the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: use a whole number {allowed}")
        return value

    return parse


def thread_count(text: str) -> int:
    """An argparse ``type`` for --threads: 1 to four per core. More only queue for the same cores,
    and thousands take minutes to start (each thread is made before the first step)."""
    return whole_number(1, 4 * (os.cpu_count() or 1))(text)


def real_number(text: str) -> float:
    """An argparse ``type``: a finite number (nan and inf are refused: no setting means them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value
