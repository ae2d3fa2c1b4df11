"""The demo page served for real on a localhost port and driven through gradio_client, as any API
user would; its answers are checked against the runtime called directly."""

import re

import pytest
from gradio_client import Client

import gptedge.runtime
from gptedge.cli import main
from gptedge.demo import views
from gptedge.demo.models import MAX_PROMPT_CHARS, check_prompt, settings_from_page
from gptedge.errors import UserError
from gptedge.runtime.next_token import next_token_candidates

PROMPT = "The for statement is used to"


@pytest.fixture(scope="module")
def client(demo_server) -> Client:
    return Client(demo_server.url, verbose=False, analytics_enabled=False)


def generate(client, prompt, variant, *, temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.0,
             max_new_tokens=16, seed=-1, stop=""):
    """Every update the page streamed for one request, the last one complete."""
    job = client.submit(prompt, variant, "cpu", temperature, top_k, top_p, repetition_penalty, max_new_tokens,
                        seed, stop, api_name="/generate")
    job.result()
    return job.outputs()


def test_streams_greedy_answer_of_the_chosen_variant(client, demo_server):
    direct = {name: gptedge.runtime.load(demo_server.bundle, variant=name, provider="cpu")
              .generate(PROMPT, temperature=0, max_new_tokens=300) for name in ("int8", "fp32")}
    for variant in ("int8", "fp32", "int8"):  # switched live, and back
        updates = generate(client, PROMPT, variant, temperature=0, max_new_tokens=300)
        text, stats, _, tokens = updates[-1]
        bars = updates[0][2]  # set once, before the answer streams
        want = direct[variant]
        assert text == want.text
        streamed = [u[0] for u in updates[1:-1]]  # between the bars and the stats
        assert all(want.text.startswith(s) for s in streamed)
        assert any(0 < len(s) < len(want.text) for s in streamed), "the answer arrived in one piece, not streamed"
        assert len(set(streamed)) == len(streamed)  # each update adds text
        assert f"{len(want.token_ids)} tokens" in stats and "tokens/s" in stats and "time to first token" in stats
        assert f"{variant} on cpu" in stats
        assert views.STOP_REASONS[want.stop_reason] in stats
        assert tokens.count('class="tok"') == len(want.token_ids)
        assert len(bars["confidences"]) == 10


def test_sampling_settings_reach_the_runtime(client, demo_server):
    settings = dict(temperature=1.3, top_k=20, top_p=0.9, repetition_penalty=1.3, max_new_tokens=40, seed=7)
    text = generate(client, PROMPT, "int8", **settings, stop="\\n\nzzz")[-1][0]
    want = gptedge.runtime.load(demo_server.bundle, variant="int8", provider="cpu").generate(
        PROMPT, **settings, stop=["\n", "zzz"])
    assert text == want.text
    assert "\n" not in text
    other_seed = generate(client, PROMPT, "int8", **{**settings, "seed": 8}, stop="\\n\nzzz")[-1][0]
    again = generate(client, PROMPT, "int8", **settings, stop="\\n\nzzz")[-1][0]
    assert again == text and other_seed != text


def test_next_word_bars_are_the_models_top_tokens(client, demo_server):
    label = client.predict(PROMPT, "fp32", "cpu", api_name="/next_word")
    model = gptedge.runtime.load(demo_server.bundle, variant="fp32", provider="cpu")
    want = next_token_candidates(model.decoder, model.tokenizer, model.encode(PROMPT), k=10)
    got = label["confidences"]
    assert [c["label"] for c in got] == list(views.candidate_bars(want))
    assert [c["confidence"] for c in got] == pytest.approx([c.probability for c in want])


@pytest.fixture
def visitor(demo_server) -> Client:
    """A client of its own: the page keeps each visitor's conversation."""
    return Client(demo_server.url, verbose=False, analytics_enabled=False)


def chat(client, message, variant="fp32", *, max_new_tokens=12):
    """Every update the Chat tab streamed for one greedy answer: (conversation, message box, stats)."""
    job = client.submit(message, variant, "cpu", 0.0, 50, 0.95, 1.0, max_new_tokens, -1, "", api_name="/chat")
    job.result()
    return job.outputs()


def texts(conversation) -> list[tuple[str, str]]:
    """(role, text) of each message the chat box shows (its content comes back as text parts)."""
    return [(m["role"], "".join(part["text"] for part in m["content"])) for m in conversation]


def test_chat_answers_are_the_runtimes_for_the_templates_prompt(visitor, demo_server):
    """Two turns in the Chat tab: each answer is what ``Model.chat`` gives for the whole conversation,
    streamed, shown exactly (not dedented), and kept for the next turn."""
    model = gptedge.runtime.load(demo_server.bundle, variant="fp32", provider="cpu")
    asked = []
    for message in ("The for", "And while?"):  # two turns and their answers fit the test model's context
        updates = chat(visitor, message)
        conversation, _, stats = updates[-1]
        asked.append({"role": "user", "content": message})
        want = model.chat(asked, temperature=0, max_new_tokens=12)
        assert texts(conversation) == [(m["role"], m["content"]) for m in asked] + [("assistant", want.text)]
        assert updates[0][1] == ""  # the message box, emptied as the answer starts
        assert f"{len(want.token_ids)} tokens" in stats and "fp32 on cpu" in stats
        partial = [texts(u[0])[-1][1] for u in updates[1:-1]]
        assert all(want.text.startswith(p) for p in partial)
        asked.append({"role": "assistant", "content": want.text})


def test_bad_chat_messages_are_messages_not_errors(visitor):
    *_, (_, _, stats) = chat(visitor, "  ")
    assert stats == "⚠ the message is empty: type a message for the model to answer"
    for _ in range(5):  # 2,000 characters each, the most a message may have
        *_, (_, _, stats) = chat(visitor, "x" * MAX_PROMPT_CHARS, max_new_tokens=1)
    assert re.fullmatch("⚠ the conversation has 8,0[0-9][0-9] characters, more than the 8,000 this page accepts: "
                        "press Clear to start a new one", stats), stats


@pytest.mark.parametrize("prompt, message", [("   ", "the prompt is empty"),
                                             ("x" * (MAX_PROMPT_CHARS + 1), "more than the 2,000 this page accepts")])
def test_bad_prompts_are_messages_not_errors(client, prompt, message):
    *_, (text, stats, bars, tokens) = generate(client, prompt, "fp32")
    assert stats.startswith("⚠") and message in stats


def test_page_settings_are_checked():
    s = settings_from_page(0.5, 10, 0.9, 1.1, 30, -1, "\\n\nEND\n")
    assert s.stop == ("\n", "END") and s.seed is None and s.max_new_tokens == 30
    assert settings_from_page(0.5, 10, 0.9, 1.1, 30, 3, "").seed == 3
    with pytest.raises(UserError, match="max new tokens"):
        settings_from_page(0.5, 10, 0.9, 1.1, 100_000, -1, "")
    with pytest.raises(UserError, match="empty"):
        check_prompt("")


def test_demo_command_without_a_bundle(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run gptedge build first" in err and "\n" not in err
    assert main(["demo", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "\n" not in err


def test_server_runs_without_torch_and_connects_to_nothing_outside(client, demo_server):
    """The server (``gptedge demo`` in its own process, where importing torch, onnx or onnxscript
    raises) served every request above without them, and every host it looked up or connected to
    is this machine: no telemetry, version check or download. (With gradio's analytics on, the
    list would hold api.gradio.app and huggingface.co.)"""
    generate(client, PROMPT, "fp32", max_new_tokens=4)
    assert demo_server.heavy_modules() == []
    hosts = demo_server.hosts()
    assert hosts and hosts <= {"127.0.0.1", "localhost", "::1"}, hosts
