"""The parity gate: a good export passes with small figures, a broken model never becomes a bundle,
and ``gptedge verify`` re-runs the gate and catches a modified file."""

import shutil

import numpy as np
import onnx
from onnx import numpy_helper
import pytest
import torch

from gptedge.cli import main
from gptedge.errors import UserError
from gptedge.export import bundle, graph, parity
from gptedge.export.heldout import Split, heldout_text
from gptedge.export.writing import save_graph
from gptedge.runtime import contract
from gptedge.runtime.padding import left_pad
from gptedge.runtime.settings import GenerationSettings
from gptedge.train import checkpoint
from gptedge.train.model import CausalSelfAttention, attention_bias


def test_export_passes_the_gate_and_records_figures(tiny_bundle, export_checkpoint):
    m = contract.read_bundle(tiny_bundle)
    p = m.parity
    assert p.passed is True and p.tolerance == parity.TOLERANCE
    assert p.prefill.tokens == m.model.context_length  # a whole window
    assert p.prefill.max_abs_diff <= 1e-5  # fp32 lands near 1e-7
    assert p.cache.max_abs_diff <= 1e-5 and p.batch.max_abs_diff <= 1e-5
    g = p.greedy
    assert g.identical and g.first_difference is None
    assert g.new_tokens == min(parity.GREEDY_TOKENS, m.model.context_length - g.prompt_tokens)
    assert p.batch.prompt_tokens == list(parity.BATCH_PROMPT_LENGTHS)
    assert "held-out" in p.text
    prov = m.provenance
    assert prov.checkpoint == export_checkpoint.name and prov.opset == graph.OPSET
    info = checkpoint.read_config(export_checkpoint)
    assert prov.weights_sha256 == contract.file_sha256(export_checkpoint / info.weights)
    assert set(prov.tools) >= {"torch", "onnx", "onnxscript", "onnxruntime"}
    assert prov.exported_at.endswith("+00:00")
    assert (prov.holdout_fraction, prov.split_seed) == (info.train.holdout_fraction, info.train.seed)
    assert (m.eos_token_id, m.pad_token_id) == (0, 1)
    assert m.sampling == GenerationSettings()
    assert m.tokenizer.sha256 == contract.file_sha256(tiny_bundle / "tokenizer.json")
    assert sorted(p.name for p in tiny_bundle.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]


class OffsetBlindAttention(CausalSelfAttention):
    """The classic cache bug: a causal mask aligned top-left (what is_causal=True does), blind to
    the past offset and to padding. Right for a prefill without padding, wrong with a cache."""

    def forward(self, x, mask, past, weights=False):
        T = x.shape[1]
        P = past[0].shape[2] if past is not None else 0
        ones = torch.ones(1, P + T, dtype=torch.long, device=x.device)
        return super().forward(x, attention_bias(ones, 0, x.dtype)[:, :, :T, :], past, weights)


def break_attention(model):
    for block in model.h:
        broken = OffsetBlindAttention(model.config)
        broken.load_state_dict(block.attn.state_dict())
        block.attn = broken
    return model.eval()


@pytest.fixture(scope="module")
def broken_graph(export_checkpoint, tmp_path_factory):
    """The graph of the checkpoint with offset-blind attention, traced once for this module."""
    path = tmp_path_factory.mktemp("broken") / "model.onnx"
    save_graph(graph.trace(break_attention(checkpoint.load_checkpoint(export_checkpoint).model)), path)
    return path


def test_gate_catches_a_model_whose_cache_is_wrong(export_checkpoint, broken_graph, tmp_path, monkeypatch):
    """PyTorch and ONNX agree with each other here (both broken the same way): only the graph's own
    checks (cached vs full, batch vs single) can tell, and they must stop the export."""

    def load_broken(path):
        ckpt = checkpoint.load_checkpoint(path)
        ckpt.model = break_attention(ckpt.model)
        return ckpt

    monkeypatch.setattr(bundle, "load_checkpoint", load_broken)
    monkeypatch.setattr(graph, "trace", lambda model: onnx.load(str(broken_graph)))  # traced above
    out = tmp_path / "bundle"
    with pytest.raises(UserError) as e:
        bundle.export_bundle(export_checkpoint, out, quiet=True)
    message = str(e.value)
    assert message.startswith("parity gate failed") and "\n" not in message
    assert "cache max |diff|" in message and "batch max |diff|" in message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_gate_catches_a_graph_that_differs_from_pytorch(export_checkpoint, tiny_bundle, tmp_path):
    """A bundle whose graph computes something slightly different (the position table scaled by
    1.01) than the PyTorch model: consistent with itself, so only the comparison with PyTorch can tell."""
    ckpt = checkpoint.load_checkpoint(export_checkpoint)
    stage = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, stage)
    model = onnx.load(str(stage / "model.onnx"))
    table = next(t for t in model.graph.initializer if t.name.endswith("wpe.weight"))  # positions
    table.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(table) * np.float32(1.01), table.name))
    save_graph(model, stage / "model.onnx")
    m = contract.read_bundle(stage, verify=False)
    m.variants["fp32"] = bundle.fp32_variant(stage, [stage / "model.onnx"], m.variants["fp32"].min_onnxruntime)
    contract.write_manifest(stage, m)
    tok = bundle.load_tokenizer(ckpt.tokenizer_path, ckpt.config.vocab_size)
    text = heldout_text(Split.of_checkpoint(ckpt.info), tok)
    with pytest.raises(UserError, match=r"parity gate failed: prefill max \|diff\| [0-9.e+-]+ > 1e-04") as e:
        parity.run_gate(stage, text.description, text.tokens, ckpt.model)
    assert "cache max" not in str(e.value) and "batch max" not in str(e.value)  # the graph agrees with itself


def test_left_pad_positions_count_real_tokens():
    ids, mask, positions = left_pad([np.array([5, 6, 7]), np.array([8])], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_verify_reruns_the_gate(tiny_bundle, export_checkpoint, capsys):
    assert main(["verify", str(tiny_bundle), "--checkpoint", str(export_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "files match their hashes" in out and "greedy" in out and "prefill" in out
    assert main(["verify", str(tiny_bundle)]) == 0  # without PyTorch: the graph's own checks
    assert "greedy" not in capsys.readouterr().out


def test_verify_detects_a_tampered_model(tiny_bundle, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    (copy / "model.onnx").write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.onnx does not match its manifest hash" in err and "\n" not in err


def test_verify_refuses_a_different_checkpoint(tiny_bundle, export_checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(export_checkpoint, other)
    ckpt = checkpoint.load_checkpoint(other)
    with torch.no_grad():
        ckpt.model.wpe.weight.add_(0.01)
    checkpoint.save_checkpoint(other, ckpt.model, ckpt.train, step=ckpt.step + 1)
    with pytest.raises(UserError, match="was not exported from"):
        bundle.verify_bundle(tiny_bundle, other)
