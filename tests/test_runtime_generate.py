"""Generation on the test bundles (real onnxruntime sessions) against PyTorch and itself.

The tests that take ``bundle`` run twice: on the exported graph (cache layout "concat") and on the
optimized one (GroupQueryAttention over the preallocated "shared" cache), what ``gptedge build``
ships."""

import concurrent.futures
import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
import torch

import gptedge.runtime
from blockers import BLOCK_HEAVY
from fixtures_export import CHAT_TEMPLATE, chat_copy
from gptedge.errors import UserError
from gptedge.runtime import contract, providers
from gptedge.runtime.model import Model
from gptedge.runtime.decoder import Decoder
from gptedge.train.checkpoint import load_checkpoint

GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module", params=["concat", "shared"])
def bundle(request, tiny_bundle, optimized_bundle):
    path = tiny_bundle if request.param == "concat" else optimized_bundle
    assert contract.read_manifest(path).variants["fp32"].cache_layout == request.param
    return path


@pytest.fixture(scope="module")
def model(bundle):
    return gptedge.runtime.load(bundle, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def gpt(export_checkpoint):
    return load_checkpoint(export_checkpoint).model.eval()


@torch.inference_mode()
def torch_greedy(gpt, prompt, n):
    """Greedy decoding by a full forward over the window at every step (no cache): when the
    window is full it keeps the last C - C // 4 tokens, the runtime's documented rule.
    One torch thread: on a busy 2-core machine two threads make this model 50x slower."""
    C = gpt.config.context_length
    keep = C - C // 4
    window, out = list(prompt), []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(n):
            if len(window) > C:
                window = window[-keep:]
            logits, _ = gpt(torch.tensor([window]))
            out.append(int(logits[0, -1].argmax()))
            window.append(out[-1])
    finally:
        torch.set_num_threads(threads)
    return out


def test_greedy_equals_pytorch(model, gpt):
    prompt = model.encode("The quick brown fox")
    result = model.generate(prompt, max_new_tokens=40, **GREEDY)
    assert result.token_ids == torch_greedy(gpt, prompt, 40)
    assert result.stop_reason == "length" and result.text == model.decode(result.token_ids)
    assert result.ttft_s > 0 and result.tokens_per_s > 0


def test_past_the_context_continues_as_a_recompute_over_the_window(model, gpt):
    C = model.context_length
    prompt = model.encode("def f(x):\n    return x")
    n = C + C // 4  # two slides of the window at least
    result = model.generate(prompt, max_new_tokens=n, **GREEDY)
    assert len(result.token_ids) == n and result.slides >= 2
    assert result.token_ids == torch_greedy(gpt, prompt, n)


def test_an_over_long_prompt_keeps_its_end_with_a_warning(model, gpt):
    C = model.context_length
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, 400, C + 20)]
    with pytest.warns(UserWarning, match="more than the context"):
        result = model.generate(prompt, max_new_tokens=5, **GREEDY)
    assert result.prompt_tokens == C - C // 4
    assert result.token_ids == torch_greedy(gpt, prompt[-(C - C // 4):], 5)


def test_batch_equals_one_at_a_time_with_rows_stopping_on_their_own(model):
    prompts = ["Hello", "The quick brown fox jumps over", list(range(10, 31))]
    n = model.context_length + 10  # the long rows slide inside the batch
    alone = [model.generate(p, max_new_tokens=n, **GREEDY) for p in prompts]
    stop = alone[1].text[5:9]  # row 1 stops early on a stop string, the others run to the length
    hits = [stop in r.text for r in alone]
    singles = [model.generate(p, max_new_tokens=n, stop=[stop], **GREEDY) for p in prompts]
    batch = model.generate(prompts, max_new_tokens=n, stop=[stop], **GREEDY)
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]
    assert [r.text for r in batch] == [r.text for r in singles]
    assert batch[1].stop_reason == "stop" and len(batch[1].token_ids) < n
    assert [r.stop_reason for r in batch] == ["stop" if s else "length" for s in hits]


def test_a_batch_prefilled_in_chunks_equals_one_at_a_time(model, monkeypatch):
    """A long prompt's prefill runs in chunks (to bound the logits' memory); in a left-padded batch
    the first chunks of a short row are all padding. Chunks of 5 tokens here."""
    from gptedge.runtime import generation

    monkeypatch.setattr(generation, "PREFILL_LOGITS", 3 * 5 * model.manifest.model.vocab_size)
    prompts = [list(range(10, 40)), list(range(50, 58)), list(range(60, 75))]
    batch = model.generate(prompts, max_new_tokens=6, **GREEDY)
    alone = [model.generate(p, max_new_tokens=6, **GREEDY) for p in prompts]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]


def test_stop_string_is_trimmed_in_generate_and_stream(model):
    full = model.generate("Once upon", max_new_tokens=30, **GREEDY)
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    expected = full.text[: full.text.index(stop)]
    result = model.generate("Once upon", max_new_tokens=30, stop=[stop], **GREEDY)
    assert result.stop_reason == "stop" and result.text == expected
    assert full.token_ids[: len(result.token_ids)] == result.token_ids
    stream = model.stream("Once upon", max_new_tokens=30, stop=[stop], **GREEDY)
    pieces = list(stream)
    assert "".join(pieces) == expected and stream.result.text == expected


def test_end_of_text_token_ends_generation(model, bundle, tmp_path):
    """A copy of the bundle whose manifest names as end-of-text a token the model will produce."""
    full = model.generate("Once upon", max_new_tokens=20, **GREEDY)
    eos = full.token_ids[6]
    first = full.token_ids.index(eos)
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = contract.read_manifest(copy)
    manifest.eos_token_id = eos
    contract.write_manifest(copy, manifest)
    other = gptedge.runtime.load(copy, provider="cpu", threads=1)
    result = other.generate("Once upon", max_new_tokens=20, temperature=0.0)
    assert result.stop_reason == "eos" and result.token_ids == full.token_ids[: first + 1]
    assert result.text == model.decode(full.token_ids[:first])
    assert other.generate("Once upon", max_new_tokens=20, **GREEDY).token_ids == full.token_ids


def test_stream_pieces_add_up_to_the_text(model):
    stream = model.stream("Hello", max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0, seed=3)
    pieces = list(stream)
    r = stream.result
    assert "".join(pieces) == r.text == model.decode(r.token_ids)
    assert len(r.token_ids) == 40 or r.stop_reason == "eos"


def test_same_seed_repeats_and_another_differs(model):
    settings = dict(max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.2)
    a = model.generate(["Hi", "Yes"], seed=11, **settings)
    b = model.generate(["Hi", "Yes"], seed=11, **settings)
    c = model.generate(["Hi", "Yes"], seed=12, **settings)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_threads_share_a_model(model):
    """Each generation has its own cache (and, for the shared layout, its own IO binding), so
    threads may generate on one model at once, as the demo's visitors do."""
    prompts = [f"Prompt number {i} is" for i in range(4)]
    alone = [model.generate(p, max_new_tokens=model.context_length + 3, **GREEDY).token_ids for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: model.generate(p, max_new_tokens=model.context_length + 3,
                                                          **GREEDY).token_ids, prompts))
    assert together == alone


def test_io_binding_path_gives_the_same_tokens(model, tiny_bundle):
    """The path GPU providers take with the exported graph (cache kept as OrtValues between steps),
    run here on CPU; against each layout's plain path."""
    manifest = contract.read_manifest(tiny_bundle)
    decoder = Decoder(contract.verify_variant(tiny_bundle, manifest, "fp32"), manifest,
                      options=providers.session_options(1), io_binding=True)
    bound = Model(decoder, model.tokenizer, manifest, "fp32", "cpu")
    prompts = ["Hello", "The quick brown fox"]
    n = model.context_length + 5
    assert [r.token_ids for r in bound.generate(prompts, max_new_tokens=n, **GREEDY)] == [
        r.token_ids for r in model.generate(prompts, max_new_tokens=n, **GREEDY)
    ]


def test_sessions_are_reused_while_used_and_choices_are_reported(model, bundle):
    again = gptedge.runtime.load(bundle, provider="cpu", threads=1)
    assert again.decoder is model.decoder
    assert model.provider == "cpu" and model.variant in model.manifest.variants
    assert "on cpu" in model.describe()
    # A session lives as long as a model uses it: a long process does not keep every variant it opened.
    other = weakref.ref(gptedge.runtime.load(bundle, provider="cpu", threads=2).decoder)
    gc.collect()
    assert other() is None


def test_unknown_and_unavailable_providers_are_one_line_errors(tiny_bundle):
    with pytest.raises(UserError, match=r"unknown provider 'warp'.*cpu"):
        gptedge.runtime.load(tiny_bundle, provider="warp")
    missing = next(n for n in providers.PROVIDERS if n not in providers.available())
    with pytest.raises(UserError, match=rf"provider '{missing}' is not in this onnxruntime build: available are .*cpu"):
        gptedge.runtime.load(tiny_bundle, provider=missing)
    with pytest.raises(UserError, match="no variant 'nope'"):
        gptedge.runtime.load(tiny_bundle, variant="nope")


def test_fp16_never_runs_on_cpu_and_auto_prefers_listed_order():
    shape = contract.ModelShape(2, 2, 64, 512, 64)
    variants = {
        "fp16": contract.Variant("model.fp16.onnx", "fp16", 1, "x", providers=["cuda"]),
        "int8": contract.Variant("model.int8.onnx", "int8", 1, "x", providers=["cpu"]),
        "fp32": contract.Variant("model.onnx", "fp32", 1, "x"),
    }
    manifest = contract.Manifest(shape, 0, 1, variants)
    cpu, cuda = providers.PROVIDERS["cpu"], providers.PROVIDERS["cuda"]
    assert not providers.suits(variants["fp16"], cpu) and providers.suits(variants["fp16"], cuda)
    assert not providers.suits(variants["int8"], cuda) and providers.suits(variants["fp32"], cuda)
    assert providers.choose(manifest, "auto", "cpu") == ("int8", cpu)
    with pytest.raises(UserError, match="does not run on cpu"):
        providers.choose(manifest, "fp16", "cpu")
    # The optimized fp32 graph (GroupQueryAttention, no fp32 kernel on GPUs) runs where it says.
    shared = contract.Variant("model.opt.onnx", "fp32", 1, "x", cache_layout="shared", providers=["cpu"])
    assert providers.suits(shared, cpu) and not providers.suits(shared, cuda)


def test_cli_generate_streams_and_reports(tiny_bundle, capsys):
    from gptedge.cli import main

    assert main(["generate", str(tiny_bundle), "Hello", "--max-new-tokens", "8", "--temperature", "0",
                 "--provider", "cpu", "--threads", "1", "--stats"]) == 0
    out, err = capsys.readouterr()
    model = gptedge.runtime.load(tiny_bundle, provider="cpu", threads=1)
    expected = model.generate("Hello", max_new_tokens=8, temperature=0.0)
    assert out == "Hello" + expected.text + "\n"
    assert "on cpu" in err and "tokens/s" in err and f"{len(expected.token_ids)} generated" in err
    assert main(["generate", str(tiny_bundle), "x", "--provider", "nope"]) == 2
    assert "unknown provider 'nope'" in capsys.readouterr().err





def test_cli_generate_chat_prints_the_answer_to_the_templates_prompt(tiny_bundle, tmp_path, capsys):
    from gptedge.cli import main

    chat_bundle = chat_copy(tiny_bundle, tmp_path, CHAT_TEMPLATE)
    assert main(["generate", str(chat_bundle), "The for", "--chat", "--system", "You write Python.",
                 "--max-new-tokens", "8", "--temperature", "0", "--threads", "1"]) == 0
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "The for"}]
    want = gptedge.runtime.load(chat_bundle, threads=1).chat(messages, max_new_tokens=8, temperature=0.0)
    assert capsys.readouterr().out == want.text + "\n"  # the answer alone: no prompt, no template markup
    assert main(["generate", str(tiny_bundle), "Hi", "--chat"]) == 2
    assert "this bundle declares no chat template" in capsys.readouterr().err
    assert main(["generate", str(chat_bundle), "Hi", "--system", "Be brief."]) == 2
    assert "--system is the system message of a chat: add --chat" in capsys.readouterr().err


def test_runtime_runs_where_importing_torch_fails(bundle):
    script = BLOCK_HEAVY + textwrap.dedent(f"""
        import json
        import gptedge.runtime
        model = gptedge.runtime.load({str(bundle)!r}, threads=1)
        r = model.generate("Hello", max_new_tokens=6, temperature=0.0, ignore_eos=True)
        pieces = list(model.stream("Hello", max_new_tokens=6, temperature=0.0, ignore_eos=True))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx")
                       or m.startswith(("gptedge.train", "gptedge.export")))
        from gptedge.cli import main
        code = main(["generate", {str(bundle)!r}, "Hi", "--max-new-tokens", "3", "--threads", "1"])
        print(json.dumps({{"ids": r.token_ids, "stream": "".join(pieces) == r.text, "heavy": heavy, "code": code}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [] and got["stream"] and got["code"] == 0 and len(got["ids"]) == 6
