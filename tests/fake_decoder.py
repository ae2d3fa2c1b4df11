"""A numpy stand-in for ``runtime.decoder.Decoder``, so the generation loop is tested in
milliseconds, with no torch, no onnxruntime session and no trained model.

It keeps the decoder's contract to the letter and checks the caller keeps it too: both cache
layouts (``concat`` grows by the step's tokens; ``shared`` writes into preallocated slots and
refuses more than it holds), the attention mask's width equals the slots in use, and a row's real
tokens carry positions 0, 1, 2, ... in slot order. Its logits are a deterministic function of the
real tokens a position sees (``next_token``), so "a padded row computes what it computes alone" and
"after a slide the model computes exactly the window" are checkable by recomputing by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from gptedge.runtime import contract
from gptedge.runtime.model import Model

EOS, PAD = "<|endoftext|>", "<|pad|>"


def next_token_rule(vocab_size: int) -> Callable[[tuple[int, ...]], int]:
    """The default "model": the next token depends on every token seen and on how many there are."""
    return lambda seen: (sum((i + 1) * t for i, t in enumerate(seen)) * 7 + len(seen)) % vocab_size


@dataclass
class FakeCache:
    """Per row, the tokens and positions in each slot; ``width`` slots in use."""

    decoder: "FakeDecoder"
    tokens: np.ndarray  # (B, slots)
    positions: np.ndarray  # (B, slots)
    width: int = 0
    shared: bool = False

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        """As the real caches' ``run``: the step's logits, its tokens written into the cache."""
        d = self.decoder
        B, T = input_ids.shape
        P = self.width
        assert attention_mask.shape == (B, P + T), f"mask {attention_mask.shape} for past {P} + {T} new"
        room = self.tokens.shape[1] if self.shared else d.shape.context_length
        if P + T > room:
            raise ValueError(f"the cache holds {room} positions, not {P + T}")
        d.calls.append((B, T))
        if self.shared:  # into the preallocated slots, like onnxruntime into the bound buffers
            # GroupQueryAttention takes the slots in use from the row with the most 1s
            assert attention_mask.sum(axis=1).max() == P + T, "no row of the mask spans the slots in use"
            self.tokens[:, P : P + T], self.positions[:, P : P + T] = input_ids, position_ids
        else:  # longer by the step, like the presents
            self.tokens = np.concatenate([self.tokens, input_ids], axis=1)
            self.positions = np.concatenate([self.positions, position_ids], axis=1)
        self.width = P + T
        V = d.shape.vocab_size
        logits = np.zeros((B, T, V), np.float32)
        for b in range(B):
            real = np.flatnonzero(attention_mask[b])
            for t in range(T):
                seen = real[real <= P + t]
                if not len(seen):  # a padding slot: its output is never read
                    continue
                assert list(self.positions[b, seen]) == list(range(len(seen))), "positions must count the real tokens"
                choice = d.next_token(tuple(int(x) for x in self.tokens[b, seen]))
                logits[b, t] = -((np.arange(V) - choice) % V)  # highest at ``choice``, then its neighbours
        return logits

    def place(self, row: int, other: "FakeCache", length: int, end: int) -> None:
        """As the real caches' ``place`` (continuous batching)."""
        for mine, theirs in ((self.tokens, other.tokens), (self.positions, other.positions)):
            mine[row, : end - length] = 0
            mine[row, end - length : end] = theirs[0, :length]

    def move(self, offset: int, width: int) -> None:
        """As the real caches' ``move``: every row's slots [0, width) by ``offset``."""
        if self.shared:
            for a in (self.tokens, self.positions):
                if offset > 0:
                    a[:, offset : width + offset] = a[:, :width].copy()
                    a[:, :offset] = 0
                else:
                    a[:, : width + offset] = a[:, -offset:width].copy()
        elif offset > 0:
            pad = np.zeros((self.tokens.shape[0], offset), np.int64)
            self.tokens = np.concatenate([pad, self.tokens[:, :width]], axis=1)
            self.positions = np.concatenate([pad, self.positions[:, :width]], axis=1)
        else:
            self.tokens, self.positions = self.tokens[:, -offset:width], self.positions[:, -offset:width]
        self.width = width + offset

    def resize(self, batch: int) -> None:
        """As the real caches' ``resize``: keep the first ``batch`` rows, or add empty ones."""
        rows = self.tokens.shape[0]
        if batch < rows:
            self.tokens, self.positions = self.tokens[:batch], self.positions[:batch]
        elif batch > rows:
            extra = np.zeros((batch - rows, self.tokens.shape[1]), np.int64)
            self.tokens = np.concatenate([self.tokens, extra])
            self.positions = np.concatenate([self.positions, extra])

    def copy_row(self, src: int, dst: int, width: int) -> None:
        for a in (self.tokens, self.positions):
            a[dst, :width] = a[src, :width]

    def remask(self) -> None:
        pass


@dataclass
class FakeDecoder:
    shape: contract.ModelShape
    cache_layout: str = "concat"
    next_token: Callable[[tuple[int, ...]], int] | None = None
    run_seconds: float = 0.0
    device: str = "cpu"
    calls: list[tuple[int, int]] = field(default_factory=list)  # (batch, tokens) per run

    def __post_init__(self) -> None:
        self.next_token = self.next_token or next_token_rule(self.shape.vocab_size)

    def empty_cache(self, batch: int, capacity: int | None = None) -> FakeCache:
        if self.cache_layout == "shared":  # as the real one: room for ``capacity`` slots, at most C
            S = self.shape.context_length if capacity is None else capacity
            assert 1 <= S <= self.shape.context_length, f"capacity {S}"
            return FakeCache(self, np.zeros((batch, S), np.int64), np.zeros((batch, S), np.int64), shared=True)
        return FakeCache(self, np.zeros((batch, 0), np.int64), np.zeros((batch, 0), np.int64))


def byte_tokenizer() -> Tokenizer:
    """A byte-level tokenizer with no merges: 256 byte tokens, then end-of-text and padding."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet, key=lambda c: _byte_of(c)))}
    vocab[EOS], vocab[PAD] = 256, 257
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS, PAD])
    return tok


def _byte_of(char: str) -> int:
    """The byte a ByteLevel alphabet character stands for (GPT-2's printable remapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[chr(b)] = b
        else:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping[char]


def fake_model(cache_layout: str = "concat", context_length: int = 32,
               next_token: Callable[[tuple[int, ...]], int] | None = None) -> Model:
    """A ``runtime.Model`` over the fake decoder and the byte tokenizer (vocabulary 258)."""
    shape = contract.ModelShape(n_layer=1, n_head=1, n_embd=8, vocab_size=258, context_length=context_length)
    variant = contract.Variant("fake.onnx", "fp32", 0, "", cache_layout=cache_layout)
    manifest = contract.Manifest(shape, eos_token_id=256, pad_token_id=257, variants={"fake": variant})
    return Model(FakeDecoder(shape, cache_layout, next_token), byte_tokenizer(), manifest, "fake", "cpu")
