"""``gptedge quantize`` on the shared test bundle: every variant loads and generates, the tied matrix is
stored once, the manifest stays valid, and bad input changes nothing.

The happy path runs once per session (``quantized_bundle``); tests that change a bundle work on their
own copy of ``tiny_bundle``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from gptedge.cli import main
from gptedge.errors import UserError
from gptedge.export import quantize
from gptedge.export.quantize_int8 import reduce_range
from gptedge.runtime import contract
from gptedge.runtime.decoder import Decoder
from blockers import blocking
from cli_checks import one_line_error, snapshot


@pytest.fixture
def bundle(tmp_path, tiny_bundle) -> Path:
    """A private copy of the shared fp32 bundle."""
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    return out


def test_every_variant_is_listed_with_its_file_hash_and_providers(quantized_bundle):
    manifest = contract.read_bundle(quantized_bundle, verify=True)
    assert list(manifest.variants) == ["int8", "int4", "fp32", "int8-static", "fp16"]  # the CPU preference order
    for name, v in manifest.variants.items():
        assert v.precision == name
        assert v.file == ("model.onnx" if name == "fp32" else f"model.{name}.onnx")
    assert manifest.variants["fp16"].providers == ["cuda", "directml", "webgpu"]
    assert manifest.variants["fp16"].cache_dtype == "float16"
    assert "qnn" in manifest.variants["int8-static"].providers and "nnapi" in manifest.variants["int8-static"].providers
    record = manifest.provenance.quantization
    assert set(record) == {"int8", "int4", "fp16", "int8-static"}
    assert (record["int8"].reduce_range, record["int8"].reduce_range_reason) == reduce_range()
    assert record["int4"].block_size == 64 and record["int4"].accuracy_level == 4  # the longest dividing n_embd 64


@pytest.mark.parametrize("name", ["fp32", "int8", "int4", "int8-static"])
def test_variant_loads_in_the_runtime_and_generates(quantized_bundle, name):
    import gptedge.runtime

    model = gptedge.runtime.load(quantized_bundle, variant=name, provider="cpu")
    assert model.variant == name
    result = model.generate("The function", max_new_tokens=12, temperature=0, ignore_eos=True)
    assert len(result.token_ids) == 12 and result.text


def test_auto_picks_int8_on_cpu_and_never_fp16(quantized_bundle):
    import gptedge.runtime

    assert gptedge.runtime.load(quantized_bundle, provider="cpu").variant == "int8"
    with pytest.raises(UserError, match="does not run on cpu"):
        gptedge.runtime.load(quantized_bundle, variant="fp16", provider="cpu")


def test_fp16_graph_runs_with_a_float16_cache(quantized_bundle):
    """No GPU here: onnxruntime's CPU provider still runs the graph, which proves its IO contract."""
    manifest = contract.read_bundle(quantized_bundle)
    v = manifest.variants["fp16"]
    decoder = Decoder(quantized_bundle / v.file, manifest)
    ids = np.array([[5, 6, 7]], dtype=np.int64)
    cache = decoder.empty_cache(1)
    cache.run(ids, np.ones((1, 3), np.int64), np.arange(3)[None])
    logits = cache.run(ids[:, :1], np.ones((1, 4), np.int64), np.array([[3]]))
    assert logits.dtype == np.float32 and logits.shape == (1, 1, manifest.model.vocab_size)
    assert all(c.dtype == np.float16 and c.shape[2] == 4 for c in cache.host())


def test_tied_token_matrix_is_stored_once(quantized_bundle):
    """The exported graph shares one (V, C) table between the embedding and the output head; every
    variant must keep a single copy of it (in whatever format), not a transposed second one."""
    manifest = contract.read_bundle(quantized_bundle)
    V, C = manifest.model.vocab_size, manifest.model.n_embd
    for name, v in manifest.variants.items():
        model = onnx.load(str(quantized_bundle / v.file))
        tables = [t.name for t in model.graph.initializer if V in t.dims and int(np.prod(t.dims)) >= V * C // 2]
        assert len(tables) == 1, f"{name}: {tables}"


def test_sizes_shrink(quantized_bundle):
    """Looser than the issue's budgets (0.30 and 0.20 of fp32, measured by gptedge eval on the default
    model): at the test model's 64-wide matrices, the parts that stay fp32 (position table in int8,
    biases, norms, per-channel scales) and the graph itself are a larger share of the file."""
    manifest = contract.read_bundle(quantized_bundle)
    fp32 = manifest.variants["fp32"].size_bytes
    ratio = {name: v.size_bytes / fp32 for name, v in manifest.variants.items()}
    assert ratio["int8"] < 0.40 and ratio["int4"] < 0.30 and ratio["int8-static"] < 0.40
    assert ratio["int4"] < ratio["int8"] and 0.45 < ratio["fp16"] < 0.55


def test_int8_static_keeps_the_attention_mask_float(quantized_bundle):
    """The mask's -3.4e38 fill calibrated as uint8 wipes out the attention scores: its Add and the
    softmax must not be wrapped in QuantizeLinear/DequantizeLinear."""
    manifest = contract.read_bundle(quantized_bundle)
    model = onnx.load(str(quantized_bundle / manifest.variants["int8-static"].file))
    producers = {out: n for n in model.graph.node for out in n.output}
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == manifest.model.n_layer
    for node in softmaxes:
        assert producers[node.input[0]].op_type == "Add"
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 4 * manifest.model.n_layer


def test_quantizing_twice_is_refused_and_changes_nothing(capsys, quantized_bundle):
    before = snapshot(quantized_bundle)
    for argv in (["--to", "int8"], ["--target", "cpu"], ["--target", "npu"]):
        err = one_line_error(capsys, ["quantize", str(quantized_bundle), *argv])
        assert "already has the" in err and "--force" in err
    assert snapshot(quantized_bundle) == before


def test_unknown_precision_or_target(capsys, quantized_bundle):
    before = snapshot(quantized_bundle)
    assert "unknown precision 'int3'" in one_line_error(capsys, ["quantize", str(quantized_bundle), "--to", "int3"])
    assert "unknown target 'tpu'" in one_line_error(capsys, ["quantize", str(quantized_bundle), "--target", "tpu"])
    assert snapshot(quantized_bundle) == before


@pytest.mark.parametrize("damage", ["tampered", "missing"])
def test_damaged_fp32_graph_is_refused(capsys, bundle, damage):
    path = bundle / "model.onnx"
    if damage == "tampered":
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    else:
        path.unlink()
    before = snapshot(bundle)
    err = one_line_error(capsys, ["quantize", str(bundle), "--to", "int8"])
    assert ("does not match its manifest hash" if damage == "tampered" else "is missing") in err
    assert snapshot(bundle) == before


def test_calibration_text_problems(capsys, bundle, tmp_path):
    before = snapshot(bundle)
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    err = one_line_error(capsys, ["quantize", str(bundle), "--to", "int8-static", "--text", str(empty)])
    assert "calibration text" in err and "is empty" in err
    err = one_line_error(capsys, ["quantize", str(bundle), "--to", "int8", "--text", str(empty)])
    assert "leave it out" in err
    err = one_line_error(capsys, ["quantize", str(bundle), "--to", "int8-static", "--text", str(tmp_path / "nope.txt")])
    assert "does not exist" in err
    assert snapshot(bundle) == before


def test_calibration_from_a_text_file(bundle, tmp_path):
    text = tmp_path / "calibration.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    assert main(["quantize", str(bundle), "--to", "int8-static", "--text", str(text), "-q"]) == 0
    record = contract.read_bundle(bundle).provenance.quantization["int8-static"]
    assert "windows of 64 tokens" in record.calibration


def test_a_failed_conversion_leaves_the_bundle_untouched(bundle, monkeypatch):
    """Fault injection: the converted graph fails its check after being written under a temporary
    name; nothing of it may remain, and the manifest is the one from before."""

    def broken(path, manifest):
        raise RuntimeError("simulated broken graph")

    before = snapshot(bundle)
    monkeypatch.setattr(quantize, "smoke_test", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        quantize.quantize_bundle(bundle, ["int4"], quiet=True)
    assert snapshot(bundle) == before
    contract.read_bundle(bundle)


def test_force_repairs_a_damaged_variant(bundle, capsys):
    assert main(["quantize", str(bundle), "--to", "int8", "-q"]) == 0
    good = contract.read_bundle(bundle).variants["int8"].sha256
    (bundle / "model.int8.onnx").write_bytes(b"not a graph")
    with pytest.raises(UserError, match="does not match its manifest hash"):
        contract.read_bundle(bundle)
    assert main(["quantize", str(bundle), "--to", "int8", "--force", "-q"]) == 0
    manifest = contract.read_bundle(bundle)  # valid again, with the same (deterministic) graph
    assert manifest.variants["int8"].sha256 == good
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.int8.onnx", "model.onnx", "tokenizer.json"]


def test_quantize_help_documents_the_targets(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    for target, precisions in quantize.TARGETS.items():
        assert target in out and all(p in out for p in precisions)


def test_quantize_after_optimize(bundle):
    """The optimizer's fused graph (SkipLayerNormalization, BiasGelu, GroupQueryAttention over the
    shared cache) is the one users quantize: every precision must take it, keep the shared cache
    and the tied matrix once, and agree with it. Both commands run where torch cannot be imported:
    they work on ONNX files alone, so they start without torch's second of imports."""
    commands = [["optimize", str(bundle), "--quiet"]] + [
        ["quantize", str(bundle), *argv, "--quiet"] for argv in (["--target", "cpu"], ["--to", "fp16"], ["--to", "int8-static"])]
    script = blocking(("torch",)) + f"from gptedge.cli import main\nfor argv in {commands!r}:\n    assert main(argv) == 0, argv\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    manifest = contract.read_bundle(bundle)
    V, C = manifest.model.vocab_size, manifest.model.n_embd
    ids = np.arange(1, manifest.model.context_length + 1, dtype=np.int64)[None, :] % V  # (1, T)
    T = ids.shape[1]
    logits = {}
    for name, v in manifest.variants.items():
        model = onnx.load(str(bundle / v.file))
        assert any(n.domain == "com.microsoft" and n.op_type == "GroupQueryAttention" for n in model.graph.node), name
        assert v.cache_layout == "shared", name
        tables = [t.name for t in model.graph.initializer if V in t.dims and int(np.prod(t.dims)) >= V * C // 2]
        assert len(tables) == 1, f"{name}: {tables}"
        decoder = Decoder(bundle / v.file, manifest)
        logits[name] = decoder.empty_cache(1).run(ids, np.ones((1, T), np.int64), np.arange(T)[None])
    for name, out in logits.items():  # int4 (4-bit head, blocks of 64 here) flips more near-ties of this
        # seconds-trained model's flat predictions; its perplexity budget is test_eval's
        assert (out.argmax(-1) == logits["fp32"].argmax(-1)).mean() >= (0.8 if name == "int4" else 0.9), name
    # Made from the optimized graph, the QDQ variant keeps onnxruntime-only ops: listed for the CPU only.
    assert manifest.variants["int8-static"].providers == ["cpu"]
    assert "before gptedge optimize" in manifest.provenance.quantization["int8-static"].npu_note


def test_int4_blocks_are_as_long_as_the_width_allows():
    from gptedge.export.quantize_int4 import block_size

    assert [block_size(w) for w in (768, 384, 256, 64, 96, 48)] == [128, 128, 128, 64, 32, 16]
