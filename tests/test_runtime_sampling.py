"""Sampling on hand-made logits: each filter keeps exactly the tokens it should, draws follow the
distribution, and a seed repeats. Pure numpy, milliseconds."""

import numpy as np
import pytest

from gptedge.errors import UserError
from gptedge.runtime.settings import GenerationSettings
from gptedge.runtime.sampling import Sampler, apply_repetition_penalty, nucleus, sample_row


def draws(logits, n=2000, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return np.array([sample_row(np.asarray(logits, dtype=np.float32), rng=rng, **kw) for _ in range(n)])


def test_greedy_is_argmax_per_row():
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 4.9, 0.0]], dtype=np.float32)
    assert Sampler(temperature=0.0)(logits).tolist() == [1, 0]


def test_top_k_keeps_only_the_k_most_likely():
    logits = np.log(np.array([0.05, 0.4, 0.1, 0.3, 0.15]))
    picked = set(draws(logits, temperature=1.0, top_k=2, top_p=1.0).tolist())
    assert picked == {1, 3}
    assert set(draws(logits, n=50, temperature=1.0, top_k=1, top_p=1.0).tolist()) == {1}


@pytest.mark.parametrize("top_p, nucleus", [(0.5, {0}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, nucleus):
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert set(draws(logits, n=4000, temperature=1.0, top_k=0, top_p=top_p).tolist()) == nucleus


def test_top_p_on_a_flat_large_vocabulary_matches_a_full_sort():
    """Exercises the widening search (64, 128, ... candidates) against the plain definition."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 0.5, 50_000)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    for top_p in (0.01, 0.3, 0.95):
        expected = order[: np.searchsorted(np.cumsum(probs[order]), top_p) + 1]
        assert sorted(nucleus(logits, top_p).tolist()) == sorted(expected.tolist())


def test_draws_follow_the_softmax_at_a_temperature():
    logits = np.array([1.0, 0.0, -1.0])
    for temperature in (0.5, 2.0):
        p = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        freq = np.bincount(draws(logits, n=20000, temperature=temperature, top_k=0, top_p=1.0), minlength=3) / 20000
        assert np.abs(freq - p).max() < 0.015


def test_repetition_penalty_follows_the_ctrl_rule():
    logits = np.array([[2.0, -2.0, 1.0, -1.0]])
    seen = np.array([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]
    # A strong penalty turns greedy away from the token already used.
    assert Sampler(temperature=0.0, repetition_penalty=3.0)(logits, seen).tolist() == [2]


def test_same_seed_same_tokens_other_seed_other_tokens():
    logits = np.random.default_rng(0).normal(size=(3, 500)).astype(np.float32)
    first, again = (Sampler(1.0, 40, 0.9, 1.0, seed=7) for _ in range(2))
    assert [first(logits).tolist() for _ in range(5)] == [again(logits).tolist() for _ in range(5)]
    runs = {tuple(Sampler(1.0, 0, 1.0, 1.0, seed=s)(logits).tolist()) for s in range(5)}
    assert len(runs) > 1


def test_settings_reject_bad_values_with_one_line():
    with pytest.raises(UserError, match="top_p"):
        GenerationSettings(top_p=0)
    with pytest.raises(UserError, match="temperature"):
        GenerationSettings(temperature=-1)
    with pytest.raises(UserError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=1.5)
    with pytest.raises(UserError, match="unknown generation setting"):
        GenerationSettings().replace(temprature=0)
    assert GenerationSettings(stop="\n").stop == ("\n",)
