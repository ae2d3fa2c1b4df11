"""Byte-level BPE: every byte is in the base alphabet, so any text (typos, emoji, any script) encodes
and decodes back exactly, while common words become single tokens."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gptedge.errors import UserError

EOS_TOKEN = "<|endoftext|>"  # separates documents in training and ends generation
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet plus the special tokens


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    if vocab_size < MIN_VOCAB:
        raise UserError(f"vocab size {vocab_size} is too small: byte-level BPE needs at least {MIN_VOCAB}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() < vocab_size:
        raise UserError(
            f"the corpus only supports a vocabulary of {tok.get_vocab_size()} tokens, not {vocab_size}: "
            f"lower --vocab-size or give more text"
        )
    return tok


def special_ids(tok: Tokenizer) -> tuple[int, int]:
    """(eos_id, pad_id); raises if the tokenizer lacks them."""
    eos, pad = tok.token_to_id(EOS_TOKEN), tok.token_to_id(PAD_TOKEN)
    if eos is None:
        raise UserError(f"tokenizer has no {EOS_TOKEN} token: train it with gptedge or add the token")
    return eos, pad if pad is not None else eos


def encode_documents(tok: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    """One token stream: each document followed by the end-of-text token."""
    eos, _ = special_ids(tok)
    out: list[int] = []
    for enc in tok.encode_batch(list(texts), add_special_tokens=False):
        out.extend(enc.ids)
        out.append(eos)
    return np.asarray(out, dtype=np.int64)
