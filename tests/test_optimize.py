"""``gptedge optimize`` on the shared test bundle: fusions, parity, the tied matrix, atomic replacement.

Every test works on its own copy of the session's exported bundle (``tiny_bundle``)."""

from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from gptedge.cli import main
from gptedge.errors import UserError
from gptedge.export import fuse_attention, optimize, tied_embedding
from gptedge.export.bundle import fp32_variant
from gptedge.export.compat import oldest_onnxruntime
from gptedge.export.parity import check_batch
from gptedge.export.writing import save_graph
from gptedge.runtime import contract
from gptedge.runtime.decoder import Decoder
from cli_checks import one_line_error, snapshot


def _rewrite_fp32(bundle: Path, edit) -> None:
    """Apply ``edit`` to the bundle's fp32 graph and record the new file in the manifest, as an
    exporter would have written it."""
    manifest = contract.read_bundle(bundle)
    model = onnx.load(str(bundle / manifest.variants["fp32"].file))
    edit(model)
    files = save_graph(model, bundle / manifest.variants["fp32"].file)
    manifest.variants["fp32"] = fp32_variant(bundle, files, oldest_onnxruntime(model))
    contract.write_manifest(bundle, manifest)


@pytest.fixture(scope="module")
def optimized(tmp_path_factory, tiny_bundle) -> tuple[Path, str]:
    """A copy of the shared bundle after ``gptedge optimize``, and what the command printed."""
    bundle = tmp_path_factory.mktemp("optimize") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    capture = tmp_path_factory.mktemp("optimize_out") / "stdout.txt"
    with open(capture, "w") as out, contextlib.redirect_stdout(out):
        assert main(["optimize", str(bundle), "--quiet"]) == 0
    return bundle, capture.read_text()


def test_op_counts_show_the_fusions(optimized, tiny_bundle):
    bundle, printed = optimized
    manifest = contract.read_bundle(bundle)  # hashes of every variant verified
    record = manifest.provenance.optimized
    n_layer = manifest.model.n_layer
    before, after = record.ops_before, record.ops_after
    assert before.get("LayerNormalization") == 2 * n_layer + 1 and "com.microsoft.SkipLayerNormalization" not in before
    assert after.get("com.microsoft.SkipLayerNormalization") == 2 * n_layer + 1 and "LayerNormalization" not in after
    assert after.get("com.microsoft.BiasGelu") == n_layer and "Gelu" not in after  # the test model's GELU is exact
    assert after.get("com.microsoft.GroupQueryAttention") == n_layer and "Softmax" not in after
    assert "com.microsoft.MultiHeadAttention" not in after
    assert before.get("Split") == n_layer and "Split" not in after  # q, k, v go in packed
    assert record.attention.endswith(f"shared cache in {n_layer} of {n_layer} layers")
    assert sum(after.values()) < sum(before.values()) / 2
    assert "com.microsoft.GroupQueryAttention" in printed and "op type" in printed and "parity" in printed
    model = onnx.load(str(bundle / manifest.variants["fp32"].file))
    assert fuse_attention.fused_layers(model, manifest.model, "GroupQueryAttention") == n_layer
    # The contract's IO, with the shared layout's cache sizes.
    assert manifest.variants["fp32"].cache_layout == "shared"
    for values, specs in ((model.graph.input, contract.graph_inputs(manifest.model, cache_layout="shared")),
                          (model.graph.output, contract.graph_outputs(manifest.model, cache_layout="shared"))):
        assert [v.name for v in values] == [s.name for s in specs]
        assert [tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim) for v in values] == \
            [s.shape for s in specs]


def test_tied_matrix_stored_once_and_file_not_bigger(optimized, tiny_bundle):
    bundle, _ = optimized
    manifest = contract.read_bundle(bundle)
    shape = manifest.model
    model = onnx.load(str(bundle / manifest.variants["fp32"].file))
    token_tables = [t for t in model.graph.initializer if sorted(t.dims) == sorted([shape.vocab_size, shape.n_embd])]
    assert len(token_tables) == 1
    assert tied_embedding.find(model) is not None  # the head's form the quantizers recognise
    original = contract.read_bundle(tiny_bundle).variants["fp32"]
    assert manifest.variants["fp32"].size_bytes <= original.size_bytes * 1.03
    # The old graph is gone, the new one is the fp32 variant; nothing else was left behind.
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        [contract.MANIFEST_FILE, contract.TOKENIZER_FILE, manifest.variants["fp32"].file]
    )


def test_optimized_bundle_matches_the_original(optimized, tiny_bundle):
    """Independent of the command's own check: the runtime's greedy tokens and the export gate's
    left-padded batch check on the fused graph."""
    from gptedge import runtime

    bundle, _ = optimized
    record = contract.read_bundle(bundle).provenance.optimized
    assert record.parity.max_abs_logit_diff <= 1e-4 and record.parity.left_padding > 0
    prompt = [5, 17, 42, 7, 99]
    settings = dict(max_new_tokens=24, temperature=0.0, ignore_eos=True)
    ours = runtime.load(bundle, variant="fp32", provider="cpu").generate(prompt, **settings).token_ids
    theirs = runtime.load(tiny_bundle, variant="fp32", provider="cpu").generate(prompt, **settings).token_ids
    assert ours == theirs
    manifest = contract.read_bundle(bundle)
    decoder = Decoder(bundle / manifest.variants["fp32"].file, manifest)
    tokens = np.random.default_rng(1).integers(2, manifest.model.vocab_size, 200)
    assert check_batch(decoder, tokens, manifest.pad_token_id).max_abs_diff <= 1e-4


def test_second_run_is_a_no_op(optimized, capsys):
    bundle, _ = optimized
    before = snapshot(bundle)
    assert main(["optimize", str(bundle), "--quiet"]) == 0
    assert "already optimised" in capsys.readouterr().out
    assert snapshot(bundle) == before


def test_tampered_graph_is_refused(tiny_bundle, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    before = snapshot(bundle)
    err = one_line_error(capsys, ["optimize", str(bundle), "--quiet"])
    assert "model.onnx does not match its manifest hash" in err
    assert snapshot(bundle) == before


def test_failed_parity_leaves_the_bundle_unchanged(tiny_bundle, tmp_path, capsys, monkeypatch):
    """Sabotage the fused graph (attention without its padding mask): the real parity check must refuse it."""
    real_fuse = optimize.fuse

    def fuse_without_mask(model, shape):
        fused, fusions = real_fuse(model, shape)
        for node in fused.graph.node:
            if node.op_type == "GroupQueryAttention":
                node.input[10] = ""  # attention_bias: the padding mask
        return fused, fusions

    monkeypatch.setattr(optimize, "fuse", fuse_without_mask)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = snapshot(bundle)
    err = one_line_error(capsys, ["optimize", str(bundle), "--quiet"])
    assert "logits differ from the original's" in err and "left unchanged" in err
    assert snapshot(bundle) == before


def test_disk_full_leaves_the_bundle_unchanged(tiny_bundle, tmp_path, monkeypatch):
    real_save = optimize.save_graph

    def save_then_fail(model, path, external_data=None):
        real_save(model, path, external_data)  # the new graph is on disk when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(optimize, "save_graph", save_then_fail)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = snapshot(bundle)
    with pytest.raises(UserError, match="no space left on the device"):
        optimize.optimize_bundle(bundle, quiet=True)
    assert snapshot(bundle) == before


def test_tanh_gelu_keeps_its_form(tiny_bundle, tmp_path):
    """GPT-2's tanh GELU must not become the exact BiasGelu. onnxruntime.transformers' optimizer
    makes exactly that mistake; ``gelu_forms`` sees it, and ``gptedge optimize`` does not make it."""
    from onnxruntime.transformers.optimizer import optimize_model

    def to_tanh(model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            if node.op_type == "Gelu":
                del node.attribute[:]
                node.attribute.append(onnx.helper.make_attribute("approximate", "tanh"))

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    _rewrite_fp32(bundle, to_tanh)
    manifest = contract.read_bundle(bundle)
    tanh_graph = onnx.load(str(bundle / "model.onnx"))
    assert optimize.gelu_forms(tanh_graph) == {"tanh"}
    shape = manifest.model
    wrong = optimize_model(tanh_graph, model_type="gpt2", num_heads=shape.n_head, hidden_size=shape.n_embd, opt_level=0)
    assert optimize.gelu_forms(wrong.model) == {"exact"}  # the known trap, caught by the check

    result = optimize.optimize_bundle(bundle, quiet=True)
    assert result.record.gelu == "tanh" and "com.microsoft.BiasGelu" not in result.record.ops_after
    assert result.record.parity.max_abs_logit_diff <= 1e-4
    contract.read_bundle(bundle)


def test_external_data_bundle_keeps_its_layout(tiny_bundle, tmp_path):
    """A bundle with its weights in model.onnx.data (the >2 GB layout, forced on the small model)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = contract.read_bundle(bundle)
    files = save_graph(onnx.load(str(bundle / "model.onnx")), bundle / "model.onnx", external_data=True)
    manifest.variants["fp32"] = fp32_variant(bundle, files, manifest.variants["fp32"].min_onnxruntime)
    contract.write_manifest(bundle, manifest)

    optimize.optimize_bundle(bundle, quiet=True)
    fp32 = contract.read_bundle(bundle).variants["fp32"]
    assert (fp32.file, fp32.data_file) == ("model.opt.onnx", "model.opt.onnx.data")
    assert not (bundle / "model.onnx").exists() and not (bundle / "model.onnx.data").exists()
    # as readable as the graph (onnx creates the weights' file 0600)
    assert (bundle / fp32.data_file).stat().st_mode & 0o777 == (bundle / fp32.file).stat().st_mode & 0o777


def test_contract_names_for_symbolic_sizes():
    """torch.export writes the mask's query length as an expression; the contract's identity
    total = past + sequence turns it back into the sequence length."""
    name = fuse_attention._contract_name
    assert name("Max(0, total_sequence_length - Min(past_sequence_length, total_sequence_length))") == "sequence_length"
    assert name("past_sequence_length + sequence_length") == "total_sequence_length"
    assert name("-past_sequence_length + total_sequence_length") == "sequence_length"
    assert name("batch_size") == "batch_size" and name("2*sequence_length") == "2*sequence_length"
    assert name("unk__17") == "unk__17"
    assert name("exit(sequence_length)") == "exit(sequence_length)"  # never evaluated: not our names
