"""``POST /v1/chat/completions`` for a bundle that declares a chat template, driven by the official
``openai`` client: the answer is what the runtime generates for the template's prompt, streamed
the same, with logprobs and stop strings; requests the model cannot honour get error objects. (A
base bundle's 400 is in test_serve.py.)"""

from __future__ import annotations

import signal

import pytest

import gptedge.runtime
from blockers import HEAVY, blocking
from fixtures_export import CHAT_TEMPLATE, chat_copy
from test_serve import SERVE, serve

openai = pytest.importorskip("openai", reason="the openai client is in the dev extra")

MESSAGES = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "The for statement"}]


@pytest.fixture(scope="module")
def chat_bundle(tmp_path_factory, optimized_bundle):
    return chat_copy(optimized_bundle, tmp_path_factory.mktemp("chat"), CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def client(tmp_path_factory, chat_bundle):
    served = serve(chat_bundle, tmp_path_factory.mktemp("serve-chat"), "--slots", "2")
    yield served.client()
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(timeout=30)
    assert "Traceback" not in served.log.read_text()


@pytest.fixture(scope="module")
def model(chat_bundle):
    return gptedge.runtime.load(chat_bundle, variant="fp32", threads=1)


def test_answer_is_the_runtimes_for_the_templates_prompt(client, model):
    prompt = model.chat_prompt(MESSAGES)
    assert prompt == "<|system|>You write Python.<|endoftext|>\n<|user|>The for statement<|endoftext|>\n<|assistant|>"
    expected = model.generate(prompt, max_new_tokens=24, temperature=0)
    assert model.chat(MESSAGES, max_new_tokens=24, temperature=0).token_ids == expected.token_ids
    r = client.chat.completions.create(model="fp32", messages=MESSAGES, max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == expected.text
    assert r.choices[0].finish_reason == {"eos": "stop", "length": "length"}[expected.stop_reason]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (expected.prompt_tokens, len(expected.token_ids))

    stream = client.chat.completions.create(model="fp32", messages=MESSAGES, max_completion_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [r.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(expected.token_ids)


def test_logprobs_and_stop(client, model):
    r = client.chat.completions.create(model="fp32", messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=3, extra_body={"ignore_eos": True})  # gptedge's: exactly 8 tokens
    expected = model.generate(model.chat_prompt(MESSAGES), max_new_tokens=8, temperature=0, ignore_eos=True)
    entries = r.choices[0].logprobs.content
    assert len(entries) == 8
    for entry, token in zip(entries, expected.token_ids):
        assert bytes(entry.bytes) == model.token_bytes[token]
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    text = expected.text
    stop = text[3:6] if len(text.strip()) > 6 else None
    if stop:
        s = client.chat.completions.create(model="fp32", messages=MESSAGES, max_tokens=8, temperature=0, stop=[stop])
        assert s.choices[0].message.content == text[: text.index(stop)] and s.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("call,status,words", [
    (dict(messages=[]), 400, "messages must be a non-empty list"),
    (dict(messages=[{"role": "tool", "content": "42", "tool_call_id": "1"}]), 400, "role must be one of"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]), 400,
     "reads text only"),
    (dict(messages=MESSAGES, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), 400,
     "tools is not supported"),
    (dict(messages=MESSAGES, response_format={"type": "json_object"}), 400, "structured output is not supported"),
    (dict(messages=MESSAGES, top_logprobs=2), 400, "top_logprobs needs logprobs: true"),
    (dict(messages=MESSAGES, max_tokens=10**6), 400, "max_tokens must be between 0 and the context length"),
    (dict(messages=MESSAGES, n=2), 400, "n must be 1"),
    (dict(messages=MESSAGES, n=True), 400, "n must be a whole number, not bool"),
    (dict(messages=MESSAGES, logit_bias={"50": 10}), 400, "logit_bias is not supported"),
    (dict(messages=[*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]), 400,
     "messages[2].tool_calls is not supported"),
    (dict(messages=MESSAGES, stream=True, stream_options={"include_usage": 1}), 400,
     "stream_options.include_usage must be true or false, not int"),
    (dict(messages=MESSAGES, model="int4"), 404, "is not served here"),
])
def test_requests_it_cannot_honour_get_error_objects(client, call, status, words):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**{"model": "fp32", **call})
    assert e.value.status_code == status and words in e.value.message


def test_without_jinja2_chat_is_a_500_naming_the_extra_and_completions_go_on(tmp_path, chat_bundle, monkeypatch):
    """A runtime-only install serving a chat bundle: the server says so at start, and the chat
    route answers with the fix while completions work."""
    import test_serve

    monkeypatch.setattr(test_serve, "SERVE", SERVE.replace(blocking(HEAVY), blocking((*HEAVY, "jinja2"))))
    served = test_serve.serve(chat_bundle, tmp_path)
    try:
        client = served.client()
        with pytest.raises(openai.InternalServerError, match=r"pip install 'gptedge\[chat\]'"):
            client.chat.completions.create(model="fp32", messages=MESSAGES, max_tokens=4)
        assert client.completions.create(model="fp32", prompt="The for", max_tokens=4).choices[0].text
    finally:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=30)
    assert "chat completions are off" in served.log.read_text()
