"""Byte-level BPE: any text survives encode -> decode, and the special tokens are single ids."""

import pytest
from tokenizers import Tokenizer

from gptedge.errors import UserError
from gptedge.train.tokenizer import EOS_TOKEN, PAD_TOKEN, encode_documents, special_ids, train_tokenizer

AWKWARD = [
    "",
    "plain English text.",
    "naïve café, Straße, Ærøskøbing, Ελληνικά, русский, 日本語のテキスト, العربية",
    "emoji 🙂🚀👩‍👩‍👧‍👦 and flags 🇫🇷 and a lone combining mark e\u0301",
    "typos: teh qiuck borwn fxo jmups ovr teh lazzy dgo!!1!",
    "whitespace   runs\t\ttabs\n\n\nnewlines \r\n and trailing spaces   ",
    "  leading spaces and\u00a0non-breaking\u2009thin spaces",
    "code: def f(x):\n    return x ** 2  # comment",
    "control \x01\x1f\x7f and NUL \x00 bytes",
    f"special tokens in text: {EOS_TOKEN} and {PAD_TOKEN} and <|unknown|>",
]


@pytest.fixture(scope="module")
def tok(tokenizer_file) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_file))


@pytest.mark.parametrize("text", AWKWARD)
def test_round_trip(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_special_tokens_are_single_ids(tok):
    eos, pad = special_ids(tok)
    assert eos != pad
    assert tok.encode(EOS_TOKEN).ids == [eos] and tok.encode(PAD_TOKEN).ids == [pad]
    assert tok.decode([eos, pad], skip_special_tokens=True) == ""


def test_documents_are_separated_by_eos(tok):
    eos, _ = special_ids(tok)
    stream = encode_documents(tok, ["first doc", "second"])
    assert stream[-1] == eos and list(stream).count(eos) == 2
    assert tok.decode(stream.tolist(), skip_special_tokens=False) == f"first doc{EOS_TOKEN}second{EOS_TOKEN}"


def test_common_words_become_single_tokens(tok):
    assert len(tok.encode(" the").ids) == 1 and len(tok.encode(" function").ids) <= 2


def test_vocab_too_large_for_the_corpus():
    with pytest.raises(UserError, match="only supports a vocabulary"):
        train_tokenizer(["a tiny corpus with few words"], 4096)
