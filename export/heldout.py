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
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from gptedge.errors import UserError
from gptedge.train.config import TrainConfig
from gptedge.train.corpus import DEFAULT_CORPUS_NAME, load_documents, split_documents
from gptedge.train.tokenizer import encode_documents

# The gate needs a prompt, a continuation and a few batched prompts: shorter text cannot test it.
MIN_TOKENS = 48


@dataclass(frozen=True)
class HeldOutText:
    description: str  # for the manifest: where the text came from
    tokens: np.ndarray  # (N,) int64, documents separated by the end-of-text token


def trained_on_default(info: dict[str, Any]) -> bool:
    """Whether config.json says the checkpoint was trained on the embedded default corpus."""
    corpus = info.get("corpus") or {}  # the trainer records {"name": ..., "sha256": ..., ...}
    return corpus.get("name", DEFAULT_CORPUS_NAME) == DEFAULT_CORPUS_NAME


def heldout_text(info: dict[str, Any], tokenizer: Tokenizer, text_file: str | Path | None = None) -> HeldOutText:
    """Held-out tokens for a checkpoint whose config.json is ``info``, or the whole of ``text_file``."""
    if text_file is not None:
        docs = load_documents(str(text_file))
        description = f"{Path(text_file).name} (given with --text)"
    else:
        train = TrainConfig.from_dict(info.get("train", {}))
        _, docs = split_documents(load_documents(None), train.holdout_fraction, train.seed)
        description = f"held-out split of {DEFAULT_CORPUS_NAME}: {len(docs)} documents"
        if not trained_on_default(info):
            description += " (the checkpoint was trained on other text: pass --text to use its own)"
    tokens = encode_documents(tokenizer, [d.text for d in docs])
    if len(tokens) < MIN_TOKENS:
        raise UserError(
            f"the parity text {description} has only {len(tokens)} tokens: give at least {MIN_TOKENS} with --text"
        )
    return HeldOutText(description, tokens)
