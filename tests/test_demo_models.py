"""The page's model pool without the page: variants kept loaded, the answer stream decoupled from a
slow reader, nothing left running after Stop, and the per-token probabilities."""

import threading
import time

import pytest

from gptedge.demo.models import ModelPool
from gptedge.runtime.generation import GenerationResult
from gptedge.runtime.settings import GenerationSettings

PROMPT = "The for statement is used to"
GREEDY = GenerationSettings(max_new_tokens=200, temperature=0.0)


@pytest.fixture(scope="module")
def pool(demo_bundle) -> ModelPool:
    return ModelPool(demo_bundle, threads=1)


def generator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gptedge-demo-generate"]


def test_variants_are_loaded_once_and_kept(pool):
    assert pool.variants[:2] == ["int8", "fp32"] and pool.default_variant == "int8"
    assert pool.get("fp32", "cpu") is pool.get("fp32", "cpu")
    assert pool.get("int8", "cpu").variant == "int8"


def test_a_slow_reader_gets_the_text_in_fewer_pieces_without_slowing_the_model(pool):
    model = pool.get("fp32", "cpu")
    want = model.generate(PROMPT, GREEDY)
    pieces = []
    for item in pool.stream(model, PROMPT, GREEDY):
        if isinstance(item, GenerationResult):
            result = item
            break
        pieces.append(item)
        time.sleep(0.05)  # a page that takes 50 ms per update
    assert "".join(pieces) == result.text == want.text and result.token_ids == want.token_ids
    # Pulled token by token, 200 tokens would have cost the model 10 s of waiting; it did not wait.
    assert len(pieces) < len(result.token_ids) / 4


def test_closing_the_stream_leaves_no_generation_running(pool):
    model = pool.get("fp32", "cpu")
    stream = pool.stream(model, PROMPT, GenerationSettings(max_new_tokens=512, temperature=0.0))
    assert isinstance(next(stream), str)
    stream.close()  # what the page's Stop button does
    deadline = time.monotonic() + 10
    while generator_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not generator_threads()


def test_each_answer_token_gets_its_probability(pool):
    # fp32: int8's dynamic activation scales depend on the input length, which would blur the
    # comparison of a prompt-only pass with a prompt-plus-answer pass below.
    model = pool.get("fp32", "cpu")
    result = [x for x in pool.stream(model, PROMPT, GREEDY.replace(max_new_tokens=20))][-1]
    tokens = pool.answer_probabilities(model, PROMPT, result)
    assert "".join(t.text for t in tokens) == result.text
    assert len(tokens) == len(result.token_ids) and all(0 < t.probability <= 1 for t in tokens)
    # Greedy picks the most likely token, so its probability is the top candidate's.
    first = pool.next_words(model, PROMPT)[0]
    assert first.token_id == result.token_ids[0] and first.probability == pytest.approx(tokens[0].probability, rel=1e-4)
