"""``gptedge bench --genai``: gptedge's runtime and onnxruntime-genai's C++ loop on the same graph.

Each variant is packaged for genai (``gptedge package --for genai``, the same file hard-linked),
then measured by two kinds of worker process, taking turns for --repeat rounds so that both see
the same machine: a ``gptedge bench`` worker (``measure.bench``) and a genai worker (this module
run as ``python -m gptedge.measure.genai_bench``), each batch 1, greedy, the same random prompt
length and new tokens, the same intra-op threads. Reported per variant: time to first token,
decode tokens/s and peak resident memory of both, and gptedge / genai as ratios of same-round
medians. The graph being the same, the ratios measure the loops and the memory they keep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from gptedge.errors import UserError
from gptedge.measure import tables
from gptedge.measure.machine import describe, peak_rss_mb
from gptedge.measure.pytorch import subprocess_json

WORKER_RUNS = 3  # timed generations per worker (median): one alone still pays for first allocations


def measure_genai(folder: str, threads: int, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    """The worker: one greedy generation after a warm-up, timed with genai's own loop."""
    import numpy as np
    import onnxruntime_genai as og

    config_file = Path(folder) / "genai_config.json"  # a scratch package: set the threads as gptedge's worker does
    settings = json.loads(config_file.read_text())
    settings["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    config_file.write_text(json.dumps(settings))
    config = og.Config(folder)
    config.clear_providers()
    model = og.Model(config)
    vocab = settings["model"]["vocab_size"]
    prompt = np.random.default_rng(0).integers(0, vocab, prompt_tokens).tolist()

    def generate(n_new: int) -> tuple[float, float]:
        params = og.GeneratorParams(model)
        total = prompt_tokens + n_new
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(prompt)  # the prefill
        generator.generate_next_token()  # the first token: "time to first token" counts both
        first = time.perf_counter()
        while not generator.is_done():
            generator.generate_next_token()
        return first - start, (n_new - 1) / (time.perf_counter() - first)

    generate(8)  # warm-up, as gptedge's worker does
    runs = [generate(new_tokens) for _ in range(WORKER_RUNS)]
    return {"engine": "onnxruntime-genai", "version": og.__version__,
            "ttft_ms": statistics.median(1000 * t for t, _ in runs),
            "decode_tokens_per_s": statistics.median(s for _, s in runs), "peak_rss_mb": peak_rss_mb()}


def run_genai_bench(args: argparse.Namespace, variants: list[str], manifest: Any) -> int:
    from gptedge.package.targets import package

    C = manifest.model.context_length
    prompt_tokens = args.prompt_tokens or min(64, C // 4)
    new_tokens = args.new_tokens or min(128, C - prompt_tokens)
    common = ["--threads", str(args.threads), "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens)]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "genai"
        package(args.bundle, folder, "genai", variants, quiet=True)
        for v in variants:
            ours, theirs = [], []
            for r in range(args.repeat):
                print(f"{v}: round {r + 1} of {args.repeat} ...", file=sys.stderr, flush=True)
                ours.append(subprocess_json([sys.executable, "-m", "gptedge.measure.bench", str(args.bundle),
                                             "--variant", v, "--provider", "cpu", "--repeat", str(WORKER_RUNS),
                                             *common],
                                            f"gptedge benchmark of {v}"))
                theirs.append(subprocess_json([sys.executable, "-m", "gptedge.measure.genai_bench",
                                               str(folder / v), *common], f"onnxruntime-genai benchmark of {v}"))
            results.append(_summary(v, ours, theirs))
    report = {"bundle": str(args.bundle), "machine": describe(), "threads": args.threads, "rounds": args.repeat,
              "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "results": results}
    tables.write_report(Path(args.out), "bench_genai", report, format_table(report), write_chart)
    return 0


def _summary(variant: str, ours: list[dict], theirs: list[dict]) -> dict[str, Any]:
    def median(runs: list[dict], key: str) -> float:
        return statistics.median(tables.median(r[key]) for r in runs)

    figures = {"variant": variant, "genai_version": theirs[0]["version"]}
    for key in ("ttft_ms", "decode_tokens_per_s", "peak_rss_mb"):
        figures[key] = {"gptedge": median(ours, key), "genai": median(theirs, key)}
    figures["decode_ratio_same_round"] = statistics.median(
        tables.median(a["decode_tokens_per_s"]) / b["decode_tokens_per_s"] for a, b in zip(ours, theirs))
    return figures


def format_table(report: dict[str, Any]) -> str:
    rows = [("variant", "tok/s gptedge", "tok/s genai", "gptedge/genai", "ttft ms gptedge", "ttft ms genai",
             "peak MB gptedge", "peak MB genai")]
    for r in report["results"]:
        rows.append((r["variant"], f"{r['decode_tokens_per_s']['gptedge']:.1f}", f"{r['decode_tokens_per_s']['genai']:.1f}",
                     f"{r['decode_ratio_same_round']:.2f}", f"{r['ttft_ms']['gptedge']:.1f}", f"{r['ttft_ms']['genai']:.1f}",
                     f"{r['peak_rss_mb']['gptedge']:.0f}", f"{r['peak_rss_mb']['genai']:.0f}"))
    return tables.text_table(rows) + (f"\nbatch 1, greedy, {report['prompt_tokens']}-token prompts, "
                                      f"{report['new_tokens']} new tokens, {report['threads']} threads, "
                                      f"median of {report['rounds']} interleaved rounds; the same graph file for both")


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    plt = tables.pyplot(required=False)
    if plt is None:
        return None
    results = report["results"]
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(results)), 4))
    for k, engine in enumerate(("gptedge", "genai")):
        bars = ax.bar([i + (k - 0.5) * 0.38 for i in range(len(results))],
                      [r["decode_tokens_per_s"][engine] for r in results], 0.38, label=engine)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(results)), [r["variant"] for r in results])
    ax.set_ylabel("decode tokens / s (batch 1)")
    ax.set_title("gptedge's runtime and onnxruntime-genai on the same graph")
    ax.legend()
    return tables.save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    """The genai worker: measure one packaged folder and print one JSON object."""
    p = argparse.ArgumentParser(prog="python -m gptedge.measure.genai_bench", description="one onnxruntime-genai worker")
    p.add_argument("folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    a = p.parse_args(argv)
    try:
        print(json.dumps(measure_genai(a.folder, a.threads, a.prompt_tokens, a.new_tokens)))
    except UserError as e:
        print(f"gptedge bench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
