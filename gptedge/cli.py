"""The one console command, ``gptedge``, with a subcommand per stage.

Each stage owns a small ``cli.py`` with ``register(subparsers)``. Those modules import nothing
heavy at the top, so ``gptedge --help`` and ``gptedge generate`` work on a runtime-only install;
a subcommand imports torch, onnx or gradio only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from gptedge import __version__
from gptedge.errors import UserError

# Order is the order of the pipeline, and of `gptedge --help`.
STAGE_CLIS = (
    "gptedge.train.cli",
    "gptedge.export.cli",
    "gptedge.runtime.cli",
    "gptedge.demo.cli",
    "gptedge.pipeline",
)


def require(module: str, extra: str) -> None:
    """Fail with the install command if an optional dependency of a subcommand is missing."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise UserError(
            f"this command needs '{module}' ({e}): install it with pip install 'gptedge[{extra}]'"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptedge",
        description="Train a small GPT, export it to ONNX with a KV cache, quantize it, run it.",
    )
    parser.add_argument("--version", action="version", version=f"gptedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGE_CLIS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as e:
        print(f"gptedge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gptedge {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
