"""What the page shows, as plain values: the stats line, the variant table, the next-word bars and
the answer with each token's probability. Pure functions (no gradio, no model), so a reader sees
every format in one place."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from gptedge.inside import figures
from gptedge.measure import tables
from gptedge.runtime import Candidate, GenerationResult, Inspection, contract

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
        + (" It is a chat model: in the Chat tab your messages are laid out by its chat template, the way it "
           "was tuned to read a conversation, and it answers; the Text tab continues any text."
           if manifest.chat_template is not None else "")
    )


def conversation(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Chat messages as the chat box takes them: each text as a text part, which it shows as it is
    (a plain string it would dedent and strip, changing the model's answer before it is sent back)."""
    return [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in messages]


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
    for name, v in manifest.for_generation().items():
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


# -- Look inside ------------------------------------------------------------------------------

ATTENTION_CAPTION = (
    "**Attention.** Each token asks a question (its *query*) and every token so far offers a label (its *key*); "
    "their dot products, through a softmax, decide how much of each earlier token's *value* flows into this "
    "token's mix. Row = the token doing the looking, column = the token looked at; each row sums to 1. The "
    "blank triangle is the causal mask: no token can see the ones after it.")
POURS_CAPTION = (
    "**Where one token looks.** For the chosen token, the earlier tokens it takes the most from in each head of "
    "this layer: one head may track the previous word, another the start of the sentence.")
LENS_CAPTION = (
    "**Each layer's guess.** The final LayerNorm and output head applied to the position's running sum after "
    "each layer (the *logit lens*): what the model would predict if it stopped there. The last row is the "
    "model's real prediction for the token after this text (with the answer cleared, exactly the Next word "
    "bars).")


def token_choices(seen: Inspection) -> list[tuple[str, int]]:
    """The tokens a reader can pick (the ones the heatmap shows), labelled with their position."""
    first, labels, _ = figures.shown(seen)
    return [(f"{first + i}: {label}", first + i) for i, label in enumerate(labels)]


def attention_figure(seen: Inspection, layer: int, head: int) -> Any:
    plt = tables.pyplot()
    first, labels, note = figures.shown(seen)
    size = max(4.0, 0.22 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    image = figures.heatmap(ax, seen.attentions[layer, head, first:, first:], labels,
                            f"layer {layer}, head {head}{note}")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def pours_figure(seen: Inspection, layer: int, token: int, top: int = 5) -> Any:
    """One small bar chart per head: the earlier tokens ``token`` attends to most."""
    plt = tables.pyplot()
    heads = seen.attentions.shape[1]
    fig, axes = plt.subplots(1, heads, figsize=(2.6 * heads, 2.6), squeeze=False, layout="constrained")
    for head, ax in enumerate(axes[0]):
        weights = seen.attentions[layer, head, token, : token + 1]
        order = weights.argsort()[::-1][:top]
        ax.barh([f"{i}: {figures.label(seen.tokens[i])}" for i in order][::-1], weights[order][::-1], color="#2563eb")
        ax.set_xlim(0, 1)
        ax.set_title(f"head {head}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"what {figures.label(seen.tokens[token])!r} (token {token}) takes from, layer {layer}", fontsize=10)
    return fig


def lens_rows(seen: Inspection) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): per layer its top guesses for the next token, with probabilities."""
    k = len(seen.lens[0])
    headers = ["after layer", *(f"#{i + 1}" for i in range(k))]
    rows = [[str(layer), *(f"{visible(c.text)} {percent(c.probability)}" for c in guesses)]
            for layer, guesses in enumerate(seen.lens)]
    return headers, rows
