"""gptedge import: a Hugging Face GPT-2 folder and a nanoGPT ckpt.pt give a checkpoint with the same
outputs as the original model, offline."""

import json
import shutil

import pytest
import torch
from tokenizers import Tokenizer

from cli_checks import one_line_error
from fixtures_model import TEST_MODEL
from gptedge.cli import main
from gptedge.runtime import contract
from gptedge.train.checkpoint import load_checkpoint
from gptedge.train.config import GPTConfig
from gptedge.train.model import GPT


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    """A random small GPT-2 saved by transformers (Conv1D weights, tanh GELU), with large enough
    weights that every layer visibly shapes the logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=64, vocab_size=TEST_MODEL["vocab_size"],
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    folder = tmp_path_factory.mktemp("hf") / "gpt2"
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def test_hf_gpt2_import_matches_transformers(tmp_path, hf_gpt2, tokenizer_file, capsys):
    folder, reference = hf_gpt2
    shutil.copy(tokenizer_file, folder / "tokenizer.json")
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.config.gelu == "tanh" and ckpt.info.imported_from.kind == "huggingface-gpt2"
    ids = torch.randint(0, TEST_MODEL["vocab_size"], (2, 40))
    with torch.no_grad():
        theirs = reference(ids).logits
        ours, _ = ckpt.model(ids)
    assert theirs.abs().max() > 1.0  # not a near-zero model where everything matches
    assert (ours - theirs).abs().max().item() <= 1e-5


CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}<|assistant|>"


def test_hf_chat_template_goes_into_the_bundle(tmp_path, hf_gpt2, tokenizer_file, capsys):
    """A chat model's template (tokenizer_config.json, named templates) is imported with its weights
    and exported into the manifest; ``export --chat-template`` sets another, and a bad one is a
    one-line error before any work."""
    folder = tmp_path / "chat-model"
    shutil.copytree(hf_gpt2[0], folder)
    shutil.copy(tokenizer_file, folder / "tokenizer.json")
    named = [{"name": "default", "template": CHAT}, {"name": "tool_use", "template": "{{ tools }}"}]
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    assert load_checkpoint(tmp_path / "ckpt").info.chat_template == CHAT
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "bundle"), "--quiet"]) == 0
    assert contract.read_manifest(tmp_path / "bundle").chat_template == CHAT
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["format_version"] == 3

    other = tmp_path / "other.jinja"
    other.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "bundle"), "--force", "--quiet",
                 "--chat-template", str(other)]) == 0
    assert contract.read_manifest(tmp_path / "bundle").chat_template == other.read_text()
    export = ["export", str(tmp_path / "ckpt"), str(tmp_path / "new"), "--chat-template"]
    assert "does not exist" in one_line_error(capsys, [*export, str(tmp_path / "missing.jinja")])
    other.write_text("{% for m in messages %}")
    assert "is not valid Jinja (line 1" in one_line_error(capsys, [*export, str(other)])
    assert not (tmp_path / "new").exists()
    (folder / "tokenizer_config.json").write_text('["not", "an", "object"]')
    error = one_line_error(capsys, ["import", str(folder), "--out", str(tmp_path / "ckpt2")])
    assert "tokenizer_config.json holds list, not an object" in error and not (tmp_path / "ckpt2").exists()


def test_hf_gpt2_hub_layout(tmp_path, hf_gpt2, tokenizer_file):
    """The Hub's gpt2 files name tensors without 'transformer.' and keep the causal-mask buffers."""
    from safetensors.torch import load_file, save_file

    folder, reference = hf_gpt2
    hub = tmp_path / "hub"
    hub.mkdir()
    shutil.copy(folder / "config.json", hub / "config.json")
    shutil.copy(tokenizer_file, hub / "tokenizer.json")
    state = {k.removeprefix("transformer."): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(hub / "model.safetensors"))
    assert main(["import", str(hub), "--out", str(tmp_path / "ckpt")]) == 0
    ids = torch.randint(0, TEST_MODEL["vocab_size"], (1, 64))
    with torch.no_grad():
        diff = load_checkpoint(tmp_path / "ckpt").model(ids)[0] - reference(ids).logits
    assert diff.abs().max().item() <= 1e-5


def test_hf_gpt2_tokenizer_from_vocab_and_merges(tmp_path, hf_gpt2, tokenizer_file):
    folder, _ = hf_gpt2
    (folder / "tokenizer.json").unlink(missing_ok=True)
    original = Tokenizer.from_file(str(tokenizer_file))
    original.model.save(str(folder))  # vocab.json + merges.txt, as GPT-2 ships them
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    imported = Tokenizer.from_file(str(tmp_path / "ckpt" / "tokenizer.json"))
    text = "The quick brown fox <|endoftext|> naïve 🙂"
    assert imported.encode(text).ids == original.encode(text).ids
    assert imported.decode(imported.encode(text).ids, skip_special_tokens=False) == text


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_checkpoint_import(tmp_path, tokenizer_file, capsys, bias):
    torch.manual_seed(1)
    model = GPT(GPTConfig(**TEST_MODEL, bias=bias)).eval()
    # nanoGPT's train.py: raw_model.state_dict() under 'model', with torch.compile's prefix, the tied
    # head saved twice and (without flash attention) the causal-mask buffer.
    state = {}
    for k, v in model.state_dict().items():
        state["_orig_mod." + (k if k == "lm_head.weight" else "transformer." + k)] = v
    for i in range(TEST_MODEL["n_layer"]):
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    model_args = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, bias=bias, vocab_size=512, dropout=0.0)
    ckpt_file = tmp_path / "ckpt.pt"
    torch.save({"model": state, "optimizer": {}, "model_args": model_args, "iter_num": 5000,
                "best_val_loss": torch.tensor(1.5), "config": {"dataset": "shakespeare_char"}}, ckpt_file)

    assert main(["import", str(ckpt_file), "--out", str(tmp_path / "none")]) == 2
    assert "pass --tokenizer" in capsys.readouterr().err
    assert main(["import", str(tmp_path), "--out", str(tmp_path / "ckpt"), "--tokenizer", str(tokenizer_file)]) == 0
    imported = load_checkpoint(tmp_path / "ckpt")
    assert imported.config.bias is bias and imported.config.gelu == "exact"
    ids = torch.randint(0, 512, (1, 30))
    with torch.no_grad():
        assert torch.equal(imported.model(ids)[0], model(ids)[0])
