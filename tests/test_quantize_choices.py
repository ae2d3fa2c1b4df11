"""The choices ``gptedge quantize`` offers per precision (``quantize.Choices``).

``--head-bits``: the int4 variant's output head (and the token table it shares) at 4 or 8 bits.
``--int8-format``: int8 as per-channel MatMulInteger (the default) or 8-bit MatMulNBits blocks.
The defaults are what ``quantized_bundle`` made; each other choice is made once here, on a copy of
the shared bundle, and the graphs, records and figures are compared."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from cli_checks import one_line_error, snapshot
from gptedge.cli import main
from gptedge.errors import UserError
from gptedge.export import quantize
from gptedge.export.quantize_int4 import HEAD_BITS, HEAD_BITS_CHOICES, block_size
from gptedge.export.quantize_int8 import FORMATS
from gptedge.runtime import contract

OTHER_BITS = next(b for b in HEAD_BITS_CHOICES if b != HEAD_BITS)


@pytest.fixture(scope="module")
def other_head_bundle(tmp_path_factory, tiny_bundle) -> Path:
    """A copy of the shared fp32 bundle with an int4 variant whose head has the non-default bits."""
    out = tmp_path_factory.mktemp("head_bits") / "bundle"
    shutil.copytree(tiny_bundle, out)
    assert main(["quantize", str(out), "--to", "int4", "--head-bits", str(OTHER_BITS), "--quiet"]) == 0
    return out


def head_and_table_bits(bundle: Path) -> tuple[int, int]:
    """The bits of the int4 graph's output head (the MatMulNBits with N = vocabulary) and of the
    GatherBlockQuantized that reads the token table (its scales have one row per token); every
    other MatMulNBits must stay at 4 bits."""
    manifest = contract.read_bundle(bundle)
    model = onnx.load(str(bundle / manifest.variants["int4"].file))
    V = manifest.model.vocab_size
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}

    def attrs(node: onnx.NodeProto) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    matmuls = [attrs(n) for n in model.graph.node if n.op_type == "MatMulNBits"]
    heads = [a["bits"] for a in matmuls if a["N"] == V]
    others = {a["bits"] for a in matmuls if a["N"] != V}
    tables = [attrs(n).get("bits", 4) for n in model.graph.node
              if n.op_type == "GatherBlockQuantized" and dims.get(n.input[2], (0,))[0] == V]
    assert len(heads) == 1 and len(tables) == 1 and others == {4}, (heads, tables, others)
    return heads[0], tables[0]


def test_default_head_bits_are_recorded(quantized_bundle):
    record = contract.read_bundle(quantized_bundle).provenance.quantization["int4"]
    assert record.output_head_bits == HEAD_BITS and record.bits == 4
    assert record.token_embedding.startswith(f"{HEAD_BITS}-bit blocks shared with the output head")
    head, table = head_and_table_bits(quantized_bundle)
    assert head == table == HEAD_BITS


def test_the_other_choice_changes_the_graph_the_size_and_the_record(quantized_bundle, other_head_bundle):
    manifest = contract.read_bundle(other_head_bundle, verify=True)
    record = manifest.provenance.quantization["int4"]
    assert record.output_head_bits == OTHER_BITS
    assert record.token_embedding.startswith(f"{OTHER_BITS}-bit blocks shared with the output head")
    head, table = head_and_table_bits(other_head_bundle)
    assert head == table == OTHER_BITS  # the head and the embedding read one table
    size = {bits: contract.read_bundle(b).variants["int4"].size_bytes
            for bits, b in ((HEAD_BITS, quantized_bundle), (OTHER_BITS, other_head_bundle))}
    V, C = manifest.model.vocab_size, manifest.model.n_embd
    # the table's packed bytes differ by V * C / 2; its scales are the same size either way
    assert size[8] - size[4] == pytest.approx(V * C // 2, rel=0.05), size


def test_the_other_choice_generates(other_head_bundle):
    import gptedge.runtime

    model = gptedge.runtime.load(other_head_bundle, variant="int4", provider="cpu")
    result = model.generate("The function", max_new_tokens=12, temperature=0, ignore_eos=True)
    assert len(result.token_ids) == 12 and result.text


@pytest.mark.parametrize("argv, match", [
    (["--to", "int8", "--head-bits", "4"], "--head-bits is for the int4 variant, and this command makes int8: "
                                           "leave it out, or quantize --to int4 (or --target cpu)"),
    (["--target", "gpu", "--head-bits", "8"], "and this command makes fp16: leave it out"),
    (["--to", "int4", "--int8-format", "blocks"], "--int8-format is for the int8 variant, and this command makes int4"),
])
def test_a_choice_for_another_precision_is_one_line(capsys, quantized_bundle, argv, match):
    before = snapshot(quantized_bundle)
    err = one_line_error(capsys, ["quantize", str(quantized_bundle), *argv])
    assert match in err and err.startswith("gptedge quantize: error: ")
    assert snapshot(quantized_bundle) == before


@pytest.mark.parametrize("flag, value, match", [
    ("--head-bits", "3", "invalid choice: 3 (choose from 4, 8)"),
    ("--head-bits", "four", "invalid int value: 'four'"),
    ("--int8-format", "rows", "invalid choice: 'rows' (choose from 'per-channel', 'blocks')"),
])
def test_not_a_choice_is_refused_while_parsing(capsys, tmp_path, flag, value, match):
    with pytest.raises(SystemExit) as info:
        main(["quantize", str(tmp_path), "--to", "int4", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and match in err and flag in err


def test_library_callers_get_the_same_errors(tmp_path):
    """Checked before the bundle is opened, so the folder need not be one."""
    with pytest.raises(UserError, match="this command makes int8"):
        quantize.quantize_bundle(tmp_path, ["int8"], choices=quantize.Choices(head_bits=4))
    with pytest.raises(UserError, match="--head-bits 6 is not a choice: use 4 or 8"):
        quantize.quantize_bundle(tmp_path, ["int4"], choices=quantize.Choices(head_bits=6))
    with pytest.raises(UserError, match="--int8-format 'Blocks' is not a choice: use per-channel or blocks"):
        quantize.quantize_bundle(tmp_path, ["int8"], choices=quantize.Choices(int8_format="Blocks"))
    with pytest.raises(UserError, match="--head-bits True is not a choice"):
        quantize.Choices(head_bits=True).check(["int4"])
    quantize.Choices(head_bits=8, int8_format="blocks").check(["int8", "int4"])


def test_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--head-bits {4,8}" in out and f"(default: {HEAD_BITS}," in out
    assert f"output head and token table at {HEAD_BITS} bits" in out
    assert "--int8-format {" + ",".join(FORMATS) + "}" in out and f"{FORMATS[0]} (default:" in out


# --int8-format blocks

@pytest.fixture(scope="module")
def int8_blocks_bundle(tmp_path_factory, tiny_bundle) -> Path:
    """A copy of the shared fp32 bundle with its int8 variant as 8-bit MatMulNBits blocks, evaluated."""
    from gptedge.export.evaluate import evaluate_bundle

    out = tmp_path_factory.mktemp("int8_blocks") / "bundle"
    shutil.copytree(tiny_bundle, out)
    assert main(["quantize", str(out), "--to", "int8", "--int8-format", "blocks", "--quiet"]) == 0
    evaluate_bundle(out, new_tokens=8, quiet=True)
    return out


def test_int8_blocks_graph_and_record(int8_blocks_bundle):
    manifest = contract.read_bundle(int8_blocks_bundle, verify=True)
    model = onnx.load(str(int8_blocks_bundle / manifest.variants["int8"].file))
    ops = {n.op_type for n in model.graph.node}
    assert "MatMulInteger" not in ops and "DynamicQuantizeLinear" not in ops
    bits = {a.i for n in model.graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")
            for a in n.attribute if a.name == "bits"}
    assert bits == {8}  # every weight matrix, and the token table read from the head's bytes
    assert [n.op_type for n in model.graph.node].count("GatherBlockQuantized") == 1
    record = manifest.provenance.quantization["int8"]
    block = block_size(manifest.model.n_embd)
    assert (record.bits, record.block_size, record.reduce_range) == (8, block, None)
    assert "MatMulNBits" in record.method and record.token_embedding.startswith("8-bit blocks shared")
    assert manifest.variants["int8"].min_onnxruntime == "1.23"  # GatherBlockQuantized's bits attribute


def test_int8_blocks_quality_is_within_the_int8_budget(int8_blocks_bundle, quantized_bundle):
    """``gptedge eval``'s held-out perplexity within int8's +2 % of fp32, and on one window the
    logits about as close to fp32 as the per-channel format's (same fp32 graph, same tokens)."""
    import numpy as np

    from gptedge.runtime import Decoder

    variants = contract.read_bundle(int8_blocks_bundle).variants
    assert variants["int8"].metrics.perplexity <= variants["fp32"].metrics.perplexity * 1.02
    assert variants["int8"].metrics.top1_agreement >= 0.9 and variants["int8"].metrics.decode_tokens_per_s > 0
    manifest = contract.read_bundle(quantized_bundle)
    T = manifest.model.context_length
    ids = (np.arange(T, dtype=np.int64)[None, :] * 7 + 3) % manifest.model.vocab_size  # (1, T)

    def logits(bundle: Path, name: str) -> np.ndarray:
        decoder = Decoder(bundle / manifest.variants[name].file, manifest)
        out = decoder.empty_cache(1).run(ids, np.ones((1, T), np.int64), np.arange(T)[None])
        return out[0]

    fp32 = logits(quantized_bundle, "fp32")
    diff = {b: np.abs(logits(b, "int8") - fp32).max() for b in (quantized_bundle, int8_blocks_bundle)}
    assert diff[int8_blocks_bundle] <= 2 * diff[quantized_bundle] + 0.05, diff


def test_the_web_page_prefers_int4_to_int8_blocks(int8_blocks_bundle, quantized_bundle, tmp_path):
    """onnxruntime-web runs MatMulNBits slowly at either width: ``gptedge web``'s auto choice takes
    per-channel int8 first, then int4 (the smaller file), and int8 blocks only before fp32."""
    from gptedge.package.folder import Source
    from gptedge.web.site import choose

    def auto(bundle: Path) -> str:
        return choose(Source(bundle, contract.read_bundle(bundle), []), "auto")

    assert auto(quantized_bundle) == "int8"  # per-channel, beside int4
    assert auto(int8_blocks_bundle) == "int8"  # blocks, beside fp32 only
    both = tmp_path / "bundle"
    shutil.copytree(int8_blocks_bundle, both)
    assert main(["quantize", str(both), "--to", "int4", "--quiet"]) == 0
    assert auto(both) == "int4"
