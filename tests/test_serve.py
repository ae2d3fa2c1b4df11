"""``gptedge serve`` on 127.0.0.1, driven by the official ``openai`` client: completions whole and
streamed, stop strings, seeds, logprobs, echo, the error objects, 32 concurrent streaming clients
each answered exactly as alone, a client that leaves freeing its slot, a full queue (429) and
SIGTERM. The server runs as on a device: importing torch, onnx or onnxscript fails in its process.

The variant served is the optimized fp32 graph (the shared cache): its batched steps compute each
row exactly as alone. (int8's activations are quantized with one scale for the whole batch, and
onnxruntime's batched int4 kernels accumulate in another order, so there a row can part from its
answer alone on a near tie.)"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

import gptedge.runtime
from blockers import BLOCK_HEAVY
from fixtures_demo import free_port, wait_until_up

openai = pytest.importorskip("openai", reason="the openai client is in the dev extra")

KEY = "test-key-123"
SERVE = BLOCK_HEAVY + "import sys\nfrom gptedge.cli import main\nsys.exit(main(['serve', *sys.argv[1:]]))\n"


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    log: Path

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def client(self, key: str | None = KEY) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or "none", max_retries=0, timeout=60)


def serve(bundle: Path, folder: Path, *flags: str) -> Served:
    port = free_port()
    log = folder / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(bundle), "--variant", "fp32", "--port", str(port),
                                 "--threads", "1", *flags], stdout=out, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_until_up(served.url + "/health", proc, log)
    except BaseException:
        proc.kill()
        raise
    return served


@pytest.fixture(scope="module")
def server(tmp_path_factory, optimized_bundle):
    served = serve(optimized_bundle, tmp_path_factory.mktemp("serve"), "--slots", "4", "--api-key", KEY)
    yield served
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def model(optimized_bundle):
    return gptedge.runtime.load(optimized_bundle, variant="fp32", threads=1)


def alone(model, prompt: str, **settings) -> str:
    return model.generate(prompt, **settings).text


def test_completion_equals_the_runtime(server, model):
    r = server.client().completions.create(model="fp32", prompt="The for statement", max_tokens=24, temperature=0)
    assert r.choices[0].text == alone(model, "The for statement", max_new_tokens=24, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop") and r.object == "text_completion"
    assert r.usage.prompt_tokens == len(model.encode("The for statement"))
    assert r.usage.completion_tokens <= 24


def test_stream_gives_the_same_text(server, model):
    chunks = list(server.client().completions.create(model="fp32", prompt="A class definition", max_tokens=30, temperature=0,
                                                      stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == alone(model, "A class definition", max_new_tokens=30, temperature=0)
    assert chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")


def test_stop_strings_seed_and_batch_of_prompts(server, model):
    client = server.client()
    full = alone(model, "The for statement", max_new_tokens=24, temperature=0)
    stop = full[8:11]
    r = client.completions.create(model="fp32", prompt="The for statement", max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].text == full[: full.index(stop)]
    sampled = [client.completions.create(model="fp32", prompt="Exceptions are", max_tokens=20, temperature=0.9, seed=7).choices[0].text
               for _ in range(2)]
    assert sampled[0] == sampled[1] == alone(model, "Exceptions are", max_new_tokens=20, temperature=0.9, seed=7,
                                             top_k=0, top_p=1.0)
    r = client.completions.create(model="fp32", prompt=["import os", "def f"], max_tokens=8, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.text for c in r.choices] == [alone(model, p, max_new_tokens=8, temperature=0) for p in ("import os", "def f")]


def test_logprobs_and_echo(server, model):
    r = server.client().completions.create(model="fp32", prompt="The for statement", max_tokens=6, temperature=0, logprobs=3,
                                           echo=True)
    c = r.choices[0]
    assert c.text == "The for statement" + alone(model, "The for statement", max_new_tokens=6, temperature=0)
    lp = c.logprobs
    prompt_ids = model.encode("The for statement")
    assert len(lp.tokens) == len(prompt_ids) + 6 and "".join(lp.tokens) == c.text
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    for chosen, top in zip(lp.token_logprobs[len(prompt_ids):], lp.top_logprobs[len(prompt_ids):]):
        assert len(top) <= 3 and max(top.values()) == pytest.approx(chosen, abs=1e-6)  # greedy: the top one


@pytest.mark.parametrize("call,status,words", [
    (dict(prompt="", max_tokens=5), openai.BadRequestError, "prompt is empty"),
    (dict(prompt="x", max_tokens=10_000), openai.BadRequestError, "max_tokens must be between 0 and the context"),
    (dict(prompt="x", temperature=5), openai.BadRequestError, "temperature must be between"),
    (dict(prompt="x", n=2), openai.BadRequestError, "n must be 1"),
    (dict(prompt="x", model="int3"), openai.NotFoundError, "is not served here: this server runs 'fp32': leave model out"),
])
def test_bad_requests_get_openai_error_objects(server, call, status, words):
    with pytest.raises(status) as info:
        server.client().completions.create(**{"model": "fp32", **call})
    assert words in info.value.body["message"] if isinstance(info.value.body, dict) else words in str(info.value)


def test_api_key_and_routes(server):
    for key in (None, "wrong"):
        with pytest.raises(openai.AuthenticationError):
            server.client(key=key).completions.create(model="fp32", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        server.client().chat.completions.create(model="fp32", messages=[{"role": "user", "content": "hi"}])
    models = server.client().models.list()
    assert "fp32" in [m.id for m in models.data]
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert "gptedge_requests_total" in metrics and "gptedge_slots 4" in metrics


def test_32_concurrent_streaming_clients_each_get_their_answer_alone(server, model):
    prompts = [f"{w} statement number {i}" for i, w in enumerate(["The for", "A while", "import", "def"] * 8)]
    lengths = [8 + (7 * i) % 40 for i in range(len(prompts))]
    answers, errors = [None] * len(prompts), []

    def client(i):
        try:
            stream = server.client().completions.create(model="fp32", prompt=prompts[i], max_tokens=lengths[i], temperature=0,
                                                        stream=True)
            answers[i] = "".join(c.choices[0].text for c in stream if c.choices)
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for prompt, n, answer in zip(prompts, lengths, answers):
        assert answer == alone(model, prompt, max_new_tokens=n, temperature=0)
    assert server.health()["busy"] == 0


def metric(server: Served, name: str) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
        return float(next(line.split()[1] for line in r.read().decode().splitlines() if line.startswith(name + " ")))


def test_a_client_that_leaves_frees_its_slot(server):
    """A client that sends its request and hangs up at once. (One that hangs up after the first
    chunk cancels too, but the test model can write all 64 tokens before its goodbye arrives.)"""
    cancelled, generated = metric(server, "gptedge_requests_cancelled_total"), metric(server, "gptedge_generated_tokens_total")
    body = json.dumps({"model": "fp32", "prompt": "x", "max_tokens": 64, "temperature": 0, "stream": True,
                       "ignore_eos": True}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 10
    while (server.health()["busy"] or metric(server, "gptedge_requests_cancelled_total") == cancelled) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.health() == {**server.health(), "status": "ok", "busy": 0}
    assert metric(server, "gptedge_requests_cancelled_total") == cancelled + 1
    assert metric(server, "gptedge_generated_tokens_total") - generated < 64


def test_full_queue_is_429_and_sigterm_stops_the_server(tmp_path, optimized_bundle):
    """One slot and no queue: of 16 clients starting together, those that find the slot taken get
    429 with Retry-After, the others their answer; then SIGTERM ends the server within seconds."""
    served = serve(optimized_bundle, tmp_path, "--slots", "1", "--queue", "0")
    try:
        start, outcomes = threading.Barrier(16), []

        def client():
            start.wait()
            try:
                served.client().completions.create(model="fp32", prompt="x", max_tokens=64, temperature=0)
                outcomes.append("ok")
            except openai.RateLimitError as e:
                outcomes.append(e.response.headers.get("Retry-After"))

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert "ok" in outcomes and "1" in outcomes and set(outcomes) == {"ok", "1"}
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
