"""Training batches and held-out windows cut from the token streams, and the unigram baseline.

A training batch is a set of random windows of ``seq_len + 1`` tokens (inputs and the targets one
token to the right). Which windows is a pure function of (seed, step, micro-step, rank): every
process of a distributed run sees different text, and a resumed run sees exactly the batches the
uninterrupted run would have seen, with no random-generator state to carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gptedge.errors import UserError


@dataclass(frozen=True)
class TokenSplits:
    train: np.ndarray  # (N,) int64, documents separated by the end-of-text token
    heldout: np.ndarray  # (M,) int64

    def check_fits(self, seq_len: int) -> None:
        """Both splits must hold at least one window of seq_len + 1 tokens."""
        need = seq_len + 1
        for name, tokens in (("training", self.train), ("held-out", self.heldout)):
            if len(tokens) < need:
                raise UserError(
                    f"the corpus is too small: its {name} split has {len(tokens)} tokens, one window needs "
                    f"{need}: give more text or lower --seq-len"
                )


def training_batch(
    tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, step: int, micro: int = 0, rank: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, each (B, seq_len), from random windows of the training stream."""
    rng = np.random.default_rng([seed, step, micro, rank])
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)  # the last start is len - seq_len - 1
    windows = np.stack([tokens[s : s + seq_len + 1] for s in starts])  # (B, seq_len + 1)
    windows = torch.from_numpy(windows)
    return windows[:, :-1], windows[:, 1:]


def heldout_windows(tokens: np.ndarray, seq_len: int, max_windows: int) -> np.ndarray:
    """Fixed windows (N, seq_len + 1) whose targets tile the held-out stream without overlap.

    Window i starts at i * seq_len, so consecutive windows share one token (the last target of one is
    the first input of the next) and every token after the first is predicted exactly once. If there
    are more than ``max_windows``, evenly spaced ones are kept, so the estimate spans the whole split.
    """
    count = (len(tokens) - 1) // seq_len
    index = np.arange(count)
    if count > max_windows:
        index = np.unique(np.linspace(0, count - 1, max_windows).round().astype(np.int64))
    return np.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in index])


def unigram_perplexity(train_tokens: np.ndarray, targets: np.ndarray, vocab_size: int) -> float:
    """Perplexity on ``targets`` of a model that ignores context: token frequencies of the training
    split with add-one smoothing. A trained GPT must beat this to have learned anything beyond counts."""
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64)
    log_p = np.log((counts + 1.0) / (counts.sum() + vocab_size))
    return math.exp(-float(log_p[targets.reshape(-1)].mean()))
