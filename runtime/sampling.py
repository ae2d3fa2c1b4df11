"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty.

Pure numpy on (B, V) float arrays, one row per sequence. The order is the usual one (as in Hugging
Face transformers): repetition penalty, temperature, top-k, top-p, then a draw. Randomness comes
only from the ``numpy.random.Generator`` passed in, so a seeded generator repeats its choices.
"""

from __future__ import annotations

import numpy as np

from gptedge.runtime.settings import GenerationSettings


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """Make tokens already in the sequence less likely (CTRL paper, as transformers does it):
    a positive logit is divided by ``penalty``, a negative one multiplied. ``seen`` is (B, V) bool."""
    penalized = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, penalized, logits)


def sample_row(
    logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator
) -> int:
    """One token from a (V,) row of logits. ``top_k`` 0 and ``top_p`` 1.0 switch those filters off."""
    V = logits.shape[-1]
    candidates = np.argpartition(logits, -top_k)[-top_k:] if 0 < top_k < V else None  # top-k: O(V), no sort
    scaled = (logits if candidates is None else logits[candidates]).astype(np.float64) / temperature
    if top_p < 1.0:
        keep = nucleus(scaled, top_p)
        scaled = scaled[keep]
        candidates = keep if candidates is None else candidates[keep]
    weights = np.exp(scaled - scaled.max())
    cumulative = np.cumsum(weights)
    choice = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(weights) - 1)
    return int(choice if candidates is None else candidates[choice])


def nucleus(scaled: np.ndarray, top_p: float) -> np.ndarray:
    """Indices (into ``scaled``) of the top-p nucleus: the fewest most likely tokens whose
    probabilities sum to ``top_p``, the one that crosses the threshold included.

    Sorting all 50 K logits of a GPT-2 vocabulary costs milliseconds per token, so look at the
    largest m first and widen m (x8) until those m hold top_p of the probability mass; the nucleus
    is then inside them (a trained model's usually is at m = 64)."""
    weights = np.exp(scaled - scaled.max())  # unnormalised probabilities
    mass = top_p * weights.sum()
    n = len(weights)
    m = min(64, n)
    while True:
        top = np.argpartition(weights, -m)[-m:] if m < n else np.arange(n)
        top = top[np.argsort(-weights[top], kind="stable")]
        cumulative = np.cumsum(weights[top])
        if cumulative[-1] >= mass or m == n:
            return top[: min(int(np.searchsorted(cumulative, mass)) + 1, m)]
        m = min(8 * m, n)


class Sampler:
    """Next-token choice for a batch with fixed settings; greedy when temperature is 0."""

    def __init__(
        self,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
    ) -> None:
        # The one set of rules for these values (a UserError naming the field and its range); the
        # per-token functions above then need no checks of their own.
        GenerationSettings(temperature=temperature, top_k=top_k, top_p=top_p,
                           repetition_penalty=repetition_penalty, seed=seed)
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.rng = np.random.default_rng(seed)

    @property
    def needs_history(self) -> bool:
        return self.repetition_penalty != 1.0

    def __call__(self, logits: np.ndarray, seen: np.ndarray | None = None) -> np.ndarray:
        """logits (B, V), seen (B, V) bool (needed with a repetition penalty) -> token ids (B,)."""
        if self.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, self.repetition_penalty)
        if self.temperature == 0.0:
            return logits.argmax(axis=-1)
        return np.array(
            [sample_row(row, self.temperature, self.top_k, self.top_p, self.rng) for row in logits], dtype=np.int64
        )
