"""The train side's catalogue of bad inputs and faults: corpus, train options, --resume, import, the
checkpoint's config.json, a full disk, a read-only --out and kill -9 in the middle of training.

Each bad input must end in one line that names the problem and the fix (exit 2, no traceback) and
leave every file that existed before byte for byte as it was; each fault must leave the checkpoint
either the last good one or absent, never half-written, and no temporary file behind for good.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_checks import one_line_error
from fixtures_model import TEST_MODEL
from gptedge.errors import UserError
from gptedge.train import checkpoint_config
from gptedge.train.checkpoint import load_checkpoint
from gptedge.train.checkpoint_config import read_config
from gptedge.train.config import PRESETS, GPTConfig, Preset, TrainConfig
from gptedge.train.trainer import train

# A few seconds of real training: the test model, a checkpoint every other step.
QUICK = dict(seq_len=32, batch_size=4, warmup_steps=2, eval_interval=4, eval_batches=1, checkpoint_interval=2)
TEXT = "A sentence of plain English text, long enough to split into documents and windows.\n\n"


def quick_preset(monkeypatch) -> None:
    """`gptedge train` without flags trains the test model for a few steps (the CLI has no --set)."""
    monkeypatch.setitem(PRESETS, "tiny", Preset(GPTConfig(**TEST_MODEL),
                                                TrainConfig(steps=6, vocab_size=TEST_MODEL["vocab_size"], **QUICK)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture()
def run(tmp_path, trained_checkpoint) -> Path:
    """A copy of the shared trained run (step 300, default corpus), to damage freely."""
    folder = tmp_path / "run"
    shutil.copytree(trained_checkpoint.parent, folder)
    return folder


def unchanged(folder: Path):
    """Every file under ``folder`` now, by sha256; calling the result says whether all are the same."""
    def digests() -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    before = digests()
    return lambda: digests() == before


# ---------------------------------------------------------------------------------------------------
# Corpus


def _corpus(tmp_path: Path, kind: str) -> str:
    src = tmp_path / "src"
    src.mkdir()
    if kind == "dev-null":
        return os.devnull
    if kind == "fifo":  # outside src: reading it for the snapshot would block as well
        os.mkfifo(tmp_path / "pipe.txt")
        return str(tmp_path / "pipe.txt")
    if kind == "missing":
        return str(src / "nope.txt")
    if kind == "glob-nothing":
        return str(src / "*.txt")
    if kind == "empty-folder":
        return str(src)
    if kind == "folder-no-text":
        (src / "cat.jpg").write_bytes(b"\xff\xd8\xff")
        return str(src)
    if kind == "folder-empty-texts":
        (src / "a.txt").write_text("")
        (src / "b.md").write_text("\n \n")
        return str(src)
    files = {
        "empty": b"",
        "blank": b"  \n\t\n",
        "binary": bytes(range(256)) * 40,
        "latin1": "café crème brûlée ".encode("latin-1") * 50,
        "one-short-doc": b"Just a few words.",
        "unreadable": TEXT.encode() * 20,
    }
    (src / "corpus.txt").write_bytes(files[kind])
    return str(src / "corpus.txt")


CORPUS_CASES = {
    "dev-null": "is not a regular file or folder",
    "fifo": "is not a regular file or folder",
    "missing": "does not exist",
    "glob-nothing": "matches no files",
    "empty-folder": "has no .txt or .md files",
    "folder-no-text": "has no .txt or .md files",
    "folder-empty-texts": "is empty",
    "empty": "is empty",
    "blank": "is empty",
    "binary": "looks binary",
    "latin1": "is not UTF-8",
    "one-short-doc": "one short document",
    "unreadable": "cannot read",
}


@pytest.mark.parametrize("kind", CORPUS_CASES)
def test_bad_corpus(capsys, monkeypatch, tmp_path, kind):
    corpus = _corpus(tmp_path, kind)
    same = unchanged(tmp_path / "src")
    if kind == "unreadable":  # chmod does not stop root: refuse the read as the OS would
        original = Path.read_bytes

        def read_bytes(path: Path) -> bytes:
            if path.name == "corpus.txt":
                raise PermissionError(13, "Permission denied", str(path))
            return original(path)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    err = one_line_error(capsys, ["train", corpus, "--out", str(tmp_path / "out")])
    assert CORPUS_CASES[kind] in err and ": " in err.split(CORPUS_CASES[kind], 1)[1]  # problem, then the fix
    monkeypatch.undo()
    assert same() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------
# Train options, through the command line


OPTION_CASES = [
    (["train", "--steps", "-1"], "--steps -1 is out of range"),
    (["train", "--steps", "0"], "--steps 0 is out of range"),
    (["train", "--batch-size", "0"], "--batch-size 0 is out of range"),
    (["train", "--lr", "nan"], "--lr nan is not a finite number"),
    (["train", "--lr", "inf"], "--lr inf is not a finite number"),
    (["train", "--min-lr", "0.5"], "--min-lr 0.5 is out of range"),
    (["train", "--dropout", "1.5"], "dropout=1.5 is out of range"),
    (["train", "--warmup-steps", "-5"], "--warmup-steps -5 is out of range"),
    (["train", "--seq-len", "1000"], "exceeds the model's context length"),
    (["train", "--vocab-size", "100"], "too small"),
    (["train", "--device", "tpu"], "--device 'tpu' is unknown"),
    (["build", "--set", "n_head=0"], "n_head=0 is invalid"),
    (["build", "--set", "n_embd=abc"], "n_embd must be a whole number, not 'abc'"),
    (["build", "--set", "unknown=1"], "unknown setting 'unknown'"),
    (["build", "--set", "n_head=3"], "not divisible by n_head=3"),
    (["build", "--set", "dropout=abc"], "dropout must be a number, not 'abc'"),
    (["build", "--set", "bias=maybe"], "bias must be true or false, not 'maybe'"),
    (["build", "--set", "gelu=relu"], "gelu='relu' is unknown"),
    (["build", "--set", "lr=fast"], "--lr must be a number, not 'fast'"),
    (["build", "--set", "layer_norm_eps=0"], "layer_norm_eps=0 is out of range"),
]


@pytest.mark.parametrize("argv, match", OPTION_CASES, ids=[" ".join(a[1:]) for a, _ in OPTION_CASES])
def test_train_option_out_of_range(capsys, tmp_path, argv, match):
    err = one_line_error(capsys, [*argv, "--out", str(tmp_path / "out")])
    assert match in err and (": " in err.split(match, 1)[1] or " must be " in match), err  # the problem, then what to do
    assert not (tmp_path / "out").exists()


def test_diverging_loss_stops_with_a_message(capsys, monkeypatch, tmp_path):
    quick_preset(monkeypatch)
    err = one_line_error(capsys, ["train", "--out", str(tmp_path / "out"), "-q", "--lr", "1e6", "--warmup-steps", "0"])
    assert "the training loss became nan" in err and "lower --lr" in err


# ---------------------------------------------------------------------------------------------------
# --resume


def _damage(ckpt: Path, how: str) -> None:
    trainer = next(ckpt.glob("trainer-*.pt"))
    if how == "trainer-truncated":
        trainer.write_bytes(trainer.read_bytes()[:100])
    elif how == "trainer-wrong-structure":
        torch.save({"optimizer": 5, "train_seconds": "x"}, trainer)
    elif how == "trainer-missing":
        trainer.unlink()
    elif how == "tokenizer-corrupt":
        (ckpt / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 7}}')
    elif how == "tokenizer-not-json":
        (ckpt / "tokenizer.json").write_bytes(b"\x00\x01 not json")
    elif how == "weights-truncated":
        weights = next(ckpt.glob("model-*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:1000])


RESUME_CASES = {
    "already-finished": ([], "already reached step 300 of 300"),
    "other-preset": (["--steps", "400", "--preset", "small"], "not 'small'"),
    "other-seq-len": (["--steps", "400", "--seq-len", "32"], "trained with --seq-len 64, not 32"),
    "other-corpus": (["CORPUS", "--steps", "400"], "this corpus differs"),
    "trainer-truncated": (["--steps", "400"], "the optimizer state is damaged"),
    "trainer-wrong-structure": (["--steps", "400"], "does not fit the model"),
    "trainer-missing": (["--steps", "400"], "no optimizer state to resume from"),
    "tokenizer-corrupt": (["--steps", "400"], "the checkpoint is damaged"),
    "tokenizer-not-json": (["--steps", "400"], "the checkpoint is damaged"),
    "weights-truncated": (["--steps", "400"], "the checkpoint is damaged"),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_bad_resume(capsys, tmp_path, run, case):
    flags, match = RESUME_CASES[case]
    _damage(run / "checkpoint", case)
    corpus = tmp_path / "other.txt"
    corpus.write_text(TEXT * 400)
    flags = [str(corpus) if f == "CORPUS" else f for f in flags]
    same = unchanged(run)
    err = one_line_error(capsys, ["train", *flags, "--out", str(run), "--resume", "-q"])
    assert match in err, err
    assert same()


# ---------------------------------------------------------------------------------------------------
# The checkpoint's config.json: valid JSON of the wrong shape


def _edit(field: str, value):
    def change(info: dict) -> dict:
        section, _, key = field.rpartition(".")
        (info[section] if section else info)[key] = value
        return info
    return change


CONFIG_CASES = {
    "a-list": (lambda info: [1, 2], "holds list"),
    "a-string": (lambda info: "checkpoint", "holds str"),
    "model-is-5": (_edit("model", 5), "model must be an object ({...}), not 5"),
    "n_head-0": (_edit("model.n_head", 0), "n_head=0 is invalid"),
    "n_head-string": (_edit("model.n_head", "4"), "model.n_head must be a whole number, not '4'"),
    "n_embd-not-divisible": (_edit("model.n_head", 3), "not divisible by n_head=3"),
    "gelu-unknown": (_edit("model.gelu", "relu"), "gelu='relu' is unknown"),
    "model-unknown-key": (_edit("model.experts", 8), "model.experts is not a known field"),
    "step-negative": (_edit("step", -1), "step must be >= 0, not -1"),
    "step-string": (_edit("step", "300"), "step must be a whole number, not '300'"),
    "weights-absolute": (_edit("weights", "/etc/passwd"), "is not a file name in the checkpoint folder"),
    "weights-dotdot": (_edit("weights", "../model.safetensors"), "is not a file name in the checkpoint folder"),
    "weights-number": (_edit("weights", 7), "weights must be a string, not 7"),
    "trainer-state-dotdot": (_edit("trainer_state", ".."), "is not a file name in the checkpoint folder"),
    "train-a-list": (_edit("train", [1]), "train must be an object ({...}), not [1]"),
    "lr-string": (_edit("train.lr", "fast"), "train.lr must be a number, not 'fast'"),
    "metrics-string-loss": (_edit("metrics.val_loss", "low"), "metrics.val_loss must be a number, not 'low'"),
    "corpus-a-string": (_edit("corpus", "pydoc"), "corpus must be an object ({...}), not 'pydoc'"),
    "corpus-bad-sha": (_edit("corpus.sha256", "abc"), "corpus.sha256 must be 64 lowercase hex digits"),
    "format-version-string": (_edit("format_version", "1"), "version '1' is not gptedge-checkpoint version 1"),
    "format-version-newer": (_edit("format_version", 2), "upgrade gptedge"),
    "weights-missing-key": (lambda info: {k: v for k, v in info.items() if k != "weights"}, "weights is missing"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_json_of_the_wrong_shape(capsys, run, case):
    change, match = CONFIG_CASES[case]
    config = run / "checkpoint" / "config.json"
    config.write_text(json.dumps(change(json.loads(config.read_text()))))
    same = unchanged(run)
    err = one_line_error(capsys, ["train", "--out", str(run), "--resume", "--steps", "400", "-q"])
    assert str(config) in err and match in err, err
    with pytest.raises(UserError, match="re-create|upgrade"):
        read_config(run / "checkpoint")  # the same one line through the API, without torch
    assert same()


def test_config_of_the_current_release_still_loads(tmp_path, random_checkpoint):
    """format_version 1 exactly as the release before the typed config wrote it."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(random_checkpoint, ckpt)
    weights = next(ckpt.glob("model-*.safetensors")).name
    old = {"format": "gptedge-checkpoint", "format_version": 1, "model": {**TEST_MODEL, "dropout": 0.0, "bias": True,
           "gelu": "exact", "layer_norm_eps": 1e-5}, "train": TrainConfig(vocab_size=512).to_dict(), "step": 0,
           "metrics": {}, "weights": weights, "trainer_state": None, "preset": "imported",
           "imported_from": {"kind": "nanogpt", "path": "/somewhere/ckpt.pt"}}
    (ckpt / "config.json").write_text(json.dumps(old, indent=2))
    info = read_config(ckpt)
    assert info.model == GPTConfig(**TEST_MODEL) and info.imported_from.kind == "nanogpt" and info.corpus is None
    assert load_checkpoint(ckpt).step == 0 and info.to_dict() == old  # the writer gives back the same file


def test_config_reader_needs_no_torch():
    code = ("import sys; from gptedge.train.checkpoint_config import read_config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------
# gptedge import


def _gpt_state() -> dict[str, torch.Tensor]:
    """The test model's weights under nanoGPT's names (which are also GPT-2's, up to Conv1D)."""
    from gptedge.train.model import GPT

    torch.manual_seed(0)
    state = GPT(GPTConfig(**TEST_MODEL)).state_dict()
    return {f"transformer.{k}": v.clone() for k, v in state.items() if k != "lm_head.weight"}


def _nanogpt(tmp_path: Path, how: str) -> Path:
    model = _gpt_state()
    args = dict(vocab_size=TEST_MODEL["vocab_size"], block_size=64, n_layer=2, n_head=2, n_embd=64, bias=True)
    ckpt: object = {"model_args": args, "model": model}
    if how == "model_args-missing":
        ckpt = {"model": model}
    elif how == "model_args-a-list":
        ckpt["model_args"] = [1, 2, 3]
    elif how == "n_head-a-string":
        args["n_head"] = "two"
    elif how == "n_embd-a-float":
        args["n_embd"] = 64.5
    elif how == "block_size-missing":
        del args["block_size"]
    elif how == "state-missing-keys":
        del model["transformer.h.1.mlp.c_fc.weight"]
    elif how == "state-wrong-shape":
        model["transformer.wpe.weight"] = torch.zeros(3, 3)
    elif how == "state-not-tensors":
        ckpt["model"] = {"transformer.wte.weight": [1.0, 2.0]}
    elif how == "state-a-list":
        ckpt["model"] = [1, 2]
    path = tmp_path / "src" / "ckpt.pt"
    path.parent.mkdir()
    if how == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    else:
        torch.save(ckpt, path)
    return path


NANOGPT_CASES = {
    "model_args-missing": "no 'model_args' and 'model'",
    "model_args-a-list": "model_args in",
    "n_head-a-string": "n_head must be a whole number, not 'two'",
    "n_embd-a-float": "n_embd must be a whole number, not 64.5",
    "block_size-missing": "lacks model_args block_size",
    "state-missing-keys": "missing ['h.1.mlp.c_fc.weight']",
    "state-wrong-shape": "wpe.weight has shape (3, 3)",
    "state-not-tensors": "not a state dict of named tensors",
    "state-a-list": "not a state dict of named tensors",
    "garbage": "cannot read",
}


@pytest.mark.parametrize("how", NANOGPT_CASES)
def test_bad_nanogpt_import(capsys, tmp_path, tokenizer_file, how):
    source = _nanogpt(tmp_path, how)
    same = unchanged(source.parent)
    err = one_line_error(capsys, ["import", str(source), "--tokenizer", str(tokenizer_file),
                                  "--out", str(tmp_path / "out")])
    assert NANOGPT_CASES[how] in err, err
    assert same() and not (tmp_path / "out").exists()


def _hf_folder(tmp_path: Path, tokenizer_file: Path, how: str) -> Path:
    from safetensors.torch import save_file

    folder = tmp_path / "src"
    folder.mkdir()
    config = dict(model_type="gpt2", vocab_size=TEST_MODEL["vocab_size"], n_positions=64, n_layer=2, n_head=2,
                  n_embd=64)
    if how == "config-a-list":
        config = [config]
    elif how == "n_embd-a-string":
        config["n_embd"] = "64"
    elif how == "n_embd-an-object":
        config["n_embd"] = {"value": 64}
    elif how == "activation-a-list":
        config["activation_function"] = ["gelu"]
    elif how == "not-gpt2":
        config["model_type"] = "llama"
    elif how == "a-gptedge-checkpoint":  # what gptedge train writes: config.json says so
        config = {"format": "gptedge-checkpoint", "format_version": 1}
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(tokenizer_file, folder / "tokenizer.json")
    if how == "corrupt-safetensors":
        (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"\0" * 64)
    elif how != "no-weights":
        state = {k: v.t().contiguous() if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else v
                 for k, v in _gpt_state().items()}
        save_file(state, str(folder / "model.safetensors"))
    return folder


HF_CASES = {
    "config-a-list": "holds list, not an object",
    "n_embd-a-string": "n_embd must be a whole number, not '64'",
    "n_embd-an-object": "n_embd must be a whole number, not {'value': 64}",
    "activation-a-list": "activation_function",
    "not-gpt2": "'llama' model, not GPT-2",
    "a-gptedge-checkpoint": "is already a gptedge checkpoint: export it (gptedge export",
    "corrupt-safetensors": "cannot read",
    "no-weights": "has no model.safetensors",
}


@pytest.mark.parametrize("how", HF_CASES)
def test_bad_hf_import(capsys, tmp_path, tokenizer_file, how):
    folder = _hf_folder(tmp_path, tokenizer_file, how)
    same = unchanged(folder)
    err = one_line_error(capsys, ["import", str(folder), "--out", str(tmp_path / "out")])
    assert HF_CASES[how] in err, err
    assert same() and not (tmp_path / "out").exists()


def test_import_removes_a_killed_imports_staged_folder(tmp_path, tokenizer_file):
    """A kill during import leaves `.<out>.<random>.partial` beside --out; the next import takes it."""
    folder = _hf_folder(tmp_path, tokenizer_file, "fine")
    leftover = tmp_path / ".out.k1ll3d_x.partial"
    leftover.mkdir()
    (leftover / "model-0000000.safetensors").write_bytes(b"half")
    mine = tmp_path / ".out.notes.partial.txt"  # a user's file that only looks similar
    mine.write_text("keep me")
    from gptedge.train.importers import import_weights

    import_weights(folder, tmp_path / "out")
    assert not leftover.exists() and mine.read_text() == "keep me"
    assert load_checkpoint(tmp_path / "out").info.imported_from.kind == "huggingface-gpt2"


# ---------------------------------------------------------------------------------------------------
# Faults: a full disk, a read-only --out, kill -9


@pytest.fixture()
def tmpfs(tmp_path):
    """A 3 MB tmpfs (needs root); unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint(capsys, monkeypatch, tmpfs):
    """The test model's checkpoint is ~1.7 MB: the first fits in 3 MB, the second does not."""
    quick_preset(monkeypatch)
    out = tmpfs / "run"
    err = one_line_error(capsys, ["train", "--out", str(out), "--steps", "12", "-q"])
    assert "no space left on the device" in err and "free some space and train again with --resume" in err
    ckpt = load_checkpoint(out / "checkpoint", with_trainer_state=True)  # the last good one, whole
    assert ckpt.step == 2  # and nothing of the failed save: no temporary file, no half of step 4
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "config.json", "model-0000002.safetensors", "tokenizer.json", "trainer-0000002.pt"]


@pytest.mark.slow
def test_read_only_out(capsys, monkeypatch, tmpfs):
    quick_preset(monkeypatch)
    (tmpfs / "existing.txt").write_text("mine")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    err = one_line_error(capsys, ["train", "--out", str(tmpfs / "run"), "-q"])
    assert "read-only" in err and "choose a folder you can write to" in err
    assert sorted(p.name for p in tmpfs.iterdir()) == ["existing.txt"]


@pytest.mark.slow
def test_folder_made_read_only_while_training(capsys, monkeypatch, tmpfs):
    """The first write after the checks fails: the OS's refusal becomes one line as well."""
    quick_preset(monkeypatch)
    from gptedge.train import trainer

    def read_only(self):
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        return original(self)

    original = trainer._Trainer._prepare_folder
    monkeypatch.setattr(trainer._Trainer, "_prepare_folder", read_only)
    # The run folder is the mount itself: the writers' lock beside it stays on a writable disk
    # (a file open for writing there would keep the tmpfs from being remounted read-only).
    err = one_line_error(capsys, ["train", "--out", str(tmpfs), "-q"])
    assert "cannot write" in err and "Read-only file system" in err and "check the folder" in err


def _train_in_subprocess(out: Path, steps: int) -> subprocess.Popen:
    settings = {**TEST_MODEL, **QUICK, "checkpoint_interval": 1}
    code = (f"from gptedge.train.trainer import train; "
            f"train(None, {str(out)!r}, steps={steps}, overrides={settings!r}, quiet=True, threads=1)")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_a_random_moment(tmp_path, seed):
    """Killed while it saves a checkpoint every step: the checkpoint is the last good one or absent;
    the next run in that folder removes what the killed one left and finishes cleanly."""
    out, steps = tmp_path / "run", 40
    proc = _train_in_subprocess(out, steps)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint" / "tokenizer.json").is_file():  # the plan is made, training starts
            assert proc.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.01)
        time.sleep(random.Random(seed).uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    ckpt_dir = out / "checkpoint"
    if (ckpt_dir / "config.json").is_file():
        killed_at = load_checkpoint(ckpt_dir, with_trainer_state=True).step  # whole: it loads
        assert 1 <= killed_at < steps
        resumed = train(None, out, resume=True, quiet=True, threads=1)
    else:  # killed before the first commit: the folder is an unfinished start, not in the way
        resumed = train(None, out, steps=steps, overrides={**TEST_MODEL, **QUICK}, quiet=True, threads=1)
    ckpt = load_checkpoint(resumed, with_trainer_state=True)
    assert ckpt.step == steps
    assert sorted(p.name for p in resumed.iterdir()) == sorted(
        ["config.json", "tokenizer.json", ckpt.info.weights, ckpt.info.trainer_state])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_resume_removes_our_leftovers_and_nothing_else(monkeypatch, tmp_path, run):
    """What kill -9 leaves (temporary files of a save, a step file written but never committed) goes
    with the next command that writes the checkpoint; a user's files stay."""
    ckpt = run / "checkpoint"
    ours = [ckpt / ".model-0000400.safetensors.ab12cd34.tmp", ckpt / ".trainer-0000400.pt.x_y_z_09.tmp",
            ckpt / ".config.json.q1w2e3r4.tmp", ckpt / "model-0000350.safetensors", run / ".loss.png.zzzzzzzz.tmp"]
    users = [ckpt / "notes.txt", ckpt / ".model.safetensors.backup", run / "README.md"]
    for p in ours + users:
        p.write_bytes(os.urandom(64))
    kept = {p: p.read_bytes() for p in users}
    assert checkpoint_config.read_config(ckpt).step == 300
    train(None, run, steps=302, resume=True, quiet=True, threads=1)
    assert not [p for p in ours if p.exists()]
    assert {p: p.read_bytes() for p in users} == kept
    assert load_checkpoint(ckpt).step == 302
