"""``gptedge web BUNDLE OUT``: a static folder that runs the model in the visitor's browser
(``web.site``); ``--serve`` shows it on 127.0.0.1 at once."""

from __future__ import annotations

import argparse
import sys

from gptedge import paths
from gptedge.arguments import BUNDLE_HELP, whole_number


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "web",
        help="write a static page that runs the model in the browser (onnxruntime-web, no server needed)",
        description="Write OUT: index.html, its scripts, onnxruntime-web's files, the variant's graph and the "
        "tokenizer. Any static file server can serve it; the model runs on the visitor's machine (WebGPU "
        "when the browser has it and the variant suits it, else WebAssembly) and no request leaves that "
        "server. --serve serves it on 127.0.0.1 (with the headers that let WebAssembly use 2 threads).",
    )
    p.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    p.add_argument("out", metavar="OUT", help="the folder to write (new, or one gptedge web wrote)")
    p.add_argument("--variant", default="auto",
                   help="variant to put in the page (default: a per-channel int8, else int4, else fp32)")
    p.add_argument("--serve", action="store_true", help="then serve OUT on 127.0.0.1 until Ctrl-C")
    p.add_argument("--port", type=whole_number(1, 65535), default=8080, help="port for --serve (default 8080)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_web)


def run_web(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gptedge.package.folder import write_package
    from gptedge.package.targets import read_source
    from gptedge.web import site

    source = read_source(paths.resolve_bundle(args.bundle), None)
    plan = site.plan(source, args.variant)
    out = Path(args.out)
    write_package(out, source, [plan], quiet=args.quiet)
    name = next(iter(plan.folders[0].variants))
    print(f"wrote {out}: variant {name!r}" + "".join(f"\n  {n}" for n in plan.folders[0].notes))
    if args.serve:
        from gptedge.web.serve import serve

        serve(out, args.port)
    else:
        print(f"serve it with any static file server, or: gptedge web {args.bundle} {args.out} --serve", file=sys.stderr)
    return 0
