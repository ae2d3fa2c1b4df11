"""PyTorch eager decoding speed of a checkpoint, batch 1, with its KV cache: the baseline the ONNX
variants are compared with.

    python -m gptedge.measure.pytorch CHECKPOINT --prompt-tokens 64 --new-tokens 128 --threads 2 --past 512 --json

prints one JSON object:

    ttft_ms               prefill of the prompt and the choice of the first new token
    decode_tokens_per_s   tokens per second of the one-token-at-a-time steps that follow
    past                  for each --past N: decode tokens per second with a cache already N long

``gptedge bench --checkpoint`` and ``gptedge eval --checkpoint`` run this as a subprocess
(``run_baseline``), so the two engines never share (and fight over) the CPU threads of one
process. torch is imported only inside the functions that time it: the bench worker imports this
module for ``PAST_STEPS`` on machines without torch. Token ids are random: speed does not depend
on them. Each figure is the median of --repeat runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from gptedge.errors import UserError

if TYPE_CHECKING:
    import torch

    from gptedge.train.model import GPT, KVCache

PAST_STEPS = 32  # decode steps timed at each cache length, here and in the ONNX workers


def subprocess_output(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a helper process with its output captured; its stdout, or a one-line error naming the
    last line it wrote to stderr and the command that shows the rest."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{what} failed ({last}): run `{' '.join(cmd)}` to see why")
    return proc.stdout


def subprocess_json(cmd: list[str], what: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a measuring process and return the JSON object on its last line of output."""
    return json.loads(subprocess_output(cmd, what, env).strip().splitlines()[-1])


def run_baseline(
    checkpoint: str | Path, prompt_tokens: int, new_tokens: int, threads: int, pasts: Sequence[int] = (), repeat: int = 3
) -> dict[str, Any]:
    """This module's figures for ``checkpoint``, measured in a process of its own."""
    cmd = [sys.executable, "-m", "gptedge.measure.pytorch", str(checkpoint), "--json", "--threads", str(threads),
           "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens), "--repeat", str(repeat),
           "--past", *map(str, pasts)]
    return subprocess_json(cmd, "the PyTorch baseline")


def _step(model: GPT, ids: torch.Tensor, past: KVCache | None, position: int) -> tuple[torch.Tensor, KVCache]:
    """Feed ``ids`` (1, T) at absolute ``position``; return the greedy next token (1, 1) and the cache."""
    import torch

    positions = torch.arange(position, position + ids.shape[1])[None, :]  # (1, T)
    logits, past = model(ids, position_ids=positions, past_key_values=past)
    return logits[:, -1:].argmax(-1), past


def time_generation(model: GPT, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds for the remaining new_tokens - 1 decode steps)."""
    t0 = time.perf_counter()
    token, past = _step(model, prompt, None, 0)
    t1 = time.perf_counter()
    for i in range(new_tokens - 1):
        token, past = _step(model, token, past, prompt.shape[1] + i)
    return t1 - t0, time.perf_counter() - t1


def time_past(model: GPT, past_len: int, steps: int, vocab: int, gen: torch.Generator) -> float:
    """Seconds for ``steps`` decode steps starting from a cache of ``past_len`` tokens."""
    import torch

    token, past = _step(model, torch.randint(0, vocab, (1, past_len), generator=gen), None, 0)
    t0 = time.perf_counter()
    for i in range(steps):
        token, past = _step(model, token, past, past_len + i)
    return time.perf_counter() - t0


def measure(
    checkpoint: str, prompt_tokens: int, new_tokens: int, threads: int, pasts: Sequence[int], repeat: int = 3
) -> dict:
    import torch

    from gptedge.train.checkpoint import load_checkpoint
    from gptedge.train.checkpoint_config import read_config

    if threads < 1 or repeat < 1:
        raise UserError("--threads and --repeat must be at least 1")
    shape = read_config(checkpoint).model
    ctx, vocab = shape.context_length, shape.vocab_size
    if prompt_tokens < 1 or new_tokens < 2:
        raise UserError("--prompt-tokens must be at least 1 and --new-tokens at least 2")
    if prompt_tokens + new_tokens > ctx:
        raise UserError(f"--prompt-tokens + --new-tokens = {prompt_tokens + new_tokens} exceeds the context of {ctx}")
    too_long = [p for p in pasts if p < 1 or p + PAST_STEPS > ctx]
    if too_long:
        raise UserError(f"--past {too_long[0]} is out of range: use 1 to {ctx - PAST_STEPS} for this model")
    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint).model.eval()
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=gen)
    with torch.inference_mode():
        time_generation(model, prompt, min(new_tokens, 8))  # warm-up: allocator, thread pool, kernels
        runs = [time_generation(model, prompt, new_tokens) for _ in range(repeat)]
        past = []
        for p in pasts:
            seconds = statistics.median(time_past(model, p, PAST_STEPS, vocab, gen) for _ in range(repeat))
            per_token = seconds / PAST_STEPS
            past.append({"past": p, "decode_tokens_per_s": 1 / per_token, "ms_per_token": 1000 * per_token})
    ttft = statistics.median(r[0] for r in runs)
    decode = statistics.median(r[1] for r in runs)
    return {
        "engine": "pytorch-eager",
        "checkpoint": str(checkpoint),
        "torch": torch.__version__,
        "threads": threads,
        "batch": 1,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "ttft_ms": 1000 * ttft,
        "decode_tokens_per_s": (new_tokens - 1) / decode,
        "ms_per_token": 1000 * decode / (new_tokens - 1),
        "past": past,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptedge.measure.pytorch", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder (config.json, weights, tokenizer.json)")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--past", type=int, nargs="*", default=[], metavar="N", help="cache lengths to time decode at")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        result = measure(args.checkpoint, args.prompt_tokens, args.new_tokens, args.threads, args.past, args.repeat)
    except UserError as e:
        print(f"gptedge.measure.pytorch: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"PyTorch eager, {result['threads']} threads: time to first token {result['ttft_ms']:.1f} ms "
            f"({result['prompt_tokens']}-token prompt), decode {result['decode_tokens_per_s']:.1f} tokens/s"
        )
        for p in result["past"]:
            print(f"  with {p['past']} tokens of past: {p['decode_tokens_per_s']:.1f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
