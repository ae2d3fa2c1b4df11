"""``gptedge package``: the folders it writes are valid bundles the real runtimes load, the mobile
target's ORT-format files run with the .onnx file's results, and every bad input is one line with
nothing written. (onnxruntime-genai, optimum and transformers.js are checked in their own modules.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import gptedge.runtime
from cli_checks import one_line_error, snapshot
from gptedge.cli import main
from gptedge.package import folder as package_folder
from gptedge.package import mobile, transformersjs
from gptedge.runtime import contract
from gptedge.runtime.next_token import _logits

PROMPT = "The for statement"


@pytest.fixture(scope="module")
def all_packages(tmp_path_factory, quantized_bundle, optimized_bundle):
    """``--for all`` of both bundles: the exported graph with every precision, and the optimized one."""
    out = tmp_path_factory.mktemp("packages")
    for name, bundle in (("exported", quantized_bundle), ("optimized", optimized_bundle)):
        assert main(["package", str(bundle), str(out / name), "--for", "all", "--quiet"]) == 0
    return out


def test_every_package_folder_is_a_valid_bundle(all_packages):
    folders = [m.parent for m in all_packages.rglob(contract.MANIFEST_FILE)]
    assert len(folders) >= 2 * 4
    for folder in folders:
        manifest = contract.read_bundle(folder, verify=True)
        assert manifest.variants
    notes = (all_packages / "exported" / package_folder.NOTES_FILE).read_text()
    assert "fp16 left out" in notes  # mobile: a GPU variant, said in one line


def test_graph_files_are_hard_links_not_copies(all_packages, quantized_bundle):
    packaged = all_packages / "exported" / "hf" / "model.int4.onnx"
    assert packaged.stat().st_ino == (quantized_bundle / "model.int4.onnx").stat().st_ino


@pytest.mark.parametrize("layout,variant", [("exported", "fp32"), ("exported", "int8"), ("exported", "int8-static"),
                                            ("optimized", "fp32")])
def test_mobile_ort_files_run_like_the_onnx_files(all_packages, quantized_bundle, optimized_bundle, layout, variant):
    """Each .ort file, loaded by onnxruntime: prefill logits within 1e-4 of the .onnx, and the same
    16 greedy tokens (prefill and decode steps)."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    bundle = {"exported": quantized_bundle, "optimized": optimized_bundle}[layout]
    folder = all_packages / layout / "mobile"
    ort_model = gptedge.runtime.load(folder, variant=variant)
    onnx_model = gptedge.runtime.load(bundle, variant=variant)
    path = folder / ort_model.manifest.variants[variant].file
    assert path.suffix == ".ort"
    assert InferenceSession.GetRootAs(path.read_bytes(), 0).OrtVersion().decode() == mobile.ORT_FORMAT
    ids = onnx_model.encode(PROMPT)
    assert np.abs(_logits(ort_model.decoder, ids) - _logits(onnx_model.decoder, ids)).max() <= 1e-4
    a = ort_model.generate(PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True)
    b = onnx_model.generate(PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True)
    assert a.token_ids == b.token_ids


def test_mobile_keeps_4bit_token_tables_as_onnx(all_packages):
    """The ORT format has no 4-bit tensor type: int4's token table would make an .ort file that
    onnxruntime refuses, so the variant stays .onnx (full mobile builds load it), said in a note."""
    folder = all_packages / "exported" / "mobile"
    assert contract.read_bundle(folder, verify=True).variants["int4"].file.endswith(".onnx")
    assert "int4 kept as .onnx" in (all_packages / "exported" / package_folder.NOTES_FILE).read_text()


def test_mobile_files_run_on_the_phone_packages_onnxruntime(all_packages):
    """The optimized graph needs onnxruntime 1.32; phones ship older ones: its .ort file is made
    from the graph without GroupQueryAttention's 17th input (checked above to give the same tokens)."""
    for layout in ("exported", "optimized"):
        for v in contract.read_bundle(all_packages / layout / "mobile").variants.values():
            assert contract.version_tuple(v.min_onnxruntime) <= contract.version_tuple(mobile.ONNXRUNTIME)


def test_mobile_side_files(all_packages):
    folder = all_packages / "optimized" / "mobile"
    ops = (folder / mobile.OPERATORS_FILE).read_text()
    assert "com.microsoft;1;" in ops and "GroupQueryAttention" in ops and str(folder.parent) not in ops
    report = (folder / mobile.REPORT_FILE).read_text()
    assert "| fp32 | NNAPI |" in report and "| fp32 | CoreML MLProgram |" in report


def test_transformersjs_gets_the_optimized_graph_in_a_form_onnxruntime_1_30_runs(all_packages, optimized_bundle):
    """The optimized graph needs onnxruntime 1.32 (GroupQueryAttention's 17th input); transformers.js
    runs 1.30: the package holds the graph without that input, and its logits are unchanged."""
    folder = all_packages / "optimized" / "transformersjs"
    entry = contract.read_bundle(folder).variants["fp32"]
    assert entry.file == transformersjs.model_file("fp32")
    assert contract.version_tuple(entry.min_onnxruntime) <= contract.version_tuple(transformersjs.ONNXRUNTIME)
    ours = gptedge.runtime.load(folder, variant="fp32")
    original = gptedge.runtime.load(optimized_bundle, variant="fp32")
    ids = original.encode(PROMPT)
    assert np.abs(_logits(ours.decoder, ids) - _logits(original.decoder, ids)).max() <= 1e-5


def test_genai_hf_side_files_name_our_tokens_and_shape(all_packages, quantized_bundle):
    manifest = contract.read_bundle(quantized_bundle)
    config = json.loads((all_packages / "exported" / "hf" / "config.json").read_text())
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["vocab_size"], config["n_positions"]) == (
        manifest.model.n_layer, manifest.model.n_head, manifest.model.n_embd, manifest.model.vocab_size,
        manifest.model.context_length)
    tok = json.loads((all_packages / "exported" / "hf" / "tokenizer_config.json").read_text())
    assert tok["eos_token"] == "<|endoftext|>" and tok["add_bos_token"] is False


def test_writing_again_replaces_our_package(tmp_path, quantized_bundle, capsys):
    out = tmp_path / "pkg"
    assert main(["package", str(quantized_bundle), str(out), "--for", "hf", "--variant", "int4", "-q"]) == 0
    assert main(["package", str(quantized_bundle), str(out), "--for", "hf", "--variant", "int8", "-q"]) == 0
    assert set(contract.read_bundle(out).variants) == {"int8"}
    assert not (out / "model.int4.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no staging folder, no lock file left


@pytest.fixture
def damaged_bundle(tmp_path, quantized_bundle):
    bundle = tmp_path / "damaged"
    shutil.copytree(quantized_bundle, bundle)
    data = bytearray((bundle / "model.int8.onnx").read_bytes())
    data[-1] ^= 1
    (bundle / "model.int8.onnx").write_bytes(bytes(data))
    return bundle


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, quantized_bundle, damaged_bundle, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    cases = [
        (["package", str(quantized_bundle), str(tmp_path / "a"), "--for", "hf", "--variant", "int3"],
         "bundle has no variant 'int3'"),
        (["package", str(quantized_bundle), str(theirs), "--for", "hf"], "is not a package gptedge wrote"),
        (["package", str(damaged_bundle), str(tmp_path / "b"), "--for", "genai"], "model.int8.onnx"),
        (["package", str(tmp_path / "nothing"), str(tmp_path / "c"), "--for", "genai"], "nothing"),
        (["package", str(quantized_bundle), str(quantized_bundle / "inside"), "--for", "hf"], "inside the bundle"),
        (["package", str(quantized_bundle), str(tmp_path / "d"), "--for", "mobile", "--variant", "fp16"],
         "no chosen variant runs on mobile: fp16 left out"),
    ]
    for argv, expected in cases:
        assert expected in one_line_error(capsys, argv)
    assert snapshot(tmp_path) == before | {k: v for k, v in snapshot(tmp_path).items() if k.startswith("damaged/")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "theirs"]


def test_unknown_target_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as info:
        main(["package", "B", "OUT", "--for", "android"])
    assert info.value.code == 2
    assert "invalid choice: 'android'" in capsys.readouterr().err
