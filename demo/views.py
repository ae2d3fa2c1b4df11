"""What the page shows, as plain values: the stats line, the variant table, the next-word bars and
the answer with each token's probability. Pure functions (no gradio, no model), so a reader sees
every format in one place."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from gptedge.runtime import Candidate, GenerationResult, contract

STOP_REASONS = {"eos": "end of text", "stop": "stop string", "length": "max new tokens"}

# The eval harness's figures (``gptedge eval`` writes them into each variant's manifest metrics),
# in the order the table shows them: header, metric key, format. A bundle not yet measured shows
# blanks.
METRIC_COLUMNS = (
    ("perplexity", "perplexity", "{:.2f}"),
    ("vs fp32", "perplexity_vs_fp32_pct", "{:+.2f} %"),
    ("top-1 = fp32", "top1_agreement", "{:.1%}"),
    ("greedy = fp32", "greedy_agreement", "{:.0%}"),
    ("first token ms", "ttft_ms", "{:.1f}"),
    ("tokens/s", "decode_tokens_per_s", "{:,.0f}"),
    ("speed vs fp32", "decode_vs_fp32", "{:.2f}×"),
)


def bundle_description(manifest: contract.Manifest, bundle_dir: Path) -> str:
    shape = manifest.model
    step = manifest.provenance.checkpoint_step if manifest.provenance else None
    return (
        f"# gptedge demo\n"
        f"Bundle `{bundle_dir}`" + (f" (trained {step} steps)" if step is not None else "")
        + f": {shape.n_layer} layers, {shape.n_head} heads, {shape.n_embd} wide, vocabulary {shape.vocab_size:,}, "
        f"context {shape.context_length} tokens. The model continues your text one token at a time: at each "
        f"step it gives every token of its vocabulary a probability, and one of the likely ones is picked."
    )


def stats_line(result: GenerationResult, variant: str, provider: str) -> str:
    return (
        f"**time to first token** {result.ttft_s * 1000:.1f} ms · "
        f"**{result.tokens_per_s:,.0f} tokens/s** · "
        f"**{len(result.token_ids)} tokens** · "
        f"**stopped by** {STOP_REASONS.get(result.stop_reason, result.stop_reason)} · "
        f"{variant} on {provider}"
    )


def variant_table(manifest: contract.Manifest) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows): one row per variant with its size and the eval harness's figures."""
    fp32 = manifest.variants.get("fp32")
    headers = ["variant", "precision", "size MB", "size vs fp32"] + [h for h, _, _ in METRIC_COLUMNS]
    rows = []
    for name, v in manifest.variants.items():
        size = v.total_bytes
        ratio = f"{size / fp32.total_bytes:.2f}×" if fp32 else ""
        values = [getattr(v.metrics, key) if v.metrics else None for _, key, _ in METRIC_COLUMNS]
        figures = [fmt.format(x) if x is not None else "" for x, (_, _, fmt) in zip(values, METRIC_COLUMNS)]
        rows.append([name, v.precision, f"{size / 1e6:.2f}", ratio, *figures])
    return headers, rows


def percent(p: float) -> str:
    return f"{p:.0%}" if p >= 0.01 else "<1%"


def visible(token: str) -> str:
    """A token's text with its whitespace made visible: " the" and "the" are different tokens."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def candidate_bars(candidates: Sequence[Candidate]) -> dict[str, float]:
    """{label: probability} for the bar chart; labels are unique even when two tokens look alike
    (e.g. two halves of different multi-byte characters)."""
    bars: dict[str, float] = {}
    for c in candidates:
        label = visible(c.text)
        if label in bars:
            label = f"{label} (#{c.token_id})"
        bars[label] = c.probability
    return bars


def answer_html(prompt: str, tokens: Sequence[Any]) -> str:
    """The prompt, then each generated token shaded by its probability, the percentage beneath.

    ``tokens`` are ``models.TokenProbability``: a confident model reads dark, a surprising token
    (one it gave little probability but sampling picked anyway) stands out pale."""
    spans = []
    for t in tokens:
        p = t.probability
        spans.append(
            f'<span class="tok" title="p = {p:.4f}" style="background: rgba(37, 99, 235, {0.08 + 0.5 * p:.2f})">'
            f'<span class="tok-text">{html.escape(visible(t.text))}</span>'
            f'<span class="tok-p">{percent(p)}</span></span>'
        )
    return (
        f'<div class="answer-tokens"><span class="tok-prompt">{html.escape(prompt)}</span>'
        + "".join(spans)
        + "</div>"
    )
