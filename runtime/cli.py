"""``gptedge generate``. Nothing heavy is imported until a command runs.

Flags are checked before any model is loaded: numbers by their argparse types, text for valid
Unicode, generation settings by ``GenerationSettings`` itself (the one place that knows their
ranges). BUNDLE may be a run folder holding ``bundle/`` (``gptedge.paths.resolve_bundle``).
"""

from __future__ import annotations

import argparse
import sys

from gptedge import paths
from gptedge.arguments import BUNDLE_HELP, real_number, thread_count, whole_number
from gptedge.errors import UserError, check_text


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser(
        "generate",
        help="generate text from a bundle (onnxruntime only), streamed to the terminal",
        description="Continue PROMPT with the model in BUNDLE, printing text as it is generated; with --chat, "
        "answer it as a chat model's user message. Settings left out come from the bundle's manifest.",
    )
    g.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
    g.add_argument("prompt", metavar="PROMPT", help="the text to continue ('' starts a new document)")
    g.add_argument("--chat", action="store_true", help="PROMPT is a user message, laid out by the bundle's chat "
                   "template (a chat model's bundle); only the answer is printed")
    g.add_argument("--system", metavar="TEXT", help="with --chat: a system message before it")
    g.add_argument("--max-new-tokens", type=whole_number(0), metavar="N")
    g.add_argument("--temperature", type=real_number, metavar="T", help="0 is greedy")
    g.add_argument("--top-k", type=whole_number(0), metavar="K", help="0 switches it off")
    g.add_argument("--top-p", type=real_number, metavar="P", help="in (0, 1]; 1 switches it off")
    g.add_argument("--repetition-penalty", type=real_number, metavar="R", help="> 0; 1 switches it off")
    g.add_argument("--seed", type=whole_number(0), metavar="S", help="makes sampling repeatable")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    _add_session_flags(g)
    g.add_argument("--stats", action="store_true", help="print speed figures at the end (to stderr)")
    g.set_defaults(func=run_generate)


def _add_session_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="auto", help="variant name from the manifest (default: auto)")
    p.add_argument("--provider", default="auto", help="cpu, cuda, tensorrt, directml, coreml, nnapi, xnnpack, "
                   "qnn, webgpu (default: auto, the best this onnxruntime offers)")
    p.add_argument("--threads", type=thread_count, help="onnxruntime intra-op threads (default: one per core)")


def run_generate(args: argparse.Namespace) -> int:
    from gptedge.runtime.model import load
    from gptedge.runtime.settings import GenerationSettings

    check_text(args.prompt, "the prompt")
    if args.system is not None and not args.chat:
        raise UserError("--system is the system message of a chat: add --chat (or leave --system out)")
    messages = [{"role": "system", "content": check_text(args.system, "the --system text")}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    flags = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": tuple(check_text(s, "a --stop text") for s in args.stop) if args.stop else None,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    GenerationSettings().replace(**flags)  # a bad value fails now, not after seconds of loading
    model = load(paths.resolve_bundle(args.bundle), variant=args.variant, provider=args.provider, threads=args.threads)
    print(f"[{model.describe()}]", file=sys.stderr, flush=True)
    stream = model.stream(model.chat_prompt(messages) if args.chat else args.prompt, **flags)
    if not args.chat:  # a continuation reads on from the prompt; an answer stands alone
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
