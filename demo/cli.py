"""``gptedge demo``: open the page for a bundle. gradio is imported only when the command runs."""

from __future__ import annotations

import argparse
import socket

from gptedge import paths
from gptedge.runtime import contract
from gptedge.arguments import require, thread_count, whole_number
from gptedge.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="open a web page to try prompts on a bundle (offline, on this machine)",
        description="Serve a page where you type a prompt and watch the answer stream, choose the "
        "variant, provider and sampling settings, and see each token's probability. Without BUNDLE it "
        f"opens the bundle gptedge build makes ({paths.bundle_dir()}).",
    )
    p.add_argument("bundle", metavar="BUNDLE", nargs="?",
                   help=f"a bundle folder, or the run folder holding it (default: {paths.bundle_dir()})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=whole_number(1), default=7860, help="port to listen on (default 7860)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (off by default)")
    p.add_argument("--threads", type=thread_count, default=None, help="onnxruntime threads per session (default: one per core)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    bundle = paths.resolve_bundle(args.bundle) if args.bundle else paths.bundle_dir()
    if args.bundle is None and not bundle.is_dir():
        raise UserError(f"there is no bundle at {bundle}: run gptedge build first, or pass a bundle folder")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is out of range: use a port from 1 to 65535")
    contract.read_manifest(bundle)  # a wrong folder fails now, before seconds of importing gradio
    require("gradio", "demo")
    from gptedge.demo.app import serve
    from gptedge.demo.models import ModelPool

    pool = ModelPool(bundle, threads=args.threads)  # a bad bundle fails here, before the server starts
    # gradio, failing to listen, prints uvicorn's error and then blames the port whatever the cause
    # (a host that does not resolve, or is not this machine's): try the address first.
    try:
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.bind((args.host, args.port))
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}): pick another --port or "
                        "--host") from None
    print(f"serving {bundle} on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    try:
        serve(pool, host=args.host, port=args.port, share=args.share)
    except OSError as e:  # taken between the check and gradio's start
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e}): pick another --port") from None
    return 0
