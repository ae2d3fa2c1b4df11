"""Bad values sent to the demo page's API, as a script would send them (gradio_client, or a raw POST
for what gradio_client cannot encode: a lone surrogate, NaN, Infinity). Each is answered with a
message naming the value (in the stats line for /generate, as an error for /next_word), and the
server's log (its stdout and stderr) gets no traceback.

The page's own checks are the ones the widgets enforce: a variant or provider from their lists,
each slider's range, max new tokens up to the page's limit."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client

from gptedge.cli import main
from gptedge.demo.models import MAX_NEW_TOKENS

pytestmark = pytest.mark.slow

GOOD = dict(prompt="The for statement", variant="fp32", provider="cpu", temperature=0.8, top_k=50, top_p=0.95,
            repetition_penalty=1.0, max_new_tokens=4, seed=-1, stop="")


@pytest.fixture(scope="module")
def client(demo_server) -> Client:
    return Client(demo_server.url, verbose=False, analytics_enabled=False)


class ServerLog:
    """The part of the server's log written since the last look."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, path.stat().st_size

    def new(self) -> str:
        data = self.path.read_bytes()
        text, self.seen = data[self.seen:].decode("utf-8", "replace"), len(data)
        return text


@pytest.fixture
def server_log(demo_server):
    log = ServerLog(demo_server.record.parent / "server.log")  # beside the record: see fixtures_demo
    yield log
    written = log.new()
    assert "Traceback" not in written and "Error" not in written, written


def stats_of(client: Client, **changes) -> str:
    """The stats line of the last update /generate sent for these inputs."""
    v = {**GOOD, **changes}
    job = client.submit(v["prompt"], v["variant"], v["provider"], v["temperature"], v["top_k"], v["top_p"],
                        v["repetition_penalty"], v["max_new_tokens"], v["seed"], v["stop"], api_name="/generate")
    job.result()
    return job.outputs()[-1][1]


CLIENT_CASES = [
    (dict(variant="nope"), "variant 'nope' is not available here: use one of"),
    (dict(provider="cuda-not-here"), "provider 'cuda-not-here' is not available here"),
    (dict(max_new_tokens=MAX_NEW_TOKENS + 1), f"max new tokens {MAX_NEW_TOKENS + 1} is out of range: use 1 to"),
    (dict(max_new_tokens=0), "max new tokens 0 is out of range"),
    (dict(max_new_tokens="abc"), "max new tokens 'abc' is not a number"),
    (dict(temperature=-1), "temperature -1 is out of range: use 0 to 2"),
    (dict(top_k=-5), "top-k -5 is out of range"),
    (dict(top_p=3), "top-p 3 is out of range"),
    (dict(repetition_penalty=0), "repetition penalty 0 is out of range"),
    (dict(seed=-7), "seed -7 is out of range: use at least -1"),
    (dict(prompt=5), "the prompt must be text, not int"),
    (dict(prompt=None), "the prompt is empty"),
    (dict(stop=["a"]), "stop strings must be text"),
]


@pytest.mark.parametrize("changes, message", CLIENT_CASES, ids=[next(iter(c)) + "=" + repr(next(iter(c.values())))
                                                                for c, _ in CLIENT_CASES])
def test_out_of_range_values_are_messages(client, server_log, changes, message):
    stats = stats_of(client, **changes)
    assert stats.startswith("⚠") and message in stats and "\n" not in stats, stats


def raw_call(server_url: str, api: str, body: str) -> tuple[str, list]:
    """POST a JSON body the way any HTTP client can, then read the event stream: (last event, data)."""
    base = f"{server_url}gradio_api/call/{api}"
    request = urllib.request.Request(base, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        event_id = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{base}/{event_id}", timeout=60) as r:
        lines = r.read().decode().strip().splitlines()
    event = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")][-1]
    data = [line.split(": ", 1)[1] for line in lines if line.startswith("data: ")][-1]
    return event, json.loads(data)


def generate_body(**raw: str) -> str:
    """/generate's inputs as JSON text, with some spelled raw (NaN, "\\udcff": JSON Python can read)."""
    values = {k: json.dumps(v) for k, v in GOOD.items()}
    values.update(raw)
    return '{"data": [' + ", ".join(values[k] for k in GOOD) + "]}"


RAW_CASES = [
    (dict(prompt='"ok \\udcff"'), "the prompt is not valid UTF-8 (byte 0xff at character 3)"),
    (dict(prompt='"\\ud83d"'), "lone surrogate U+D83D"),
    (dict(temperature="NaN"), "temperature nan is not a number"),
    (dict(max_new_tokens="Infinity"), "max new tokens inf is not a number"),
    (dict(seed="NaN"), "seed nan is not a number"),
    (dict(temperature="true"), "temperature True is not a number"),
    (dict(stop='"end\\n\\ud800"'), "lone surrogate U+D800"),
    (dict(variant='"\\udcff"'), "variant '\\udcff' is not available here"),
]


@pytest.mark.parametrize("raw, message", RAW_CASES, ids=[f"{k}={v}" for c, _ in RAW_CASES for k, v in c.items()])
def test_values_only_raw_json_can_hold(demo_server, server_log, raw, message):
    event, data = raw_call(demo_server.url, "generate", generate_body(**raw))
    assert event == "complete"
    stats = data[1]
    assert stats.startswith("⚠") and message in stats and "\n" not in stats, stats


@pytest.mark.parametrize("body, message", [
    ('{"data": ["The", "nope", "cpu"]}', "variant 'nope' is not available here"),
    ('{"data": ["\\udcff", "fp32", "cpu"]}', "the prompt is not valid UTF-8"),
    ('{"data": ["   ", "fp32", "cpu"]}', "the prompt is empty"),
], ids=["variant", "surrogate", "empty"])
def test_next_word_answers_an_error_with_the_message(demo_server, server_log, body, message):
    event, data = raw_call(demo_server.url, "next_word", body)
    assert event == "error" and message in data["error"], data


@pytest.mark.parametrize("message, words", [
    ('"ok \\udcff"', "the message is not valid UTF-8 (byte 0xff at character 3)"),
    ("5", "the message must be text, not int"),
    ('"   "', "the message is empty"),
], ids=["surrogate", "number", "empty"])
def test_chat_answers_raw_values_with_a_message(demo_server, server_log, message, words):
    """The Chat tab's /chat, sent what its text box never would: the stats line names it."""
    knobs = ", ".join(json.dumps(GOOD[k]) for k in list(GOOD)[1:])  # the variant, provider and settings
    event, data = raw_call(demo_server.url, "chat", f'{{"data": [{message}, {knobs}]}}')
    stats = data[-1]
    assert event == "complete" and stats.startswith("⚠") and words in stats and "\n" not in stats, stats


def test_good_call_still_works_after_the_bad_ones(client, server_log):
    stats = stats_of(client)
    assert "tokens/s" in stats and "fp32 on cpu" in stats


def test_demo_command_on_a_file(capsys, demo_bundle):
    assert main(["demo", str(demo_bundle / "tokenizer.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a bundle folder" in err and "\n" not in err


def test_an_address_it_cannot_listen_on_is_one_line(capsys, demo_bundle):
    """A taken port, a host that does not resolve: one line naming the address, before the page starts."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for host, why in (("127.0.0.1", "Address already in use"), ("no-such-host.invalid", "")):
            assert main(["demo", str(demo_bundle), "--host", host, "--port", str(port)]) == 2
            out, err = capsys.readouterr()
            assert err.startswith(f"gptedge demo: error: cannot listen on {host}:{port} ({why}")
            assert err.strip().endswith("pick another --port or --host") and "\n" not in err.strip() and not out
