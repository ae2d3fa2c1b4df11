"""``gptedge bench``: speed and memory of a bundle's variants (``measure.bench``). Nothing heavy is
imported until the command runs; BUNDLE and --checkpoint may be run folders."""

from __future__ import annotations

import argparse

from gptedge import paths
from gptedge.arguments import BUNDLE_HELP, thread_count, whole_number
from gptedge.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    b = subparsers.add_parser(
        "bench",
        help="measure speed and memory of a bundle's variants per execution provider",
        description="Time to first token, decode tokens/s at a short and a ~90%% full cache, Python "
        "overhead per token, peak memory and file size, per variant and provider (batch 1), written "
        "to OUT/bench.json and OUT/bench.png. With --checkpoint, PyTorch eager with its KV cache is "
        "measured too (needs the train extra) and the ratios are printed.",
    )
    b.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    b.add_argument("--checkpoint", metavar="DIR", help="the checkpoint the bundle came from (or its run "
                   "folder), for the PyTorch baseline")
    b.add_argument("--variants", nargs="+", metavar="NAME", help="variants to measure (default: all)")
    b.add_argument("--providers", nargs="+", metavar="NAME", help="providers to measure (default: all available)")
    b.add_argument("--threads", type=thread_count, default=2, help="intra-op threads for both engines (default 2)")
    b.add_argument("--prompt-tokens", type=whole_number(1),
                   help="prompt length (default 64, a quarter of a shorter context)")
    b.add_argument("--new-tokens", type=whole_number(1),
                   help="tokens to generate (default 128, or what the context has left)")
    b.add_argument("--repeat", type=whole_number(1), default=3, help="runs per figure; median and spread are kept")
    b.add_argument("--soak", type=whole_number(0), default=0, metavar="N",
                   help="also run N short generations and report resident memory before and after")
    b.add_argument("--serve", action="store_true", help="instead: gptedge serve under concurrent streaming clients "
                   "(aggregate tokens/s, time to first token p50/p95), written to OUT/bench_serve.json and .png")
    b.add_argument("--genai", action="store_true", help="instead: gptedge's runtime and onnxruntime-genai's C++ loop "
                   "on the same graph (each variant packaged for genai), rounds taking turns; OUT/bench_genai.json "
                   "and .png")
    b.add_argument("--genai-builder", action="store_true", help="instead: each int4/int8/fp32 variant beside the model "
                   "onnxruntime-genai's own builder makes of a random-weight Llama of the same size, rounds taking "
                   "turns; OUT/bench_genai_builder.json and .png. The builder and genai run in --genai-venv, made "
                   "when absent (pip install of measure/genai_requirements.txt: downloads, minutes)")
    b.add_argument("--genai-venv", metavar="DIR", help="with --genai-builder: the side virtual environment and its "
                   "cache of built models (default ./.venv-genai)")
    b.add_argument("--clients", type=whole_number(1), nargs="+", metavar="N",
                   help="with --serve: concurrent clients per round (default 1 4 16 32)")
    b.add_argument("--out", default="bench", metavar="DIR", help="folder for bench.json and bench.png (default ./bench)")
    b.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from gptedge.measure.bench import run_bench as bench

    if args.genai_venv and not args.genai_builder:
        raise UserError("--genai-venv is the side venv of --genai-builder: add --genai-builder, or leave it out")
    paths.output_folder(args.out, "--out")
    args.bundle = paths.resolve_bundle(args.bundle)
    if args.serve or args.genai or args.genai_builder:
        return _side_bench(args)
    if args.checkpoint:
        args.checkpoint = paths.resolve_checkpoint(args.checkpoint)
    return bench(args)


def _side_bench(args: argparse.Namespace) -> int:
    """--serve, --genai or --genai-builder: gptedge against another way of running the bundle."""
    from gptedge.runtime import contract

    if args.serve + args.genai + args.genai_builder > 1:
        raise UserError("--serve, --genai and --genai-builder are separate benchmarks: run one at a time")

    manifest = contract.read_manifest(args.bundle)
    variants = args.variants or [n for n, v in manifest.for_generation().items() if "cpu" in v.providers]
    unknown = [v for v in variants if v not in manifest.variants]
    if unknown:
        raise UserError(f"bundle has no variant {unknown[0]!r}: available are {', '.join(manifest.variants)}")
    if args.genai_builder:
        from gptedge.measure.genai_builder import run_builder_bench

        args.genai_venv = args.genai_venv or ".venv-genai"
        return run_builder_bench(args, manifest)
    if args.genai:
        from gptedge.arguments import require
        from gptedge.measure.genai_bench import run_genai_bench

        require("onnxruntime_genai", "dev")
        return run_genai_bench(args, variants, manifest)
    from gptedge.measure.serve_bench import run_serve_bench

    return run_serve_bench(args, variants, manifest)
