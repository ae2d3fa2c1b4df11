"""Continuous batching (``runtime.Engine``) on the numpy fake decoder, in milliseconds: requests
that join and leave at any step, slides at the end of the context, cancellation and the queue,
in both cache layouts. The fake checks every step keeps the decoder's contract (positions count
each row's real tokens; in the shared layout some row spans every slot in use), and its logits
depend only on a row's own tokens, so "a request gets what it gets alone" is exact here."""

from __future__ import annotations

import re
import threading

import pytest

from fake_decoder import fake_model
from gptedge.errors import UserError
from gptedge.runtime import Busy, Engine

PROMPTS = ["a", "hello there", "x" * 20, "The for statement", "bb", "a much longer prompt of words", "q", "zz top"]


@pytest.fixture(params=["concat", "shared"])
def model(request):
    return fake_model(request.param, context_length=32)


def requests():
    """Mixed greedy and seeded sampled requests of many lengths, most longer than the context."""
    for i, prompt in enumerate(PROMPTS * 2):
        yield prompt, dict(max_new_tokens=3 + 11 * i % 70, temperature=[0.0, 0.9][i % 2], seed=i, top_k=20,
                           ignore_eos=True)


@pytest.mark.parametrize("slots", [1, 3, 8])
def test_concurrent_requests_get_what_they_get_alone(model, slots):
    engine = Engine(model, slots=slots, queue_size=100)
    try:
        todo = list(requests())
        results = [None] * len(todo)

        def client(i):
            results[i] = engine.submit(todo[i][0], **todo[i][1]).result()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(todo))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for (prompt, settings), (result, reason) in zip(todo, results):
            alone = model.generate(prompt, **settings)
            assert result.token_ids == alone.token_ids and result.text == alone.text
            assert result.slides == alone.slides and reason == "length"
        assert any(r.slides for r, _ in results)  # windows slid at the end of the context
    finally:
        engine.close()


def test_stop_strings_eos_and_events(model):
    engine = Engine(model, slots=2)
    try:
        alone = model.generate("hello", max_new_tokens=12, temperature=0)
        stop = alone.text[3:5]
        job = engine.submit("hello", max_new_tokens=12, temperature=0, stop=[stop], logprobs=3)
        events = list(job)
        result, reason = events[-1].result, events[-1].finish_reason
        assert reason == "stop" and result.text == model.generate("hello", max_new_tokens=12, temperature=0,
                                                                  stop=[stop]).text
        assert "".join(e.text for e in events) == result.text
        tokens = [e for e in events if e.token is not None]
        assert all(len(e.top) == 3 and e.top[0][1] >= e.top[1][1] and e.logprob <= 0 for e in tokens)
        assert engine.submit("hi", max_new_tokens=0).result()[0].token_ids == []
    finally:
        engine.close()


@pytest.mark.parametrize("kw, words", [(dict(slots=0), "slots=0 is invalid: use a whole number >= 1"),
                                       (dict(slots="a"), "slots='a' is invalid"),
                                       (dict(queue_size=-1), "queue_size=-1 is invalid: use a whole number >= 0")])
def test_bad_sizes_are_refused(model, kw, words):
    with pytest.raises(UserError, match=re.escape(words)):
        Engine(model, **kw)


def test_cancel_frees_the_slot_and_a_full_queue_is_refused(model):
    engine = Engine(model, slots=1, queue_size=1)
    try:
        long = engine.submit("a", max_new_tokens=10_000, temperature=0, ignore_eos=True)
        waiting = engine.submit("b", max_new_tokens=5, temperature=0)
        with pytest.raises(Busy, match="^the one slot and the queue of 1 are full: try again shortly$"):
            engine.submit("c", max_new_tokens=5)
        long.cancel()
        assert long.result()[1] == "cancelled"
        assert waiting.result()[0].token_ids == model.generate("b", max_new_tokens=5, temperature=0).token_ids
        assert engine.busy == 0 and engine.queued == 0
    finally:
        engine.close()


def test_close_ends_every_request(model):
    engine = Engine(model, slots=1, queue_size=4)
    jobs = [engine.submit(p, max_new_tokens=100_000, ignore_eos=True) for p in ("a", "b")]
    engine.close()
    assert [job.result()[1] for job in jobs] == ["cancelled", "cancelled"]
    with pytest.raises(Busy, match="shutting down"):
        engine.submit("c")
