"""``gptedge generate`` and ``gptedge bench``. Nothing heavy is imported until a command runs."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser(
        "generate",
        help="generate text from a bundle (onnxruntime only), streamed to the terminal",
        description="Continue PROMPT with the model in BUNDLE, printing text as it is generated. "
        "Settings left out come from the bundle's manifest.",
    )
    g.add_argument("bundle", metavar="BUNDLE", help="a bundle folder from gptedge export")
    g.add_argument("prompt", metavar="PROMPT", help="the text to continue ('' starts a new document)")
    g.add_argument("--max-new-tokens", type=int, metavar="N")
    g.add_argument("--temperature", type=float, metavar="T", help="0 is greedy")
    g.add_argument("--top-k", type=int, metavar="K", help="0 switches it off")
    g.add_argument("--top-p", type=float, metavar="P", help="1 switches it off")
    g.add_argument("--repetition-penalty", type=float, metavar="R", help="1 switches it off")
    g.add_argument("--seed", type=int, metavar="S", help="makes sampling repeatable")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    _add_session_flags(g)
    g.add_argument("--stats", action="store_true", help="print speed figures at the end (to stderr)")
    g.set_defaults(func=run_generate)

    b = subparsers.add_parser(
        "bench",
        help="measure speed and memory of a bundle's variants per execution provider",
        description="Time to first token, decode tokens/s at a short and a ~90%% full cache, Python "
        "overhead per token, peak memory and file size, per variant and provider (batch 1), written "
        "to OUT/bench.json and OUT/bench.png. With --checkpoint, PyTorch eager with its KV cache is "
        "measured too (needs the train extra) and the ratios are printed.",
    )
    b.add_argument("bundle", metavar="BUNDLE", help="a bundle folder from gptedge export")
    b.add_argument("--checkpoint", metavar="DIR", help="the checkpoint the bundle came from, for the PyTorch baseline")
    b.add_argument("--variants", nargs="+", metavar="NAME", help="variants to measure (default: all)")
    b.add_argument("--providers", nargs="+", metavar="NAME", help="providers to measure (default: all available)")
    b.add_argument("--threads", type=int, default=2, help="intra-op threads for both engines (default 2)")
    b.add_argument("--prompt-tokens", type=int, help="prompt length (default 64, a quarter of a shorter context)")
    b.add_argument("--new-tokens", type=int, help="tokens to generate (default 128, or what the context has left)")
    b.add_argument("--repeat", type=int, default=3, help="runs per figure; median and spread are kept")
    b.add_argument("--soak", type=int, default=0, metavar="N",
                   help="also run N short generations and report resident memory before and after")
    b.add_argument("--out", default="bench", metavar="DIR", help="folder for bench.json and bench.png (default ./bench)")
    b.set_defaults(func=run_bench)


def _add_session_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="auto", help="variant name from the manifest (default: auto)")
    p.add_argument("--provider", default="auto", help="cpu, cuda, tensorrt, directml, coreml, nnapi, xnnpack, "
                   "qnn, webgpu (default: auto, the best this onnxruntime offers)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: one per core)")


def run_generate(args: argparse.Namespace) -> int:
    from gptedge.runtime.model import load

    model = load(args.bundle, variant=args.variant, provider=args.provider, threads=args.threads)
    print(f"[{model.describe()}]", file=sys.stderr, flush=True)
    flags = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": tuple(args.stop) if args.stop else None,
    }
    stream = model.stream(args.prompt, **{k: v for k, v in flags.items() if v is not None})
    sys.stdout.write(args.prompt)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.stats:
        r = stream.result
        print(
            f"[{r.prompt_tokens} prompt tokens, {len(r.token_ids)} generated, stopped by {r.stop_reason}; "
            f"first token {1000 * r.ttft_s:.1f} ms, {r.tokens_per_s:.1f} tokens/s, Python overhead "
            f"{1000 * r.overhead_s_per_token:.3f} ms/token" + (f", {r.slides} window slides" if r.slides else "") + "]",
            file=sys.stderr,
        )
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from gptedge.runtime.bench import run_bench as bench

    return bench(args)
