"""``gptedge package``: a bundle laid out for another runtime (``gptedge.package``). Nothing heavy
is imported until the command runs."""

from __future__ import annotations

import argparse

from gptedge import paths
from gptedge.arguments import BUNDLE_HELP

TARGETS = ("genai", "hf", "transformersjs", "mobile")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "package",
        help="lay a bundle out for onnxruntime-genai, optimum, transformers.js or onnxruntime mobile",
        description="Write OUT, a folder the chosen runtime loads with no edits: genai (one folder per "
        "variant with genai_config.json: onnxruntime-genai in Python, C#, Java and its Android/iOS "
        "packages), hf (config.json and friends: Hugging Face optimum's ORTModelForCausalLM), "
        "transformersjs (onnx/model{suffix}.onnx: transformers.js in Node and browsers), mobile "
        "(ORT-format files, the operators for a reduced onnxruntime build, a report on each mobile "
        "execution provider), or all (one sub-folder each). Graph files are hard-linked from the "
        "bundle; every package folder is also a gptedge bundle. PACKAGE.md in OUT says what was left "
        "out and why, and how to load each folder.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    p.add_argument("out", metavar="OUT", help="the package folder to write (new, or a package written before)")
    p.add_argument("--for", dest="target", required=True, choices=(*TARGETS, "all"),
                   help="the runtime to package for")
    p.add_argument("--variant", dest="variants", nargs="+", metavar="V",
                   help="variants to package (default: all of the bundle's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display, only the summary")
    p.set_defaults(func=run_package)


def run_package(args: argparse.Namespace) -> int:
    from gptedge.package.targets import package

    written = package(paths.resolve_bundle(args.bundle), args.out, args.target, args.variants, quiet=args.quiet)
    print(written)
    return 0
