"""The generation loop on the numpy fake decoder (``fake_decoder``): batching, left padding,
chunked prefill, window slides, end-of-text, stop strings and streaming, on both cache layouts, in
milliseconds and without torch. The same loop runs the real graphs in test_runtime_generate.py."""

from __future__ import annotations

import pytest

from fake_decoder import fake_model, next_token_rule
from gptedge.runtime import generation

LAYOUTS = ["concat", "shared"]
EOS = 256


def reference(prompt: list[int], n: int, C: int, rule) -> tuple[list[int], int]:
    """What the loop must produce for one row, by hand: each token is the model's answer for the
    window it sees; when a token no longer fits, the window keeps its last C - C // 4 tokens."""
    context, out, slides = generation.window(list(prompt), C), [], 0
    while len(out) < n:
        out.append(rule(tuple(context)))
        context.append(out[-1])
        if len(context) > C and len(out) < n:  # slide only to feed another token
            context, slides = context[-(C - C // 4):], slides + 1
    return out, slides


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("prompt_len", [1, 7, 32, 50])
def test_greedy_is_what_the_model_computes_for_each_window(layout, prompt_len):
    model = fake_model(layout, context_length=32)
    prompt = [(7 * i) % 250 for i in range(prompt_len)]
    with pytest.warns(UserWarning, match="more than the context") if prompt_len > 32 else _nothing():
        r = model.generate(prompt, max_new_tokens=90, temperature=0, ignore_eos=True)
    expected, slides = reference(prompt, 90, 32, model.decoder.next_token)
    assert r.token_ids == expected
    assert r.slides == slides > 0 and r.stop_reason == "length"
    assert r.prompt_tokens == min(prompt_len, 32 if prompt_len <= 32 else 32 - 32 // 4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_batch_equals_each_row_alone(layout):
    """Left padding, positions and the mask: a padded row computes what it computes alone, also
    across slides, and rows of different lengths slide at different steps."""
    model = fake_model(layout, context_length=24)
    prompts = ["a", "a longer prompt", "mid size"]
    batch = model.generate(prompts, max_new_tokens=40, temperature=0, ignore_eos=True)
    for prompt, result in zip(prompts, batch):
        alone = model.generate(prompt, max_new_tokens=40, temperature=0, ignore_eos=True)
        assert result.token_ids == alone.token_ids and result.text == alone.text
    assert max(r.slides for r in batch) >= 2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prefill_in_chunks_computes_the_same(layout, monkeypatch):
    model = fake_model(layout, context_length=32)
    whole = model.generate(["twenty-some characters", "short"], max_new_tokens=5, temperature=0, ignore_eos=True)
    monkeypatch.setattr(generation, "PREFILL_LOGITS", 2 * 3 * 258)  # three tokens of a batch of two
    model.decoder.calls.clear()
    chunked = model.generate(["twenty-some characters", "short"], max_new_tokens=5, temperature=0, ignore_eos=True)
    assert [r.token_ids for r in chunked] == [r.token_ids for r in whole]
    assert model.decoder.calls[:3] == [(2, 3), (2, 3), (2, 3)]


def stops_after(n: int, first: int):
    """A model that says "x" and then, in rows whose first token is ``first``, end-of-text once it
    has seen ``n`` tokens."""
    return lambda seen: EOS if seen[0] == first and len(seen) >= n else ord("x")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_end_of_text_ends_its_row_and_the_others_go_on(layout):
    model = fake_model(layout, context_length=16, next_token=stops_after(4, ord("a")))
    a, b = model.generate(["a", "bb"], max_new_tokens=30, temperature=0)
    assert (a.token_ids, a.text, a.stop_reason) == ([120, 120, 120, EOS], "xxx", "eos")
    assert (b.text, b.stop_reason, len(b.token_ids)) == ("x" * 30, "length", 30)
    assert b.slides >= 2  # the batch went on, and slid, without the finished row


def test_ignore_eos_generates_exactly_max_new_tokens():
    model = fake_model(next_token=stops_after(2, ord("a")))
    r = model.generate("a", max_new_tokens=6, temperature=0, ignore_eos=True)
    assert len(r.token_ids) == 6 and r.stop_reason == "length" and EOS in r.token_ids


def cycle(text: str):
    """A model that writes ``text`` over and over (its bytes, one token each)."""
    data = text.encode()
    return lambda seen: data[len(seen) % len(data)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stop_strings_end_and_are_trimmed(layout):
    model = fake_model(layout, next_token=cycle("abc\ndef\n"))
    r = model.generate("", max_new_tokens=50, temperature=0, stop=["\n"])
    assert r.stop_reason == "stop" and "\n" not in r.text and len(r.text) < 8
    r = model.generate("", max_new_tokens=50, temperature=0, stop=["zzz"])
    assert r.stop_reason == "length" and r.text.count("\n") > 5


def test_streaming_is_the_text_piece_by_piece_even_through_split_characters():
    """Multi-byte characters arrive one byte per token: the stream shows only whole characters."""
    model = fake_model("shared", next_token=cycle("héllo 🙂 "))
    stream = model.stream("", max_new_tokens=30, temperature=0, ignore_eos=True)  # no slide: the cycle stays whole
    pieces = list(stream)
    assert "".join(pieces) == stream.result.text and "🙂" in stream.result.text
    assert all("\ufffd" not in p for p in pieces)


def test_nothing_to_generate():
    model = fake_model()
    r = model.generate("abc", max_new_tokens=0)
    assert (r.text, r.token_ids, r.stop_reason) == ("", [], "length") and model.decoder.calls == []


def test_sampling_is_repeatable_with_a_seed():
    model = fake_model()
    first = model.generate("seed", max_new_tokens=20, temperature=1.5, top_k=0, top_p=1.0, seed=3).token_ids
    assert model.generate("seed", max_new_tokens=20, temperature=1.5, top_k=0, top_p=1.0, seed=3).token_ids == first
    assert model.generate("seed", max_new_tokens=20, temperature=1.5, top_k=0, top_p=1.0, seed=4).token_ids != first
    greedy = model.generate("seed", max_new_tokens=20, temperature=0).token_ids
    assert greedy == reference(model.encode("seed"), 20, 32, next_token_rule(258))[0]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_shared_cache_has_room_for_the_request_not_the_context():
    """Memory follows the request: the buffers hold prompt + new tokens (the fake refuses a run
    past them), up to the context, and a slide makes a cache for what is left to generate."""
    model = fake_model("shared", context_length=64)
    made = []
    empty_cache = model.decoder.empty_cache
    model.decoder.empty_cache = lambda batch, capacity=None: made.append(capacity) or empty_cache(batch, capacity)
    model.generate([[1, 2, 3], [4, 5, 6, 7, 8]], max_new_tokens=10, temperature=0, ignore_eos=True)
    assert made == [5 + 10]
    made.clear()
    r = model.generate([1] * 40, max_new_tokens=30, temperature=0, ignore_eos=True)
    # 40 + 30 > 64; feeding the 25th token would need slot 64: 48 tokens kept, 5 left to generate
    assert r.slides == 1 and made == [64, 48 + 5]
