"""``gptedge export`` on bad input and bad luck: one-line errors, and never a partial bundle.

Tests that are about writing the bundle, not tracing it, reuse the shared bundle's graph instead
of tracing again (``graph.trace`` is swapped for a loader), which keeps them fast; the save, the
manifest and the parity gate still run for real."""

import errno
import json
import os
import shutil

import numpy as np
import onnx
import pytest

from gptedge.errors import UserError
from gptedge.export import bundle, graph
from gptedge.runtime import contract
from gptedge.runtime.decoder import Decoder
from cli_checks import one_line_error


@pytest.fixture
def reuse_trace(monkeypatch, tiny_bundle):
    """Make ``graph.trace`` return the shared bundle's graph (a fresh copy per call)."""
    monkeypatch.setattr(graph, "trace", lambda model: onnx.load(str(tiny_bundle / "model.onnx")))


def test_missing_checkpoint_files(capsys, export_checkpoint, tmp_path):
    assert "does not exist" in one_line_error(capsys, ["export", str(tmp_path / "nope"), str(tmp_path / "b")])
    broken = tmp_path / "ckpt"
    shutil.copytree(export_checkpoint, broken)
    (broken / json.loads((broken / "config.json").read_text())["weights"]).unlink()
    assert "missing its weights file" in one_line_error(capsys, ["export", str(broken), str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()


def test_mismatched_shapes(capsys, export_checkpoint, tmp_path):
    broken = tmp_path / "ckpt"
    shutil.copytree(export_checkpoint, broken)
    info = json.loads((broken / "config.json").read_text())
    info["model"]["n_embd"] *= 2
    (broken / "config.json").write_text(json.dumps(info))
    assert "do not fit config.json" in one_line_error(capsys, ["export", str(broken), str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()


def test_existing_output_is_refused_and_force_spares_non_bundles(capsys, export_checkpoint, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert "already exists: pass --force" in one_line_error(capsys, ["export", str(export_checkpoint), str(out)])
    err = one_line_error(capsys, ["export", str(export_checkpoint), str(out), "--force"])
    assert "is not a gptedge bundle" in err
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_force_replaces_a_bundle(reuse_trace, export_checkpoint, tiny_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    (out / "stale.txt").write_text("from the old bundle")
    result = bundle.export_bundle(export_checkpoint, out, force=True, quiet=True)
    assert result.manifest.parity.passed
    assert not (out / "stale.txt").exists() and contract.read_bundle(out).parity.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_interrupted_or_disk_full_export_leaves_nothing(reuse_trace, monkeypatch, export_checkpoint, tmp_path, failure):
    real_save = bundle.save_graph

    def save_then_fail(model, path, external_data=None):
        real_save(model, path, external_data)  # the file is half of the bundle when the failure hits
        raise failure

    monkeypatch.setattr(bundle, "save_graph", save_then_fail)
    out = tmp_path / "bundle"
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            bundle.export_bundle(export_checkpoint, out, quiet=True)
    else:
        with pytest.raises(UserError, match="no space left on the device"):
            bundle.export_bundle(export_checkpoint, out, quiet=True)
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary folder


def test_external_data_bundle(reuse_trace, export_checkpoint, tmp_path):
    """The >2 GB layout (weights in model.onnx.data), forced on the small model: hashed, gated, loadable."""
    out = tmp_path / "bundle"
    result = bundle.export_bundle(export_checkpoint, out, external_data=True, quiet=True)
    fp32 = result.manifest.variants["fp32"]
    assert fp32.data_file == "model.onnx.data" and fp32.data_size_bytes > 20 * fp32.size_bytes
    assert result.manifest.parity.passed
    manifest = contract.read_bundle(out)
    decoder = Decoder(out / "model.onnx", manifest)  # onnxruntime finds the data file beside the graph
    one_token = np.array([[3]]), np.ones((1, 1), np.int64), np.zeros((1, 1), np.int64)
    logits = decoder.empty_cache(1).run(*one_token)
    assert logits.shape == (1, 1, manifest.model.vocab_size)
    with open(out / "model.onnx.data", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(UserError, match="model.onnx.data does not match its manifest hash"):
        contract.read_bundle(out)


def test_parity_text_from_a_file(reuse_trace, export_checkpoint, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    err = one_line_error(capsys, ["export", str(export_checkpoint), str(tmp_path / "b"), "--text", str(short)])
    assert "has only" in err and "--text" in err
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(40)))
    result = bundle.export_bundle(export_checkpoint, tmp_path / "b", text_file=text, quiet=True)
    assert result.manifest.parity.text.startswith("text.txt")


def test_bundle_is_readable_like_any_new_folder(tiny_bundle):
    """Built under a private temporary name, the bundle still gets the usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    assert tiny_bundle.stat().st_mode & 0o777 == 0o777 & ~umask
    for name in ("manifest.json", "model.onnx", "tokenizer.json"):
        assert (tiny_bundle / name).stat().st_mode & 0o777 == 0o666 & ~umask
