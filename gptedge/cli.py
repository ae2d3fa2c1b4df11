"""The one console command, ``gptedge``, with a subcommand per stage.

Each stage owns a small ``cli.py`` with ``register(subparsers)``. Those modules import nothing
heavy at the top, so ``gptedge --help`` and ``gptedge generate`` work on a runtime-only install;
a subcommand imports torch, onnx or gradio only when it runs.

A user's mistake ends as one line on stderr and exit status 2: a ``UserError`` from any stage, and
argparse's own complaints (a flag that is not a number, a value out of range). Output piped into a
reader that stops early (``gptedge generate ... | head``) ends quietly, as standard tools do.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import warnings
from typing import Callable, NoReturn, Sequence

from gptedge import __version__
from gptedge.errors import UserError

# Order is the order of the pipeline, and of `gptedge --help`.
STAGE_CLIS = (
    "gptedge.train.cli",
    "gptedge.export.cli",
    "gptedge.package.cli",
    "gptedge.runtime.cli",
    "gptedge.serve.cli",
    "gptedge.inside.cli",
    "gptedge.web.cli",
    "gptedge.measure.cli",
    "gptedge.demo.cli",
    "gptedge.pipeline",
)
EXIT_USER_ERROR = 2  # as argparse exits for a bad flag
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool that SIGPIPE ended (`yes | head`)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line that names the problem and where to look, not the
    whole usage block above it. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
    # A terminal or pipe whose encoding cannot hold a character (PYTHONIOENCODING=ascii, an old
    # Windows console) shows it as an escape, as Python's stderr already does, instead of stopping
    # the command with UnicodeEncodeError: generated text can hold any character.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    default_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command, default_format)
    try:
        return _run(args)
    finally:
        warnings.formatwarning = default_format


def _run(args: argparse.Namespace) -> int:
    """The subcommand, with a user's mistakes and a closed pipe turned into exit statuses."""
    try:
        result = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except UserError as e:
        print(f"gptedge {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"gptedge {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # some other pipe: a bug, with its traceback
        # The reader of our output has gone (`| head`): stop quietly, as tools that die of SIGPIPE
        # do. Point stdout at devnull so the interpreter's final flush of what is still buffered
        # does not print "Exception ignored ... BrokenPipeError" (Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return int(result or 0)


def _one_line_warning(command: str, default: Callable[..., str]) -> Callable[..., str]:
    """Format a UserWarning (what the stages warn users with, e.g. a prompt cut to the context) as
    one line like the errors, without the source line Python adds; other warnings are left as
    they are, with their location (they are for developers)."""

    def format(message, category, filename, lineno, line=None) -> str:  # noqa: A001 (warnings' signature)
        if category is UserWarning:
            return f"gptedge {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    return format


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on it)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout: assume ours
        return True


if __name__ == "__main__":
    sys.exit(main())
