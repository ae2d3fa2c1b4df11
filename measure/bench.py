"""``gptedge bench``: how fast and how big each variant of a bundle is, per execution provider.

For every (variant, provider) a fresh worker process (``python -m gptedge.measure.bench``) loads
the variant and measures, batch 1, greedy, random token ids (speed does not depend on them):

    ttft_ms                  time to first token for a --prompt-tokens prompt
    decode_tokens_per_s      decode speed of the --new-tokens that follow
    overhead_ms_per_token    of each decode step, the wall time outside onnxruntime (the Python loop)
    past                     decode speed with a cache already 64 and ~90 % of the context long
    peak_rss_mb              the worker's peak resident memory (imports, session, generation)
    size_mb                  the variant's file size on disk
    soak                     with --soak N: resident memory along N short generations (no growth)

A process per variant keeps memory figures apart and the variants from sharing thread pools; a
worker imports only the runtime, so a device with the base install can run it. With
``--checkpoint`` the same figures come from PyTorch eager with its KV cache (``measure.pytorch``,
in a process of its own, so the two engines never compete for the cores); the ratios are printed. Each figure is the
median of --repeat runs, with the spread (min..max) kept beside it: other work on the machine moves
single runs a lot.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from gptedge.errors import UserError
from gptedge.measure import pytorch, tables
from gptedge.measure.machine import current_rss_mb, describe, peak_rss_mb
from gptedge.measure.pytorch import PAST_STEPS, subprocess_json

SHORT_PAST = 64


def pasts(context_length: int) -> list[int]:
    """The two cache lengths decode speed is timed at: 64 (less for a tiny test context) and about
    90 % of the context, leaving room for the timed steps."""
    long = min(round(0.9 * context_length), context_length - PAST_STEPS - 1)
    return [min(SHORT_PAST, max(1, long // 2)), long]


def token_counts(args: argparse.Namespace, context_length: int) -> tuple[int, int]:
    """--prompt-tokens and --new-tokens, or the defaults (64 and 128) cut to fit the context;
    checked here, before any worker starts."""
    C = context_length
    prompt_tokens = args.prompt_tokens or min(64, C // 4)
    if prompt_tokens > C - 2:
        raise UserError(f"--prompt-tokens {prompt_tokens} leaves no room to generate in the context of {C}: "
                        f"use at most {C - 2}")
    new_tokens = args.new_tokens or min(128, C - prompt_tokens)
    check_counts(prompt_tokens, new_tokens, 1, C)
    return prompt_tokens, new_tokens


def check_counts(prompt_tokens: int, new_tokens: int, repeat: int, context_length: int) -> None:
    if prompt_tokens < 1 or new_tokens < 2 or repeat < 1:
        raise UserError("--prompt-tokens and --repeat must be at least 1 and --new-tokens at least 2")
    if prompt_tokens + new_tokens > context_length:
        raise UserError(f"--prompt-tokens + --new-tokens = {prompt_tokens + new_tokens} exceed the context of "
                        f"{context_length}: use fewer")


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(
    bundle: str,
    variant: str,
    provider: str,
    threads: int | None,
    prompt_tokens: int,
    new_tokens: int,
    repeat: int,
    soak: int = 0,
) -> dict[str, Any]:
    """The worker: every figure for one (variant, provider), in this process."""
    import numpy as np

    from gptedge.runtime import load

    model = load(bundle, variant=variant, provider=provider, threads=threads)
    shape = model.manifest.model
    C, V = shape.context_length, shape.vocab_size
    check_counts(prompt_tokens, new_tokens, repeat, C)
    rng = np.random.default_rng(0)
    greedy = dict(temperature=0.0, ignore_eos=True, stop=())

    def run(n_prompt: int, n_new: int) -> Any:
        return model.generate(rng.integers(0, V, n_prompt).tolist(), max_new_tokens=n_new, **greedy)

    run(prompt_tokens, 8)  # warm-up: thread pool, allocator arena, kernel choice
    runs = [run(prompt_tokens, new_tokens) for _ in range(repeat)]
    request_peak = peak_rss_mb()  # loading, the warm-up and these runs: what genai's worker measures too
    past = []
    for p in pasts(C):
        speeds = [run(p, PAST_STEPS + 1).tokens_per_s for _ in range(repeat)]
        past.append({"past": p, "decode_tokens_per_s": _spread(speeds)})
    entry = model.manifest.variants[model.variant]
    figures: dict[str, Any] = {
        "engine": "onnxruntime",
        "variant": model.variant,
        "precision": entry.precision,
        "provider": model.provider,
        "threads": threads,
        "batch": 1,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "ttft_ms": _spread([1000 * r.ttft_s for r in runs]),
        "decode_tokens_per_s": _spread([r.tokens_per_s for r in runs]),
        "onnx_ms_per_token": _spread([1000 * r.onnx_decode_s / (new_tokens - 1) for r in runs]),
        "overhead_ms_per_token": _spread([1000 * r.overhead_s_per_token for r in runs]),
        "past": past,
        "size_mb": entry.total_bytes / 1e6,
        "request_peak_rss_mb": request_peak,
    }
    if soak:  # memory must not grow with use: many short generations, resident memory along the way
        rss = [current_rss_mb()]
        for i in range(soak):
            model.generate(rng.integers(0, V, 16).tolist(), max_new_tokens=16, temperature=0.8, seed=i)
            if (i + 1) % max(1, soak // 4) == 0:
                rss.append(current_rss_mb())
        figures["soak"] = {"generations": soak, "rss_mb": rss}
    figures["peak_rss_mb"] = peak_rss_mb()
    return figures


def run_bench(args: argparse.Namespace) -> int:
    from gptedge.runtime import contract, providers

    manifest = contract.read_manifest(args.bundle)
    variants = args.variants or list(manifest.variants)
    for v in variants:
        if v not in manifest.variants:
            raise UserError(f"bundle has no variant {v!r}: available are {', '.join(manifest.variants)}")
    names = args.providers or providers.available()
    pairs = [
        (v, p.name)
        for p in (providers.resolve(n) for n in names)
        for v in variants
        if providers.suits(manifest.variants[v], p) and not (p.name == "tensorrt" and not args.providers)
    ]
    if not pairs:
        raise UserError(f"none of the variants {variants} runs on {', '.join(names)}: pick other --variants/--providers")
    if args.checkpoint and importlib.util.find_spec("torch") is None:
        raise UserError("--checkpoint needs PyTorch for the baseline: pip install 'gptedge[train]'")
    C = manifest.model.context_length
    prompt_tokens, new_tokens = token_counts(args, C)
    common = ["--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens),
              "--repeat", str(args.repeat)]
    results = []
    for v, p in pairs:
        print(f"measuring {v} on {p} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "gptedge.measure.bench", str(args.bundle), "--variant", v, "--provider", p,
               "--threads", str(args.threads), "--soak", str(args.soak), *common]
        results.append(subprocess_json(cmd, f"benchmark of {v} on {p}"))
    baseline = None
    if args.checkpoint:
        print("measuring PyTorch eager ...", file=sys.stderr, flush=True)
        baseline = pytorch.run_baseline(args.checkpoint, prompt_tokens, new_tokens, args.threads, pasts(C), args.repeat)
    report = {
        "bundle": str(args.bundle),
        "model": dataclasses.asdict(manifest.model),
        "machine": {"cpu": describe(), "platform": platform.platform(), "python": platform.python_version()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
        "pytorch": baseline,
    }
    tables.write_report(Path(args.out), "bench", report, format_table(report), write_chart)
    return 0


def format_table(report: dict[str, Any]) -> str:
    short, long = (p["past"] for p in report["results"][0]["past"])
    rows = [("engine", "ttft ms", "tok/s", f"tok/s @{short}", f"tok/s @{long}", "long/short time", "py ms/tok", "peak MB", "size MB")]
    entries = [(f"{r['variant']} ({r['precision']}) {r['provider']}", r) for r in report["results"]]
    if report["pytorch"]:
        entries.append(("pytorch eager", report["pytorch"]))
    for label, r in entries:
        short_speed, long_speed = (tables.median(p["decode_tokens_per_s"]) for p in r["past"])
        rows.append((
            label,
            f"{tables.median(r['ttft_ms']):.1f}",
            f"{tables.median(r['decode_tokens_per_s']):.1f}",
            f"{short_speed:.1f}",
            f"{long_speed:.1f}",
            f"{short_speed / long_speed:.2f}x",
            f"{tables.median(r['overhead_ms_per_token']):.3f}" if "overhead_ms_per_token" in r else "-",
            f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-",
            f"{r['size_mb']:.1f}" if "size_mb" in r else "-",
        ))
    lines = [tables.text_table(rows)]
    for r in report["results"]:
        if "soak" in r:
            rss = r["soak"]["rss_mb"]
            lines.append(f"{r['variant']} on {r['provider']}, {r['soak']['generations']} short generations: resident "
                         f"memory {' -> '.join(f'{m:.0f}' for m in rss)} MB ({rss[-1] - rss[0]:+.1f} MB)")
    torch = report["pytorch"]
    if torch:
        for r in report["results"]:
            ratios = [tables.median(r["decode_tokens_per_s"]) / torch["decode_tokens_per_s"]] + [
                tables.median(a["decode_tokens_per_s"]) / b["decode_tokens_per_s"] for a, b in zip(r["past"], torch["past"])
            ]
            lines.append(
                f"{r['variant']} on {r['provider']} vs PyTorch eager: decode {ratios[0]:.2f}x, "
                f"at past {r['past'][0]['past']} {ratios[1]:.2f}x, at past {r['past'][1]['past']} {ratios[2]:.2f}x"
            )
    return "\n".join(lines)


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Decode tokens/s at both cache lengths per engine; skipped (with a note) without matplotlib."""
    plt = tables.pyplot(required=False)
    if plt is None:
        return None
    entries = [(f"{r['variant']}\n{r['provider']}", r) for r in report["results"]]
    if report["pytorch"]:
        entries.append(("pytorch\neager", report["pytorch"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(entries)), 4))
    width = 0.38
    for k, offset in ((0, -width / 2), (1, width / 2)):
        figures = [r["past"][k]["decode_tokens_per_s"] for _, r in entries]
        values = [tables.median(f) for f in figures]
        spread = [[v - f["min"] if isinstance(f, dict) else 0 for v, f in zip(values, figures)],
                  [f["max"] - v if isinstance(f, dict) else 0 for v, f in zip(values, figures)]]
        past = entries[0][1]["past"][k]["past"]
        bars = ax.bar([i + offset for i in range(len(entries))], values, width, yerr=spread, capsize=3,
                      label=f"cache of {past} tokens")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(entries)), [label for label, _ in entries])
    ax.set_ylabel("decode tokens / s (batch 1; bars: min..max)")
    m = report["model"]
    ax.set_title(f"{m['n_layer']} layers, {m['n_embd']} wide, context {m['context_length']}")
    ax.legend()
    return tables.save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    """The worker process: measure one (variant, provider) and print one JSON object."""
    p = argparse.ArgumentParser(prog="python -m gptedge.measure.bench", description="one gptedge bench worker")
    p.add_argument("bundle")
    p.add_argument("--variant", default="auto")
    p.add_argument("--provider", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--soak", type=int, default=0, help="short generations to run for the memory-growth check")
    a = p.parse_args(argv)
    try:
        figures = measure(a.bundle, a.variant, a.provider, a.threads, a.prompt_tokens, a.new_tokens, a.repeat, a.soak)
    except UserError as e:
        print(f"gptedge bench: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
