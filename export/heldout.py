"""The text the parity gate runs on: held-out text the model never trained on.

For a checkpoint trained on the default corpus, its held-out documents are recomputed exactly as
training split them (same holdout fraction and seed, from config.json). For a checkpoint trained
on the user's own files, the user may pass that text with --text; otherwise the default corpus's
held-out split is used (any real text exercises the graph; it need only be unseen for figures
that measure quality).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from gptedge.errors import UserError
from gptedge.runtime import records
from gptedge.train.config import TrainConfig
from gptedge.train.corpus import DEFAULT_CORPUS_NAME, load_documents, split_documents
from gptedge.train.tokenizer import encode_documents

if TYPE_CHECKING:
    from gptedge.train.checkpoint_config import CheckpointConfig

# The gate needs a prompt, a continuation and a few batched prompts: shorter text cannot test it.
MIN_TOKENS = 48


@dataclass(frozen=True)
class HeldOutText:
    description: str  # for the manifest: where the text came from
    tokens: np.ndarray  # (N,) int64, documents separated by the end-of-text token


@dataclass(frozen=True)
class Split:
    """How training split its corpus: the checkpoint's settings, or the bundle's record of them."""

    corpus: str = DEFAULT_CORPUS_NAME
    holdout_fraction: float = TrainConfig.holdout_fraction
    seed: int = TrainConfig.seed

    @classmethod
    def of_checkpoint(cls, info: CheckpointConfig) -> "Split":
        """A checkpoint's split, from its config.json."""
        return cls(corpus_name(info), info.train.holdout_fraction, info.train.seed)

    @classmethod
    def of_bundle(cls, provenance: records.Provenance | None) -> "Split":
        """A bundle's split, as export recorded it (the defaults for one exported before it did)."""
        p = provenance
        if p is None or p.holdout_fraction is None or p.split_seed is None:
            return cls(p.corpus if p is not None and p.corpus else DEFAULT_CORPUS_NAME)
        return cls(p.corpus or DEFAULT_CORPUS_NAME, p.holdout_fraction, p.split_seed)


def corpus_name(info: CheckpointConfig) -> str:
    """The corpus a checkpoint was trained on, as config.json names it (imported weights: none)."""
    return info.corpus.name if info.corpus is not None else DEFAULT_CORPUS_NAME


def heldout_text(split: Split, tokenizer: Tokenizer, text_file: str | Path | None = None) -> HeldOutText:
    """Held-out tokens of the default corpus as ``split`` divided it, or the whole of ``text_file``."""
    if text_file is not None:
        docs = load_documents(str(text_file))
        description = f"{Path(text_file).name} (given with --text)"
    else:
        _, docs = split_documents(load_documents(None), split.holdout_fraction, split.seed)
        description = f"held-out split of {DEFAULT_CORPUS_NAME}: {len(docs)} documents"
        if split.corpus != DEFAULT_CORPUS_NAME:
            description += " (the checkpoint was trained on other text: pass --text to use its own)"
    tokens = encode_documents(tokenizer, [d.text for d in docs])
    if len(tokens) < MIN_TOKENS:
        raise UserError(
            f"the parity text {description} has only {len(tokens)} tokens: give at least {MIN_TOKENS} with --text"
        )
    return HeldOutText(description, tokens)
