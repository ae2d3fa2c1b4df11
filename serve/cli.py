"""``gptedge serve``: the OpenAI-compatible server (``gptedge.serve``). Nothing heavy is imported
until the command runs; BUNDLE may be a run folder, and defaults to what ``gptedge build`` makes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from gptedge import paths
from gptedge.arguments import BUNDLE_HELP, thread_count, whole_number
from gptedge.errors import UserError

API_KEY_VARIABLE = "GPTEDGE_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "serve",
        help="serve a bundle over HTTP with the OpenAI completions API (continuous batching)",
        description="An OpenAI-compatible server: POST /v1/completions (streamed with stream: true), "
        "GET /v1/models, /health and /metrics. Up to --slots requests decode together in one batched "
        "step, each joining and leaving on its own; past them --queue requests wait; past those, 429.",
    )
    s.add_argument("bundle", metavar="BUNDLE", nargs="?", default=None,
                   help=f"{BUNDLE_HELP} (default: {paths.bundle_dir()}, what gptedge build makes)")
    s.add_argument("--variant", default="auto", help="variant to serve (default: auto)")
    s.add_argument("--provider", default="cpu", help="execution provider (default: cpu; continuous batching "
                   "rearranges the cache in host memory)")
    s.add_argument("--threads", type=thread_count, help="onnxruntime intra-op threads (default: one per core)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    s.add_argument("--port", type=whole_number(1, 65535), default=8000, help="port (default 8000)")
    s.add_argument("--slots", type=whole_number(1, 256), default=8, help="requests decoded together (default 8)")
    s.add_argument("--queue", type=whole_number(0), default=64, help="requests that may wait for a slot (default 64)")
    s.add_argument("--api-key", metavar="KEY", help=f"require Authorization: Bearer KEY on /v1 (default: "
                   f"${API_KEY_VARIABLE} if set, else none)")
    s.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    s.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from gptedge.runtime import Engine, load
    from gptedge.serve.http import App, Server

    api_key = _api_key(args.api_key)  # before the model loads: a bad key is told at once
    bundle = paths.resolve_bundle(args.bundle if args.bundle is not None else paths.bundle_dir())
    model = load(bundle, variant=args.variant, provider=args.provider, threads=args.threads)
    engine = Engine(model, slots=args.slots, queue_size=args.queue)
    server = Server(App(model, engine, api_key), args.host, args.port, verbose=args.verbose)
    stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(f"gptedge serve: {model.describe()}, {args.slots} slots, on http://{host}:{port}/v1"
          + (" (API key required)" if api_key else ""), file=sys.stderr, flush=True)
    if server.app.chat_problem:
        print(f"gptedge serve: warning: chat completions are off: {server.app.chat_problem}", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
        server.server_close()
    print("gptedge serve: stopped", file=sys.stderr)
    return 0


def _api_key(flag: str | None) -> str | None:
    """The key from --api-key, else $GPTEDGE_API_KEY, else None (no key). An empty key would turn
    authentication off unseen, and one outside visible ASCII could never be sent: HTTP clients
    (the openai one among them) encode headers as ASCII, and a space or tab at its end is dropped."""
    if flag is not None:
        where, key = "--api-key", flag
    else:
        where, key = f"${API_KEY_VARIABLE}", os.environ.get(API_KEY_VARIABLE)
    if key is None:
        return None
    if not key:
        raise UserError(f"{where} is empty: give it a key, or remove it to serve without one")
    if not all("!" <= c <= "~" for c in key):
        raise UserError(f"{where} holds a character other than visible ASCII (letters, digits, punctuation; no "
                        "spaces): pick a key that clients can send in an Authorization header")
    return key
