"""The generation loop: prefill, then one token per step through the KV cache, for a batch of rows.

Shapes: B rows, V vocabulary, C the model's context length (its learned position table).

Batches are left-padded: every row's last token sits in the last column, so one (B, V) slice of the
logits serves all rows. ``attention_mask`` marks the padding with 0, ``position_ids`` count each
row's real tokens from 0, so a padded row computes what it would compute alone. Each row stops on
its own (end-of-text token, a stop string, max_new_tokens); a finished row rides along in the batch,
its output ignored, until the next re-prefill drops it.

Context overflow. The model has learned absolute positions 0..C-1, so a cached key is tied to the
position it was computed at: dropping the oldest token cannot be done by shifting the cache, every
remaining token would need new positions and so new keys and values. The loop therefore keeps a
window and recomputes it: when a row's next token would need position C, the row keeps its last
W = C - C // 4 tokens and the batch is re-prefilled from positions 0. The next C // 4 tokens then
decode through the cache again. A re-prefill is one forward over W tokens, costing tens of decode
steps, so sliding by C // 4 spreads it over C // 4 tokens, where sliding by one token (a re-prefill
per token) would make every token that much slower; a larger chunk would forget more history at
once (the README has the measured cost).
Everything generated after a slide is exactly what the model computes for the window (tests
compare it with a fresh forward over the same window). A prompt longer than the context keeps
its last W tokens, with a warning.

Prefill runs in chunks of at most ``PREFILL_LOGITS`` logits (B x chunk x V floats), so a long
prompt with a 50 K vocabulary does not materialise hundreds of MB of logits nobody reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from gptedge.runtime.padding import left_pad
from gptedge.runtime.sampling import Sampler
from gptedge.runtime.settings import GenerationSettings
from gptedge.runtime.decoder import Cache, Decoder
from gptedge.runtime.text import ShownText, TextAtEnd

PREFILL_LOGITS = 8 * 1024 * 1024  # floats of logits per prefill chunk (32 MB)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # every generated token, the end-of-text token included when it ended the row
    stop_reason: str  # "eos", "stop" or "length"
    prompt_tokens: int  # after cutting an over-long prompt to the window
    ttft_s: float  # from the call to the first generated token (tokenizing and prefill included)
    tokens_per_s: float  # decode speed after the first token (0.0 with fewer than two tokens)
    decode_s: float  # from the first generated token to the last
    onnx_decode_s: float  # of decode_s, the time inside onnxruntime (shared by a batch's rows)
    slides: int = 0  # re-prefills of the window after reaching the context length

    @property
    def overhead_s_per_token(self) -> float:
        """Python time per decoded token: the loop minus onnxruntime (sampling, bookkeeping)."""
        n = len(self.token_ids) - 1
        return (self.decode_s - self.onnx_decode_s) / n if n > 0 else 0.0


@dataclass
class Row:
    """One prompt's state while it generates."""

    tokens: list[int]  # the window the model sees: prompt + generated, cut on each slide
    prompt_tokens: int
    # Its text: ``ShownText`` when pieces are shown or stop strings set, else ``TextAtEnd`` (the
    # same text, decoded once: no Python per token that nobody reads).
    output: ShownText | TextAtEnd
    generated: list[int] = field(default_factory=list)
    stop_reason: str | None = None
    first_at: float = 0.0
    last_at: float = 0.0
    onnx_at_first: float = 0.0
    onnx_at_last: float = 0.0
    slides: int = 0  # times the window was cut to fit the context

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def push(self, token: int, settings: GenerationSettings, eos_id: int) -> str:
        """Take one generated token; return the text that became showable (maybe empty)."""
        self.generated.append(token)
        self.tokens.append(token)
        if token == eos_id and not settings.ignore_eos:
            return self._finish("eos")
        shown, stopped = self.output.feed(token)
        if stopped:
            self.stop_reason = "stop"
        elif len(self.generated) >= settings.max_new_tokens:
            shown += self._finish("length")
        return shown

    def _finish(self, reason: str) -> str:
        shown, stopped = self.output.finish()
        self.stop_reason = "stop" if stopped else reason
        return shown

    def result(self, started: float) -> GenerationResult:
        n = len(self.generated)
        decode_s = self.last_at - self.first_at
        return GenerationResult(
            text=self.output.text,
            token_ids=list(self.generated),
            stop_reason=self.stop_reason or "length",
            prompt_tokens=self.prompt_tokens,
            ttft_s=self.first_at - started if n else 0.0,
            tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0,
            decode_s=decode_s,
            onnx_decode_s=self.onnx_at_last - self.onnx_at_first,
            slides=self.slides,
        )


class Batch:
    """The rows currently in the KV cache, with their cache, mask and positions.

    Cache slot j of row b holds the token at position j - pad[b] (its left padding). Every row
    feeds one token per step (a finished row too, its output ignored), so a row's attention mask
    is 0 over its padding and 1 everywhere after, and its positions are known for every slot up
    to C: both are built once here and sliced per step, with no numpy arithmetic in the loop.
    """

    def __init__(self, decoder: Decoder, rows: list[Row], pad_id: int, new_tokens: int) -> None:
        """Prefill: left-pad the rows' tokens into one (B, width) batch and run it through the
        model, into a cache with room for ``new_tokens`` more (the most any row will generate)."""
        self.decoder = decoder
        self.rows = rows
        C = decoder.shape.context_length
        # (B, width) ids; (B, C) mask and positions, for every slot the cache can hold
        ids, self.mask, self.positions = left_pad([r.tokens for r in rows], pad_id, C)
        B, width = ids.shape
        self.cache: Cache = decoder.empty_cache(B, min(C, width + new_tokens))
        chunk = max(1, PREFILL_LOGITS // (B * decoder.shape.vocab_size))
        for start in range(0, width, chunk):
            end = min(width, start + chunk)
            logits = self.cache.run(ids[:, start:end], self.mask[:, :end], self.positions[:, start:end])
        self.logits = logits[:, -1, :]  # (B, V): every row's last token is in the last column
        self.width = width  # cache length, padding included

    @property
    def full(self) -> bool:
        """The next token would need cache slot C: time to re-prefill."""
        return self.width >= self.decoder.shape.context_length

    def step(self, tokens: np.ndarray) -> None:
        """Feed one token per row, (B,), into slot ``width``."""
        w = self.width
        logits = self.cache.run(tokens[:, None], self.mask[:, : w + 1], self.positions[:, w : w + 1])
        self.width = w + 1
        self.logits = logits[:, -1, :]


def seen_tokens(rows: list[Row], vocab_size: int) -> np.ndarray:
    """(B, V) bool: which tokens each row's window holds, for the repetition penalty."""
    seen = np.zeros((len(rows), vocab_size), dtype=bool)
    for b, row in enumerate(rows):
        seen[b, row.tokens] = True
    return seen


def window(tokens: list[int], context_length: int) -> list[int]:
    """The tokens a row keeps when they no longer fit in the context: the last W = C - C // 4."""
    if len(tokens) <= context_length:
        return tokens
    return tokens[-(context_length - context_length // 4) :]


def run(
    decoder: Decoder, rows: list[Row], settings: GenerationSettings, eos_id: int, pad_id: int
) -> Iterator[tuple[int, str]]:
    """Generate for all rows; yield (row index, text piece) as text becomes showable.

    When it returns, every row is done (``Row.result`` gives its figures). ``Row.tokens`` must
    already fit the context (see ``window``)."""
    C, V = decoder.shape.context_length, decoder.shape.vocab_size
    sampler = Sampler(
        settings.temperature, settings.top_k, settings.top_p, settings.repetition_penalty, settings.seed
    )
    index = {id(row): i for i, row in enumerate(rows)}
    batch = Batch(decoder, rows, pad_id, settings.max_new_tokens)
    seen = seen_tokens(batch.rows, V) if sampler.needs_history else None
    remaining = len(rows)
    while True:
        tokens = sampler(batch.logits, seen)  # (B,)
        now, onnx_now = time.perf_counter(), decoder.run_seconds
        for b, token in enumerate(tokens.tolist()):
            row = batch.rows[b]
            if row.done:
                continue
            if not row.generated:
                row.first_at, row.onnx_at_first = now, onnx_now
            row.last_at, row.onnx_at_last = now, onnx_now
            piece = row.push(token, settings, eos_id)
            if seen is not None:
                seen[b, token] = True
            if row.done:
                remaining -= 1
            if piece:
                yield index[id(row)], piece
        if not remaining:
            break
        if batch.full:
            live = [r for r in batch.rows if not r.done]
            for row in live:
                if len(row.tokens) > C:
                    row.tokens = window(row.tokens, C)
                    row.slides += 1
            batch = Batch(decoder, live, pad_id, settings.max_new_tokens - min(len(r.generated) for r in live))
            seen = seen_tokens(batch.rows, V) if seen is not None else None
        else:
            batch.step(tokens)

