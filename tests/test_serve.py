"""``gptedge serve`` on 127.0.0.1, driven by the official ``openai`` client: completions whole and
streamed, stop strings, seeds, logprobs, echo, the error objects, 32 concurrent streaming clients
each answered exactly as alone, a client that leaves freeing its slot, a full queue (429) and
SIGTERM; and bad input sent as raw HTTP (malformed bodies, methods, request lines, a body that never
comes, keys no client can send), each answered with an error object and no traceback in the log.
The server runs as on a device: importing torch, onnx or onnxscript fails in its process.

The variant served is the optimized fp32 graph (the shared cache): its batched steps compute each
row exactly as alone. (int8's activations are quantized with one scale for the whole batch, and
onnxruntime's batched int4 kernels accumulate in another order, so there a row can part from its
answer alone on a near tie.)"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
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


def serve(bundle: Path, folder: Path, *flags: str, script: str | None = None) -> Served:
    """A server on a free port, run by ``script`` (default: ``SERVE``), its output in a log file."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", script or SERVE, str(bundle), "--variant", "fp32", "--port",
                                 str(port), "--threads", "1", *flags], stdout=out, stderr=subprocess.STDOUT)
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
    assert "Traceback" not in served.log.read_text()  # whatever its tests sent it


@pytest.fixture(scope="module")
def model(optimized_bundle):
    return gptedge.runtime.load(optimized_bundle, variant="fp32", threads=1)


def alone(model, prompt: str, **settings) -> str:
    return model.generate(prompt, **settings).text


def raw(served: Served, request: bytes, half_close: bool = False) -> tuple[int, http.client.HTTPMessage, bytes]:
    """``request`` sent byte for byte on a new connection (then, with ``half_close``, the client's
    side shut); the answer's status, headers and body, read as an HTTP client reads them."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method=request.split(b" ", 1)[0].decode("latin-1"))
        response.begin()
        return response.status, response.headers, response.read()


def refusal(served: Served, request: bytes, half_close: bool = False) -> tuple[int, str]:
    """The status and message of the error object ``request`` is answered with (checked to be one)."""
    status, headers, body = raw(served, request, half_close)
    error = json.loads(body)
    assert headers["Content-Type"] == "application/json" and list(error) == ["error"]
    assert set(error["error"]) == {"message", "type", "param", "code"}
    return status, error["error"]["message"]


def post(body: bytes, length: str | None = None) -> bytes:
    """A raw ``POST /v1/completions`` with the key; ``length`` its Content-Length (default: the body's)."""
    return (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Length: " + (str(len(body)) if length is None else length).encode() + b"\r\n\r\n" + body)


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
    (dict(prompt="x", n=True), openai.BadRequestError, "n must be a whole number, not bool"),
    (dict(prompt="x", n=1.0), openai.BadRequestError, "n must be a whole number, not float"),
    (dict(prompt="x", logit_bias={"50": 10}), openai.BadRequestError, "logit_bias is not supported"),
    (dict(prompt="x", stream=True, stream_options={"include_usage": "no"}), openai.BadRequestError,
     "stream_options.include_usage must be true or false, not str"),
    (dict(prompt="x", model="int3"), openai.NotFoundError, "is not served here: this server runs 'fp32': leave model out"),
])
def test_bad_requests_get_openai_error_objects(server, call, status, words):
    with pytest.raises(status) as info:
        server.client().completions.create(**{"model": "fp32", **call})
    assert words in info.value.body["message"] if isinstance(info.value.body, dict) else words in str(info.value)


def test_what_it_refuses_is_taken_when_empty(server):
    r = server.client().completions.create(model="fp32", prompt="x", max_tokens=2, n=1, logit_bias={},
                                           stream_options={"include_usage": False}, extra_body={"best_of": None})
    assert r.choices[0].finish_reason in ("length", "stop")


def test_more_prompts_than_the_server_ever_holds_is_400_not_429(server):
    """4 slots and the default queue of 64: an idle server takes 68 prompts at once and never 69,
    so a 429's "try again shortly" would be retried forever."""
    client = server.client()
    assert len(client.completions.create(model="fp32", prompt=["x"] * 68, max_tokens=1).choices) == 68
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="fp32", prompt=["x"] * 69, max_tokens=1)
    assert ("the request has 69 prompts, more than this server takes at once (4 slots + a queue of 64): send at "
            "most 68 per request, or start gptedge serve with more --slots or --queue") == info.value.body["message"]


@pytest.mark.parametrize("request_,half_close,status,words", [
    (post(b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), False, 400, "nested too deeply to read"),
    (post(b'{"prompt": 1' + b"0" * 5000 + b"}"), False, 400, "a number with more digits than this server reads"),
    # no body where it is refused unread: bytes left unread would make the closing connection reset
    (post(b"", length="-5"), False, 400, "the Content-Length header is '-5': send the body's size in bytes"),
    (post(b"", length="1_4"), False, 400, "the Content-Length header is '1_4'"),
    (post(b"", length=str(5 * 1024 * 1024)), False, 413, "at most 4194304 are taken"),
    (post(b'{"prompt": "x"}', length="100"), True, 400, "the body ended after 15 of the 100 bytes"),
])
def test_malformed_bodies_get_error_objects(server, request_, half_close, status, words):
    code, message = refusal(server, request_, half_close)
    assert code == status and words in message
    assert server.health()["status"] == "ok"


@pytest.mark.parametrize("path, headers, status", [("/v1/nope", b"", 404),
                                                    ("/v1/completions", b"Authorization: Bearer no\r\n", 401)])
def test_a_post_refused_before_its_body_is_read_closes_the_connection(server, path, headers, status):
    """Its body is still on the connection: read as the next request, it would be answered as one."""
    body = b'{"prompt": "x"}'
    code, answer, _ = raw(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
                          + headers + b"\r\n" + body)
    assert code == status and answer["Connection"] == "close"


@pytest.mark.parametrize("request_,status,words", [
    *[(f"{m} /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 405, f"method {m} is not allowed: use GET or POST")
      for m in ("PUT", "DELETE", "PATCH", "OPTIONS", "BREW")],
    (b"garbage\r\n", 400, "Bad request syntax ('garbage'): send an HTTP/1.1 request"),
    # each ends where http.server stops reading, so no unread bytes make the closing connection reset
    (b"GET /" + b"a" * (65_537 - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1\r\n", 414, "send long parameters in"),
    (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)), 431, "send fewer and shorter"),
    (b"GET /health HTTP/2.0\r\n", 505, "send an HTTP/1.1 request"),
])
def test_what_http_server_refuses_gets_error_objects(server, request_, status, words):
    """Not Python's HTML error pages: the same JSON error object, with Allow naming the methods for a 405."""
    code, message = refusal(server, request_)
    assert code == status and words in message
    if status == 405:
        assert raw(server, request_)[1]["Allow"] == "GET, POST"


def test_head_is_405_without_a_body(server):
    status, headers, body = raw(server, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["Allow"], headers["Content-Type"], body) == (405, "GET, POST", "application/json", b"")


@pytest.mark.parametrize("flags,variable,words", [
    (["--api-key", ""], None, "--api-key is empty: give it a key, or remove it"),
    (["--api-key", "ключ"], None, "--api-key holds a character other than visible ASCII"),
    (["--api-key", "two words"], None, "--api-key holds a character other than visible ASCII"),
    ([], "", "$GPTEDGE_API_KEY is empty"),
    ([], "ключ", "$GPTEDGE_API_KEY holds a character other than visible ASCII"),
])
def test_a_key_no_client_could_send_is_refused_at_start(optimized_bundle, flags, variable, words):
    env = {k: v for k, v in os.environ.items() if k != "GPTEDGE_API_KEY"}
    if variable is not None:
        env["GPTEDGE_API_KEY"] = variable
    run = subprocess.run([sys.executable, "-c", SERVE, str(optimized_bundle), "--port", str(free_port()), *flags],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == "" and words in run.stderr and run.stderr.count("\n") == 1


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


@pytest.fixture(scope="module")
def impatient(tmp_path_factory, optimized_bundle):
    """A server that waits 0.05 s (not READ_TIMEOUT_S, 60) for what a client sends, with one slot."""
    script = SERVE.replace("from gptedge.cli import main\n", "from gptedge.cli import main\nimport gptedge.serve.http\n"
                                                            "gptedge.serve.http.Handler.timeout = 0.05\n")
    assert script != SERVE
    served = serve(optimized_bundle, tmp_path_factory.mktemp("impatient"), "--slots", "1", "--queue", "47",
                   script=script)
    yield served
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(timeout=30)
    assert "Traceback" not in served.log.read_text()


def test_a_body_that_never_comes_is_408_and_a_long_stream_is_not_cut(impatient):
    """The read timeout frees the thread of a client that announced a body and sent none, but a
    stream outlives it: while its tokens are generated nothing is read."""
    assert refusal(impatient, post(b"{", length="100")) == (408, "the body stopped coming: of the 100 bytes "
                                                                 "Content-Length announced, nothing more came for "
                                                                 "0.05 s; send the whole body at once")
    body = json.dumps({"prompt": ["x"] * 48, "max_tokens": 60, "ignore_eos": True, "stream": True}).encode()
    started = time.monotonic()
    status, _, stream = raw(impatient, post(body))
    took = time.monotonic() - started
    assert status == 200 and stream.count(b'"finish_reason": "length"') == 48 and stream.endswith(b"data: [DONE]\n\n")
    assert took > 0.25  # five read timeouts


@pytest.mark.parametrize("request_", [b"", post(b"{")[:-30], post(b"{")])
def test_a_client_that_resets_its_connection_leaves_no_traceback(impatient, request_):
    """Reset before its request, in its headers, or just after a request answered with an error."""
    host, port = impatient.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request_)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    time.sleep(0.3)
    assert impatient.health()["status"] == "ok" and "Traceback" not in impatient.log.read_text()
