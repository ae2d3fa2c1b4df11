"""Every bad input to gptedge train / import is one line on stderr, exit code 2, and leaves what
was already on disk exactly as it was."""

import hashlib
import shutil
from pathlib import Path

import pytest

from gptedge.cli import main

SMALL_TEXT = "The quick brown fox jumps over the lazy dog. " * 3


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(capsys, args: list[str], match: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gptedge {args[0]}: error: "), err
    assert match in err, err


@pytest.fixture()
def two_small_docs(tmp_path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "a.txt").write_text(SMALL_TEXT)
    (folder / "b.md").write_text(SMALL_TEXT.upper())
    return folder


@pytest.fixture()
def finished_run(tmp_path, trained_checkpoint) -> Path:
    """A copy of the shared run (the shared one must stay intact for other tests)."""
    run = tmp_path / "run"
    shutil.copytree(trained_checkpoint.parent, run)
    return run


def test_missing_empty_binary_and_non_utf8_corpus(capsys, tmp_path):
    out = str(tmp_path / "out")
    fails(capsys, ["train", str(tmp_path / "nope.txt"), "--out", out], "does not exist")
    (tmp_path / "empty.txt").write_text("  \n")
    fails(capsys, ["train", str(tmp_path / "empty.txt"), "--out", out], "is empty")
    (tmp_path / "blob.txt").write_bytes(b"\x7fELF\x00\x00\x01" * 50)
    fails(capsys, ["train", str(tmp_path / "blob.txt"), "--out", out], "looks binary")
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    fails(capsys, ["train", str(tmp_path / "latin1.txt"), "--out", out], "not UTF-8")
    (tmp_path / "docs").mkdir()
    fails(capsys, ["train", str(tmp_path / "docs"), "--out", out], "no .txt or .md files")
    assert not (tmp_path / "out").exists()


def test_corpus_smaller_than_a_window_or_the_vocab(capsys, tmp_path, two_small_docs):
    out = str(tmp_path / "out")
    fails(capsys, ["train", str(two_small_docs), "--out", out], "only supports a vocabulary")
    fails(capsys, ["train", str(two_small_docs), "--out", out, "--vocab-size", "260"], "corpus is too small")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, match", [
    (["--steps", "0"], "--steps 0 is out of range"),
    (["--seq-len", "1000"], "exceeds the model's context length 128"),
    (["--batch-size", "0"], "--batch-size 0 is out of range"),
    (["--lr", "-1"], "--lr -1.0 is out of range"),
    (["--dropout", "1.5"], "dropout=1.5 is out of range"),
    (["--vocab-size", "100"], "too small"),
])
def test_out_of_range_settings(capsys, tmp_path, flags, match):
    fails(capsys, ["train", "--out", str(tmp_path / "out"), *flags], match)
    assert not (tmp_path / "out").exists()


def test_out_folder_that_is_not_a_run(capsys, tmp_path, finished_run):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"not really a cat")
    before = snapshot(other)
    fails(capsys, ["train", "--out", str(other)], "already holds other files (cat.jpg)")
    assert snapshot(other) == before
    before = snapshot(finished_run)
    fails(capsys, ["train", "--out", str(finished_run / "checkpoint")], "is a checkpoint folder itself")
    fails(capsys, ["train", "--out", str(finished_run)], "pass --resume to continue it")
    fails(capsys, ["train", "--out", str(tmp_path / "empty"), "--resume"], "no checkpoint")
    assert snapshot(finished_run) == before


def test_resume_refuses_mismatches(capsys, tmp_path, finished_run, two_small_docs):
    before = snapshot(finished_run)
    out = ["--out", str(finished_run), "--resume"]
    fails(capsys, ["train", *out], "already reached step 300 of 300")
    fails(capsys, ["train", *out, "--preset", "small"], "trained with preset 'tiny', not 'small'")
    fails(capsys, ["train", *out, "--seq-len", "32"], "trained with --seq-len 64, not 32")
    fails(capsys, ["train", str(two_small_docs), *out, "--steps", "400"], "this corpus differs")
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("damage, match", [
    ("trainer", "cannot read trainer-"),
    ("weights", "the checkpoint is damaged"),
    ("config", "is not valid JSON"),
    ("tokenizer", "missing tokenizer.json"),
])
def test_resume_from_a_damaged_checkpoint(capsys, finished_run, damage, match):
    ckpt = finished_run / "checkpoint"
    if damage == "tokenizer":
        (ckpt / "tokenizer.json").unlink()
    else:
        target = {"trainer": "trainer-*.pt", "weights": "model-*.safetensors", "config": "config.json"}[damage]
        path = next(ckpt.glob(target))
        path.write_bytes(path.read_bytes()[:100])  # cut short, as by a full disk
    before = snapshot(finished_run)
    fails(capsys, ["train", "--out", str(finished_run), "--resume", "--steps", "400"], match)
    assert snapshot(finished_run) == before


def test_import_errors(capsys, tmp_path, trained_checkpoint):
    fails(capsys, ["import", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")], "does not exist")
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    fails(capsys, ["import", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "o")], "cannot read")
    fails(capsys, ["import", str(tmp_path), "--out", str(trained_checkpoint)], "not empty")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["train", "import"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "--out" in capsys.readouterr().out
