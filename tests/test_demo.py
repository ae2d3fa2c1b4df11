"""The demo page served for real on a localhost port and driven through gradio_client, as any API
user would; its answers are checked against the runtime called directly."""

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
