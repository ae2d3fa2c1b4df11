"""Incremental detokenization and stop strings, on the shared byte-level BPE tokenizer."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from gptedge.runtime.text import StopStrings, StreamDecoder, token_bytes


@pytest.fixture(scope="module")
def tokenizer(tokenizer_file):
    return Tokenizer.from_file(str(tokenizer_file))


@pytest.fixture(scope="module")
def table(tokenizer):
    return token_bytes(tokenizer, tokenizer.get_vocab_size())


def stream(table, ids):
    dec = StreamDecoder(table)
    pieces = [dec.push(i) for i in ids]
    return pieces, dec.flush()


def test_a_character_split_across_tokens_is_shown_only_when_complete(tokenizer, table):
    text = "café 中文 🙂!"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    # The English-trained vocabulary splits these characters into byte tokens: alone they are
    # not text (decoding one gives U+FFFD), which is what a naive streamer would print.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    pieces, tail = stream(table, ids)
    assert "".join(pieces) + tail == text == tokenizer.decode(ids)
    assert tail == "" and not any("\ufffd" in p for p in pieces)
    partial = [i for i in ids if "\ufffd" in tokenizer.decode([i])]
    assert len(partial) >= 4  # 中, 文 and 🙂 arrive over several tokens each


def test_emoji_from_its_four_byte_tokens(tokenizer, table):
    """Ids built by hand from the bytes: the first three pushes show nothing, the fourth the emoji."""
    byte_ids = [tokenizer.token_to_id(_byte_char(b)) for b in "🙂".encode()]
    pieces, tail = stream(table, byte_ids)
    assert pieces == ["", "", "", "🙂"] and tail == ""


def _byte_char(b: int) -> str:
    from gptedge.runtime.text import _unicode_to_byte

    return {v: k for k, v in _unicode_to_byte().items()}[b]


def test_stream_equals_decode_for_random_ids(tokenizer, table):
    rng = np.random.default_rng(0)
    V = tokenizer.get_vocab_size()
    for _ in range(200):
        ids = rng.integers(0, V, rng.integers(1, 30)).tolist()
        pieces, tail = stream(table, ids)
        assert "".join(pieces) + tail == tokenizer.decode(ids) == StreamDecoder(table).decode(ids)


def test_special_tokens_and_ids_beyond_the_tokenizer_decode_to_nothing(tokenizer):
    table = token_bytes(tokenizer, tokenizer.get_vocab_size() + 10)
    eos = tokenizer.token_to_id("<|endoftext|>")
    assert table[eos] == b"" and table[-1] == b""


def feed_all(stops, pieces):
    s = StopStrings(tuple(stops))
    shown, stopped = [], False
    for p in pieces:
        out, stopped = s.feed(p)
        shown.append(out)
        if stopped:
            break
    if not stopped:
        shown.append(s.finish())
    return "".join(shown), stopped, s.text


def test_stop_string_split_across_pieces_is_trimmed_and_never_shown():
    shown, stopped, text = feed_all(["\n\nQ:"], ["Answer", " one", "\n", "\nQ", ": next"])
    assert stopped and shown == text == "Answer one"


def test_partial_stop_prefix_is_held_then_released():
    s = StopStrings(("END",))
    assert s.feed("abc E") == ("abc ", False)  # "E" might start "END"
    assert s.feed("N") == ("", False)
    assert s.feed("D") == ("", True)
    assert s.text == "abc "
    shown, stopped, text = feed_all(["END"], ["abc E", "Nd", "!"])
    assert not stopped and shown == text == "abc ENd!"


def test_earliest_of_several_stop_strings_wins():
    shown, stopped, _ = feed_all(["world", "lo w"], ["hello world"])
    assert stopped and shown == "hel"
