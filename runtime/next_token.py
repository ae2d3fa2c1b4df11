"""What the model thinks comes next: its probability for every token, before any sampling choice.

A GPT "assigns each word in our vocabulary a probability, and we then pick the winner". Generation
hides that step behind temperature, top-k and top-p; these functions show it raw (softmax of the
logits at temperature 1), for the demo's "next word" view:

- ``next_token_candidates``: the k most likely next tokens after some text;
- ``token_probabilities``: how likely the model found each token of a sequence, given the tokens
  before it (a teacher-forced pass: all positions in one run, no sampling).

Both run the shared ``Decoder`` with an empty cache (one prefill), so they work with every variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from gptedge.errors import UserError
from gptedge.runtime.decoder import Decoder
from gptedge.runtime.text import check_token_ids


@dataclass(frozen=True)
class Candidate:
    token_id: int
    text: str  # the token decoded on its own ("\ufffd" for a part of a multi-byte character)
    probability: float


def _logits(decoder: Decoder, ids: Sequence[int]) -> np.ndarray:
    """Logits (T, V) of one window of at most context_length tokens, positions from 0."""
    x = np.asarray(ids, dtype=np.int64)[None, :]  # (1, T)
    T = x.shape[1]
    mask = np.ones((1, T), dtype=np.int64)
    positions = np.arange(T, dtype=np.int64)[None, :]
    logits = decoder.empty_cache(1, T).run(x, mask, positions)
    return logits[0].astype(np.float64)  # (T, V); fp16 variants give float16


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def next_token_candidates(decoder: Decoder, tokenizer: Tokenizer, ids: Sequence[int], k: int = 10) -> list[Candidate]:
    """The k most likely tokens to follow ``ids`` (the last context_length of them), most likely first."""
    ids = check_token_ids(ids, decoder.shape.vocab_size)
    if not ids:
        raise UserError("the text is empty: give at least one token to predict the next one")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise UserError(f"k={k!r} is invalid: ask for at least 1 candidate")
    window = ids[-decoder.shape.context_length :]
    probs = _softmax(_logits(decoder, window)[-1])  # (V,)
    k = min(k, probs.shape[0])
    top = np.argpartition(-probs, k - 1)[:k]
    top = top[np.argsort(-probs[top])]
    return [Candidate(int(i), tokenizer.decode([int(i)], skip_special_tokens=False), float(probs[i])) for i in top]


def token_probabilities(decoder: Decoder, ids: Sequence[int], start: int) -> np.ndarray:
    """Probability of ``ids[i]`` given the tokens before it, for each i in [start, len(ids)).

    A sequence longer than the context is scored in overlapping windows: each window restarts at
    position 0 (learned absolute positions) and keeps at least half a context of history for every
    token it scores, the same kind of window the generator slides when it runs out of context.
    """
    return np.exp(token_logprobs(decoder, ids, start)[0])


def token_logprobs(decoder: Decoder, ids: Sequence[int], start: int, k: int = 0
                   ) -> tuple[np.ndarray, list[list[tuple[int, float]]]]:
    """Log-probability of ``ids[i]`` given the tokens before it, for each i in [start, len(ids)),
    and the ``k`` most likely tokens at each of those places with theirs (scored as
    ``token_probabilities`` says; the OpenAI API's ``logprobs`` with ``echo``)."""
    ids = check_token_ids(ids, decoder.shape.vocab_size)
    n, C = len(ids), decoder.shape.context_length
    if not isinstance(start, (int, np.integer)) or isinstance(start, bool) or not 1 <= start <= n:
        raise UserError(f"start={start!r} is invalid: use 1 to {n} (the first token has no prediction)")
    chosen = np.empty(n - start, dtype=np.float64)
    top: list[list[tuple[int, float]]] = []
    lo, first = max(0, min(start - C // 2, n - C)), start  # window ids[lo:hi] scores targets first..hi-1
    while first < n:
        hi = min(n, lo + C)
        window = np.asarray(ids[lo:hi], dtype=np.int64)
        logp = log_softmax(_logits(decoder, window))  # (hi - lo, V): row j predicts ids[lo + j + 1]
        targets = np.arange(first, hi)
        rows = logp[targets - lo - 1]
        chosen[first - start : hi - start] = rows[np.arange(len(targets)), window[targets - lo]]
        top += [top_tokens(row, k) for row in rows] if k else [[] for _ in targets]
        first = hi
        lo = hi - C // 2
    return chosen, top


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def top_tokens(logp: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k largest of a (V,) row, as (token, log-probability), most likely first."""
    top = np.argpartition(logp, -k)[-k:]
    return [(int(t), float(logp[t])) for t in top[np.argsort(-logp[top])]]
