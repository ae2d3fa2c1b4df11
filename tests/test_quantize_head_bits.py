"""``gptedge quantize --head-bits``: the int4 variant's output head (and the token table it shares)
at 4 or 8 bits. The default is the one ``quantized_bundle`` made; the other choice is made once
here, on a copy of the shared bundle, and the two graphs and records are compared."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from cli_checks import one_line_error, snapshot
from gptedge.cli import main
from gptedge.errors import UserError
from gptedge.export import quantize
from gptedge.export.quantize_int4 import HEAD_BITS, HEAD_BITS_CHOICES
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
    (["--to", "int8", "--head-bits", "4"], "--head-bits sets the int4 variant's output head, and int8 has none"),
    (["--target", "gpu", "--head-bits", "8"], "and fp16 has none: leave it out"),
])
def test_head_bits_without_int4_is_one_line(capsys, quantized_bundle, argv, match):
    before = snapshot(quantized_bundle)
    err = one_line_error(capsys, ["quantize", str(quantized_bundle), *argv])
    assert match in err and err.startswith("gptedge quantize: error: ")
    assert snapshot(quantized_bundle) == before


@pytest.mark.parametrize("value, match", [("3", "invalid choice: 3 (choose from 4, 8)"),
                                          ("four", "invalid int value: 'four'")])
def test_head_bits_not_a_choice_is_refused_while_parsing(capsys, tmp_path, value, match):
    with pytest.raises(SystemExit) as info:
        main(["quantize", str(tmp_path), "--to", "int4", "--head-bits", value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and match in err and "--head-bits" in err


def test_library_callers_get_the_same_errors(tmp_path):
    """Checked before the bundle is opened, so the folder need not be one."""
    with pytest.raises(UserError, match="int8 has none"):
        quantize.quantize_bundle(tmp_path, ["int8"], head_bits=4)
    with pytest.raises(UserError, match="--head-bits 6 is not a choice: use 4 or 8"):
        quantize.quantize_bundle(tmp_path, ["int4"], head_bits=6)
    assert quantize.head_bits_for(["int8", "int4"], None) is None
    assert quantize.head_bits_for(["int8", "int4"], 4) == 4


def test_help_names_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--head-bits {4,8}" in out and f"(default: {HEAD_BITS}," in out
    assert f"output head and token table at {HEAD_BITS} bits" in out
