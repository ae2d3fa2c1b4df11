"""``gptedge eval``'s reports: the console table, ``eval.md``, ``eval.json`` and ``eval.png``.

The report is the dict ``export.evaluate`` builds: ``settings`` (how it measured), ``model`` and
one entry per engine (each variant, and PyTorch with --checkpoint) with its figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptedge import atomic
from gptedge.errors import write_error
from gptedge.measure import tables

REPORT_FILES = ("eval.json", "eval.md", "eval.png")

COLUMNS = (  # header, key, format (a format spec, or a function of the value)
    ("provider", "provider", "s"),
    ("size MB", "size_mb", ".2f"),
    ("x fp32", "size_vs_fp32", ".3f"),
    ("perplexity", "perplexity", ".4f"),
    ("vs fp32", "perplexity_vs_fp32_pct", lambda v: f"{v:+.3f} %"),
    ("max abs dlogit", "max_abs_logit_diff", ".4f"),
    ("top-1", "top1_agreement", ".4f"),
    ("greedy", "greedy_agreement", ".3f"),
    ("load s", "load_s", ".3f"),
    ("TTFT ms", "ttft_ms", ".1f"),
    ("tok/s", "decode_tokens_per_s", ".0f"),
    ("x fp32", "decode_vs_fp32", ".2f"),
)


def _rows(report: dict[str, Any]) -> list[list[str]]:
    """Header and one row per engine, as strings ("-" for a figure not measured)."""
    rows = [["variant"] + [header for header, _, _ in COLUMNS]]
    for name, entry in report["entries"].items():
        entry = {**entry, "size_mb": entry["size_bytes"] / 1e6}
        cells = [name]
        for _, key, fmt in COLUMNS:
            value = entry.get(key)
            cells.append("-" if value is None else fmt(value) if callable(fmt) else format(value, fmt))
        rows.append(cells)
    return rows


def _notes(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    notes = [
        f"text: {s['text']}; {s['windows']} windows of {s['window_tokens']} tokens ({s['tokens_scored']} tokens "
        f"scored), the same for every engine; quality computed on cpu",
        f"greedy: {s['prompts']} prompts of {s['prompt_tokens']} tokens, {s['new_tokens']} new tokens each; "
        f"agreement = share of tokens before the first that differs from fp32's",
        f"speed: batch 1 on {s['machine']}, median of {s.get('rounds', 1)} rounds of the prompts with the variants taking "
        f"turns (gptedge bench measures speed in more detail)",
    ]
    for name, e in report["entries"].items():
        if e.get("not_run"):
            notes.append(f"{name}: not generated with ({e['not_run']})")
    return notes


def format_table(report: dict[str, Any]) -> str:
    return "\n".join([tables.text_table(_rows(report)), "", *_notes(report)])


def _markdown(report: dict[str, Any]) -> str:
    rows = _rows(report)
    m = report["model"]
    lines = [
        f"# gptedge eval: {Path(report['bundle']).name}",
        "",
        f"Model: {m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide, vocabulary {m['vocab_size']}, "
        f"context {m['context_length']}. Measured {report['settings']['measured_at']}.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(rows[0]))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", *(f"- {n}" for n in _notes(report)), "", "![size, perplexity and speed](eval.png)", ""]
    return "\n".join(lines)


def _chart(report: dict[str, Any], path: Path) -> None:
    plt = tables.pyplot()
    entries = report["entries"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, key, scale in ((left, "size_bytes", 1e-6), (right, "decode_tokens_per_s", 1.0)):
        spots: dict[tuple[str, str], tuple[float, float, list[str]]] = {}  # engines on one spot share a label
        for i, (name, e) in enumerate(entries.items()):
            if e.get(key):
                x, y = e[key] * scale, e["perplexity"]
                ax.scatter(x, y, s=40, color=f"C{i}")
                spots.setdefault((f"{x:.2g}", f"{y:.4g}"), (x, y, []))[2].append(name)
        for x, y, names in spots.values():
            ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    left.set_xlabel("file size (MB)")
    left.set_ylabel("held-out perplexity (lower is better)")
    right.set_xlabel("decode tokens / s (batch 1)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    m = report["model"]
    fig.suptitle(f"{Path(report['bundle']).name}: {m['n_layer']} layers, {m['n_embd']} wide; "
                 f"size vs perplexity vs decode speed")
    tables.save_png(fig, path)


def write_reports(report: dict[str, Any], out_dir: Path) -> list[Path]:
    json_report = {**report, "entries": {k: {f: v for f, v in e.items() if f != "tokens"} for k, e in report["entries"].items()}}
    paths = [out_dir / f for f in REPORT_FILES]
    try:
        atomic.write_text(paths[0], json.dumps(json_report, indent=2) + "\n")
        atomic.write_text(paths[1], _markdown(report))
        _chart(report, paths[2])
    except OSError as e:  # a folder that could not be made after all (/proc), a full disk
        raise write_error(e, out_dir, "run it again") from None
    return paths
