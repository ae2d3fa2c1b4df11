"""The "next word" figures the demo shows: raw model probabilities from ``runtime.next_token``,
checked against the decoder run one position at a time."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from gptedge.errors import UserError
from gptedge.runtime import contract
from gptedge.runtime.next_token import next_token_candidates, token_probabilities
from gptedge.runtime.decoder import Decoder


@pytest.fixture(scope="module")
def decoder(tiny_bundle) -> Decoder:
    return Decoder(tiny_bundle / "model.onnx", contract.read_bundle(tiny_bundle))


@pytest.fixture(scope="module")
def tokenizer(tiny_bundle) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_bundle / "tokenizer.json"))


def reference(decoder: Decoder, ids: list[int]) -> np.ndarray:
    """softmax of the last position's logits, computed alone: (V,)."""
    x = np.asarray([ids], dtype=np.int64)
    logits = decoder.empty_cache(1).run(x, np.ones_like(x), np.arange(len(ids))[None, :])
    z = logits[0, -1].astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def test_candidates_are_the_most_likely_tokens(decoder, tokenizer):
    ids = tokenizer.encode("The for statement is used to").ids
    probs = reference(decoder, ids)
    got = next_token_candidates(decoder, tokenizer, ids, k=10)
    assert [c.token_id for c in got] == list(np.argsort(-probs)[:10])
    assert [c.probability for c in got] == pytest.approx(np.sort(probs)[::-1][:10], abs=1e-6)
    assert got[0].text == tokenizer.decode([got[0].token_id], skip_special_tokens=False)
    with pytest.raises(UserError, match="empty"):
        next_token_candidates(decoder, tokenizer, [], k=10)


def test_token_probabilities_equal_one_position_at_a_time(decoder, tokenizer):
    ids = tokenizer.encode("Exceptions are raised when an error is detected, and handled").ids
    assert len(ids) < decoder.shape.context_length
    got = token_probabilities(decoder, ids, start=3)
    want = [reference(decoder, ids[:i])[ids[i]] for i in range(3, len(ids))]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_token_probabilities_beyond_the_context_use_windows(decoder, tokenizer):
    """Longer than the context: every token is scored, each with at least half a context of history
    (the window that scores it is found among all windows of that length or longer)."""
    C = decoder.shape.context_length
    ids = tokenizer.encode("The import statement finds a module, loads it and binds a name. " * 20).ids
    n = 2 * C + 7
    ids = ids[:n]
    got = token_probabilities(decoder, ids, start=C - 4)
    assert got.shape == (n - (C - 4),)
    for i in (C - 4, C, C + C // 2 + 1, n - 1):  # targets in the first, second and last window
        candidates = [reference(decoder, ids[lo:i])[ids[i]] for lo in range(max(0, i - C + 1), i - C // 2 + 1)]
        assert min(abs(got[i - (C - 4)] - c) for c in candidates) < 1e-5 * max(candidates)
