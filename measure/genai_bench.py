"""``gptedge bench --genai`` and ``--genai-builder``: gptedge's runtime beside onnxruntime-genai.

Two comparisons share the timing here:

- ``--genai``: each variant packaged for genai (``gptedge package --for genai``, the same file
  hard-linked), so both engines run the same graph and the ratios measure the loops and the
  memory they keep;
- ``--genai-builder`` (``measure.genai_builder``): each variant beside the model genai's own
  builder makes of a Llama of the same size at the same precision: what a genai user gets.

For each variant, --repeat rounds; a round runs a ``gptedge bench`` worker (``measure.bench``) and
then a genai worker (``genai_worker.py time``), each a fresh process, batch 1, greedy, the same
random prompt length and new tokens, the same intra-op threads, so that both see the same
machine. Reported per variant: time to first token, decode tokens/s and peak resident memory of
both (medians of the kept rounds), and gptedge / genai as the median of same-round ratios.

Rounds disturbed by other load are discarded. Over each round, the CPU time the machine spent
busy (``machine.cpu_seconds``, from /proc/stat) less the CPU time of this process and its workers
is what other processes took; divided by the round's wall time, it is their load in cores. A round
whose foreign load is above FOREIGN_LOAD_LIMIT is dropped, since the two workers of a round may
have been hit unequally, which biases the ratio. If every round of a variant is above it, the
quietest is kept and the table marks it. Where /proc/stat is missing nothing is dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gptedge.measure import tables
from gptedge.measure.bench import token_counts
from gptedge.measure.genai_worker import WORKER_RUNS
from gptedge.measure.machine import cpu_seconds, describe
from gptedge.measure.pytorch import subprocess_json

FOREIGN_LOAD_LIMIT = 0.1  # cores' worth of other processes' CPU during a round before it is dropped
WORKER = Path(__file__).with_name("genai_worker.py")  # run by path: the side venv has no gptedge


def worker_flags(threads: int, prompt_tokens: int, new_tokens: int) -> list[str]:
    return ["--threads", str(threads), "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens)]


def gptedge_worker(bundle: Path, variant: str, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "gptedge.measure.bench", str(bundle), "--variant", variant, "--provider", "cpu",
            "--repeat", str(WORKER_RUNS), *flags]


def genai_worker(python: str | Path, folder: Path, flags: list[str]) -> list[str]:
    return [str(python), str(WORKER), "time", str(folder), *flags]


def kept_rounds(loads: list[float | None], limit: float = FOREIGN_LOAD_LIMIT) -> list[int]:
    """The indices of the rounds to keep: foreign load at most ``limit`` (or not measured); if
    there is none such, the quietest round alone."""
    kept = [i for i, load in enumerate(loads) if load is None or load <= limit]
    return kept or [min(range(len(loads)), key=lambda i: loads[i] or 0.0)]


def interleave(variant: str, rounds: int, ours: list[str], theirs: list[str]) -> dict[str, Any]:
    """Run the gptedge worker ``ours`` and the genai worker ``theirs`` in turn for ``rounds``
    rounds; the variant's figures from the rounds kept."""
    pairs, loads = [], []
    for r in range(rounds):
        print(f"{variant}: round {r + 1} of {rounds} ...", file=sys.stderr, flush=True)
        start, before = time.perf_counter(), cpu_seconds()
        pairs.append((subprocess_json(ours, f"gptedge benchmark of {variant}"),
                      subprocess_json(theirs, f"onnxruntime-genai benchmark of {variant}")))
        after, wall = cpu_seconds(), time.perf_counter() - start
        loads.append(None if before is None or after is None
                     else max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall)
    kept = kept_rounds(loads)
    if len(kept) < rounds:
        print(f"{variant}: {rounds - len(kept)} of {rounds} rounds discarded (other processes' load per round: "
              f"{', '.join(f'{x:.2f}' for x in loads if x is not None)} cores; the limit is {FOREIGN_LOAD_LIMIT})",
              file=sys.stderr, flush=True)
    return _summary(variant, [pairs[i] for i in kept], loads, kept)


def _summary(variant: str, pairs: list[tuple[dict, dict]], loads: list[float | None], kept: list[int]) -> dict[str, Any]:
    def median(runs: list[dict], key: str) -> float:
        return statistics.median(tables.median(r[key]) for r in runs)

    ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    figures: dict[str, Any] = {"variant": variant, "genai_version": theirs[0]["version"]}
    for key in ("ttft_ms", "decode_tokens_per_s"):
        figures[key] = {"gptedge": median(ours, key), "genai": median(theirs, key)}
    # gptedge's worker goes on to time long caches; its peak up to the end of the same runs is the one to compare
    figures["peak_rss_mb"] = {"gptedge": median(ours, "request_peak_rss_mb"), "genai": median(theirs, "peak_rss_mb")}
    figures["decode_ratio_same_round"] = statistics.median(
        tables.median(a["decode_tokens_per_s"]) / b["decode_tokens_per_s"] for a, b in pairs)
    disturbed = all(x is not None and x > FOREIGN_LOAD_LIMIT for x in loads)
    figures.update(foreign_load_cores=loads, rounds_kept=[i + 1 for i in kept], all_rounds_disturbed=disturbed)
    return figures


def run_genai_bench(args: argparse.Namespace, variants: list[str], manifest: Any) -> int:
    from gptedge.package.targets import package

    prompt_tokens, new_tokens = token_counts(args, manifest.model.context_length)
    flags = worker_flags(args.threads, prompt_tokens, new_tokens)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "genai"
        package(args.bundle, folder, "genai", variants, quiet=True)
        results = [interleave(v, args.repeat, gptedge_worker(args.bundle, v, flags),
                              genai_worker(sys.executable, folder / v, flags)) for v in variants]
    write(args, "bench_genai", prompt_tokens, new_tokens, results, compared="the same graph file for both",
          title="gptedge's runtime and onnxruntime-genai on the same graph")
    return 0


def write(args: argparse.Namespace, name: str, prompt_tokens: int, new_tokens: int, results: list[dict],
          **about: Any) -> None:
    """OUT/name.json and .png and the table; ``about`` (compared, title, ...) goes into the report."""
    report = {"bundle": str(args.bundle), "machine": describe(), "threads": args.threads, "rounds": args.repeat,
              "foreign_load_limit_cores": FOREIGN_LOAD_LIMIT, "prompt_tokens": prompt_tokens,
              "new_tokens": new_tokens, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **about, "results": results}
    tables.write_report(Path(args.out), name, report, format_table(report), write_chart)


def format_table(report: dict[str, Any]) -> str:
    rows = [("variant", "tok/s gptedge", "tok/s genai", "gptedge/genai", "ttft ms gptedge", "ttft ms genai",
             "peak MB gptedge", "peak MB genai", "rounds kept")]
    for r in report["results"]:
        rows.append((r["variant"], f"{r['decode_tokens_per_s']['gptedge']:.1f}", f"{r['decode_tokens_per_s']['genai']:.1f}",
                     f"{r['decode_ratio_same_round']:.2f}", f"{r['ttft_ms']['gptedge']:.1f}", f"{r['ttft_ms']['genai']:.1f}",
                     f"{r['peak_rss_mb']['gptedge']:.0f}", f"{r['peak_rss_mb']['genai']:.0f}",
                     f"{len(r['rounds_kept'])}/{report['rounds']}" + ("*" if r["all_rounds_disturbed"] else "")))
    lines = [tables.text_table(rows),
             f"batch 1, greedy, {report['prompt_tokens']}-token prompts, {report['new_tokens']} new tokens, "
             f"{report['threads']} threads, medians of interleaved rounds; {report['compared']}",
             f"a round is discarded when other processes took more than {report['foreign_load_limit_cores']} cores"]
    if any(r["all_rounds_disturbed"] for r in report["results"]):
        lines.append("* every round was disturbed: the quietest one is kept (rerun on a quieter machine)")
    return "\n".join(lines + report.get("notes", []))


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
    ax.set_title(report["title"], fontsize=10)
    ax.legend()
    return tables.save_png(fig, path)
