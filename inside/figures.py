"""Pictures of an ``Inspection``: attention heatmaps and the logit-lens table.

A heatmap has the tokens on both axes: row i is token i's query, column j how much of token j's
value it takes. The causal mask leaves everything right of the diagonal empty (drawn blank, not
as zero-coloured cells), so the triangle a reader expects is visible. Long texts keep their
last ``MAX_TOKENS`` tokens, with a note in the title, so the labels stay readable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptedge.measure import tables
from gptedge.runtime import Inspection

MAX_TOKENS = 40  # tokens a heatmap shows (the last ones), so that every label can be read


def label(token: str) -> str:
    """A token as an axis label: whitespace made visible, long pieces shortened."""
    shown = token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·")
    return shown if len(shown) <= 12 else shown[:11] + "…"


def shown(seen: Inspection) -> tuple[int, list[str], str]:
    """(first token index shown, labels, a note when tokens were left out)."""
    T = len(seen.tokens)
    first = max(0, T - MAX_TOKENS)
    dropped = first + seen.cut
    note = f" (last {T - first} of {T + seen.cut} tokens)" if dropped else ""
    return first, [label(t) for t in seen.tokens[first:]], note


def heatmap(ax, weights: np.ndarray, labels: list[str], title: str) -> object:
    """One head's (T, T) attention on ``ax``; the masked future left blank."""
    T = weights.shape[0]
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    from matplotlib.colors import PowerNorm

    # A square-root colour scale over the full 0..1: over a long text most weights are small, and
    # a linear scale would show them all as the same dark.
    image = ax.imshow(np.ma.masked_where(future, weights), cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0))
    ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(T), labels, fontsize=7)
    ax.set_xlabel("key: the token poured from")
    ax.set_ylabel("query: the token pouring")
    ax.set_title(title, fontsize=9)
    return image


def attention_png(seen: Inspection, layer: int, heads: list[int], path: Path) -> Path:
    """One PNG: the chosen heads of one layer side by side."""
    plt = tables.pyplot()
    first, labels, note = shown(seen)
    T = len(labels)
    size = max(4.0, 0.22 * T + 2)
    fig, axes = plt.subplots(1, len(heads), figsize=(size * len(heads), size + 0.6), squeeze=False,
                             layout="constrained")
    for ax, head in zip(axes[0], heads):
        image = heatmap(ax, seen.attentions[layer, head, first:, first:], labels, f"layer {layer}, head {head}{note}")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="attention (each row sums to 1)")
    return tables.save_png(fig, path)


def lens_table(seen: Inspection) -> str:
    """Each layer's top guesses for the token after the last, as a text table."""
    rows = [("after layer", *(f"guess {i + 1}" for i in range(len(seen.lens[0]))))]
    for layer, guesses in enumerate(seen.lens):
        rows.append((str(layer), *(f"{label(c.text)} {c.probability:.3f}" for c in guesses)))
    return tables.text_table(rows)
