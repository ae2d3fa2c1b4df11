"""From token ids to text, one token at a time: UTF-8-safe pieces, stop strings, and a row's output.

Byte-level BPE tokens are byte strings, and one character (é, 中, an emoji) may be split across two
or more tokens. Decoding token by token would show half characters as U+FFFD. Here every token id
maps to its bytes once (``token_bytes``), and the bytes go through Python's incremental UTF-8
decoder, which returns only complete characters and holds an unfinished tail until the next token
completes it. That is exact (the same text ``Tokenizer.decode`` gives for the whole sequence) and
costs a dictionary lookup per token instead of re-decoding a growing suffix.
"""

from __future__ import annotations

import codecs
import json
from functools import lru_cache
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from gptedge.errors import UserError


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-printable-character table, which byte-level BPE vocabularies
    are written in (bytes that are not printable are shifted to code points 256 and up)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    shift = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shift)
            shift += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(tokenizer: Tokenizer, vocab_size: int) -> list[bytes]:
    """The bytes each id stands for, for ids 0..vocab_size-1; special tokens (and ids the tokenizer
    does not have, e.g. a model vocabulary padded past it) stand for nothing, as in ``decode``."""
    spec = json.loads(tokenizer.to_str())
    decoder = spec.get("decoder") or {}
    if decoder.get("type") != "ByteLevel" or (spec.get("model") or {}).get("type") != "BPE":
        raise UserError("the bundle's tokenizer.json is not a byte-level BPE tokenizer: re-export the bundle with gptedge")
    to_byte = _unicode_to_byte()
    table = [b""] * vocab_size
    for token, i in tokenizer.get_vocab(with_added_tokens=False).items():
        if i < vocab_size:
            table[i] = bytes(to_byte[c] for c in token)
    for i, added in tokenizer.get_added_tokens_decoder().items():
        if i < vocab_size:
            table[i] = b"" if added.special else added.content.encode("utf-8")
    return table


def check_token_ids(ids: Any, vocab_size: int, what: str = "token ids") -> list[int]:
    """``ids`` as a list of ints, or a UserError: a user's ids reach onnxruntime's Gather, where an
    id outside 0..vocab_size-1 is a crash or garbage, and ``tokenizers``, which drops it silently."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple, np.ndarray)):
        raise UserError(f"{what} are of type {type(ids).__name__}: pass a list of whole numbers")
    if isinstance(ids, np.ndarray) and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)):
        raise UserError(f"{what} are a {ids.ndim}-D {ids.dtype} array: pass a 1-D array of integers")
    bad = next((t for t in ids if not isinstance(t, (int, np.integer)) or isinstance(t, bool)), None)
    if bad is not None:
        raise UserError(f"{what} hold {type(bad).__name__} ({bad!r:.40}): pass whole numbers")
    out = [int(t) for t in ids]
    bad = next((t for t in out if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise UserError(f"{what} must be in 0..{vocab_size - 1} for this model, not {bad}: check the ids")
    return out


class StreamDecoder:
    """Token ids in, complete text out: ``push`` returns what can be shown now, ``flush`` the rest."""

    def __init__(self, table: list[bytes]) -> None:
        self.table = table
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.table[token_id])

    def flush(self) -> str:
        """Whatever tail is left when generation ends (invalid bytes become U+FFFD, as in decode)."""
        return self._utf8.decode(b"", final=True)

    def decode(self, token_ids: list[int]) -> str:
        """All of a sequence at once: what ``push`` for each token and then ``flush`` return in all."""
        return b"".join(self.table[t] for t in token_ids).decode("utf-8", errors="replace")


class StopStrings:
    """Finds the first stop string in text that arrives in pieces, and says how much is safe to show.

    ``feed`` returns (text that may be shown now, whether a stop string was found). Text that could
    be the start of a stop string is held back until the next piece decides; the stop string itself
    and everything after it are never returned.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""  # all text kept so far (the final output once stopped)
        self._shown = 0  # how much of it has been returned

    def feed(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            self.text += piece
            self._shown = len(self.text)
            return piece, False
        start = max(0, len(self.text) - self.longest + 1)  # a match may begin in the held-back tail
        self.text += piece
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if found:
            self.text = self.text[: min(found)]
            return self._release(len(self.text)), True
        return self._release(len(self.text) - self._held_back()), False

    def finish(self) -> str:
        """Generation ended without a stop string: release the held-back tail."""
        return self._release(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest end of the text that is a proper prefix of some stop string."""
        for n in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def _release(self, upto: int) -> str:
        upto = max(upto, self._shown)
        out = self.text[self._shown : upto]
        self._shown = upto
        return out


class ShownText:
    """A row's output shown as it is generated: ``feed`` and ``finish`` return (text that may be
    shown now, whether a stop string ended the text); ``text`` is all of it."""

    def __init__(self, table: list[bytes], stops: tuple[str, ...]) -> None:
        self._utf8 = StreamDecoder(table)
        self._stops = StopStrings(stops)

    def feed(self, token_id: int) -> tuple[str, bool]:
        return self._stops.feed(self._utf8.push(token_id))

    def finish(self) -> tuple[str, bool]:
        """Generation ended: the held-back tail, unless it completes a stop string."""
        shown, stopped = self._stops.feed(self._utf8.flush())
        return (shown, True) if stopped else (shown + self._stops.finish(), False)

    @property
    def text(self) -> str:
        return self._stops.text


class TextAtEnd:
    """The same output decoded once at the end, for a call that shows no pieces and has no stop
    strings: one list append per token instead of a decoder and a stop-string check."""

    def __init__(self, table: list[bytes]) -> None:
        self._utf8 = StreamDecoder(table)
        self._tokens: list[int] = []

    def feed(self, token_id: int) -> tuple[str, bool]:
        self._tokens.append(token_id)
        return "", False

    def finish(self) -> tuple[str, bool]:
        return "", False

    @property
    def text(self) -> str:
        return self._utf8.decode(self._tokens)
