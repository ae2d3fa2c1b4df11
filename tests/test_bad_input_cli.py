"""Bad input on the command line: each mistake is one line on stderr naming the problem and the fix,
exit status 2, no traceback, and every file that existed before is unchanged (nothing new written).
Also the other side of that rule: each command takes what the one before it wrote (a run folder
for its checkpoint or bundle), and output piped into a reader that stops early ends quietly.

Argument errors run ``main`` in this process (argparse refuses them before any model is loaded);
only the checks that need a real process (argv bytes that are not UTF-8, a closed pipe) start one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import one_line_error, snapshot
from gptedge import paths
from gptedge.cli import EXIT_BROKEN_PIPE, main
from gptedge.runtime import contract


def argparse_refuses(capsys, argv: list[str]) -> str:
    """argparse's own refusal: exit 2 and one line (no usage block) that points at --help."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.endswith("--help)"), err
    return err


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty current folder holding one file, so a test sees anything a command wrote by default."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    return tmp_path


# Refused while parsing, before a bundle is even opened (so the bundle need not exist).
PARSE_ERRORS = [
    (["generate", "B", "x", "--max-new-tokens", "abc"], "--max-new-tokens: 'abc' is not a whole number"),
    (["generate", "B", "x", "--max-new-tokens", "-3"], "--max-new-tokens: -3 is out of range"),
    (["generate", "B", "x", "--temperature", "nan"], "--temperature: 'nan' is not a finite number"),
    (["generate", "B", "x", "--temperature", "hot"], "--temperature: 'hot' is not a number"),
    (["generate", "B", "x", "--top-k", "-1"], "--top-k: -1 is out of range"),
    (["generate", "B", "x", "--seed", "-1"], "--seed: -1 is out of range"),
    (["generate", "B", "x", "--threads", "0"], "--threads: 0 is out of range"),
    (["generate", "B", "x", "--threads", "100000"], f"--threads: 100000 is out of range: use a whole number from 1 to "
                                                    f"{4 * os.cpu_count()}"),
    (["train", "--threads", "-1"], "--threads: -1 is out of range"),
    (["generate", "B"], "the following arguments are required: PROMPT"),
    (["bench", "B", "--repeat", "0"], "--repeat: 0 is out of range"),
    (["bench", "B", "--soak", "-1"], "--soak: -1 is out of range"),
    (["bench", "B", "--prompt-tokens", "0"], "--prompt-tokens: 0 is out of range"),
    (["bench", "B", "--threads", "two"], "--threads: 'two' is not a whole number"),
    (["eval", "B", "--new-tokens", "0"], "--new-tokens: 0 is out of range"),
    (["eval", "B", "--threads", "0"], "--threads: 0 is out of range"),
    (["quantize", "B"], "one of the arguments --to --target is required"),
    (["quantize", "B", "--to", "int8", "--target", "cpu"], "not allowed with argument"),
    (["demo", "B", "--port", "0"], "--port: 0 is out of range"),
    (["demo", "B", "--threads", "-2"], "--threads: -2 is out of range"),
    (["export", "C"], "the following arguments are required: OUT_DIR"),
    (["nonsense"], "invalid choice: 'nonsense'"),
]


@pytest.mark.parametrize("argv, match", PARSE_ERRORS, ids=[" ".join(a) for a, _ in PARSE_ERRORS])
def test_bad_flags_are_one_line(capsys, workdir, argv, match):
    before = snapshot(workdir)
    assert match in argparse_refuses(capsys, argv)
    assert snapshot(workdir) == before


# Refused by the command before it opens anything heavy (no model, no torch).
EARLY_ERRORS = [
    (["quantize", "B", "--to", "int3"], "unknown precision 'int3'"),
    (["quantize", "B", "--target", "tpu"], "unknown target 'tpu'"),
    (["demo", "B", "--port", "70000"], "--port 70000 is out of range"),
    (["demo"], "run gptedge build first"),
    (["generate", "nothing-here", "x"], "bundle nothing-here does not exist"),
    (["generate", "notes.txt", "x"], "notes.txt is a file, not a bundle folder"),
    (["generate", ".", "x"], "is not a gptedge bundle (no manifest.json)"),
    (["generate", "nothing-here", "\udcff"], "the prompt is not valid UTF-8 (byte 0xff at character 0)"),
    (["generate", "nothing-here", "x", "--stop", "a\udce9"], "--stop text is not valid UTF-8 (byte 0xe9"),
    (["generate", "nothing-here", "x", "--top-p", "2"], "top_p=2.0 is invalid"),
    (["generate", "nothing-here", "x", "--repetition-penalty", "0"], "repetition_penalty=0.0 is invalid"),
    (["bench", "nothing-here", "--out", "notes.txt"], "--out notes.txt is a file"),
    (["eval", ".", "--out", "notes.txt"], "--out notes.txt is a file"),
    (["bench", "nothing-here", "--out", "notes.txt/sub"], "cannot write --out notes.txt/sub (notes.txt is a file)"),
    (["generate", "nothing-here", "x", "--stop", ""], "stop=('',) is invalid: use a string or a list of strings, none"),
    (["verify", "."], "is not a gptedge bundle"),
    (["optimize", "nothing-here"], "bundle nothing-here does not exist"),
    (["quantize", ".", "--to", "int8"], "is not a gptedge bundle"),
    (["eval", "nothing-here"], "bundle nothing-here does not exist"),
    (["export", "nothing-here", "out"], "checkpoint folder nothing-here does not exist"),
    (["export", ".", "out"], "is not a gptedge checkpoint"),
    (["export", "notes.txt", "out"], "notes.txt is a file, not a checkpoint folder"),
]


@pytest.mark.parametrize("argv, match", EARLY_ERRORS, ids=[" ".join(a).encode("ascii", "backslashreplace").decode()
                                                          for a, _ in EARLY_ERRORS])
def test_bad_arguments_are_one_line(capsys, workdir, argv, match):
    before = snapshot(workdir)
    err = one_line_error(capsys, argv)
    assert match in err and err.startswith(f"gptedge {argv[0]}: error: ") and ": " in err.split("error: ", 1)[1]
    assert snapshot(workdir) == before


@pytest.mark.slow
@pytest.mark.parametrize("argv, match", [
    (["generate", "{bundle}", "x", "--variant", "nope"], "bundle has no variant 'nope'"),
    (["generate", "{bundle}", "x", "--provider", "nope"], "unknown provider 'nope'"),
    (["generate", "{bundle}/model.onnx", "x"], "is a file, not a bundle folder"),
    (["bench", "{bundle}", "--variants", "nope"], "bundle has no variant 'nope'"),
    (["bench", "{bundle}", "--out", "{bundle}/manifest.json"], "is a file"),
    (["bench", "{bundle}", "--prompt-tokens", "1000"], "--prompt-tokens 1000 leaves no room to generate in the context"),
    (["bench", "{bundle}", "--new-tokens", "1000"], "exceed the context of"),
    (["eval", "{bundle}", "--out", "{bundle}/tokenizer.json"], "is a file"),
    (["export", "{checkpoint}", "{bundle}"], "already exists: pass --force"),
    (["verify", "{bundle}", "--checkpoint", "{empty}"], "is not a gptedge checkpoint"),
], ids=["variant", "provider", "variant-file", "bench-variant", "bench-out-file", "bench-prompt", "bench-new",
        "eval-out-file",
        "export-over-bundle", "verify-not-a-checkpoint"])
def test_bad_arguments_with_a_real_bundle(capsys, tmp_path, tiny_bundle, trained_checkpoint, argv, match):
    argv = [a.format(bundle=tiny_bundle, checkpoint=trained_checkpoint, empty=tmp_path) for a in argv]
    before, checkpoint_before = snapshot(tiny_bundle), snapshot(trained_checkpoint)
    assert match in one_line_error(capsys, argv)
    assert snapshot(tiny_bundle) == before and snapshot(trained_checkpoint) == checkpoint_before
    assert list(tmp_path.iterdir()) == []


# -- each command takes what the one before it wrote ----------------------------------------------

@pytest.mark.parametrize("resolve, marker, inner", [
    (paths.resolve_checkpoint, "config.json", "checkpoint"),
    (paths.resolve_bundle, "manifest.json", "bundle"),
], ids=["checkpoint", "bundle"])
def test_run_folder_resolution(tmp_path, resolve, marker, inner):
    run = tmp_path / "run"
    (run / inner).mkdir(parents=True)
    (run / inner / marker).write_text("{}")
    assert resolve(run) == run / inner  # the run folder: what train/build --out made
    assert resolve(run / inner) == run / inner  # the folder itself
    assert resolve(str(run / inner / marker)) == run / inner  # its marker file
    assert resolve(tmp_path) == tmp_path  # neither: unchanged, for the reader's own error
    assert resolve(tmp_path / "missing") == tmp_path / "missing"
    (tmp_path / "file").write_text("x")
    assert resolve(tmp_path / "file") == tmp_path / "file"


@pytest.fixture
def run_folder(tmp_path, tiny_bundle, trained_checkpoint) -> Path:
    """A run folder as ``gptedge build`` leaves one: checkpoint/ and bundle/ side by side."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint").symlink_to(trained_checkpoint, target_is_directory=True)
    (run / "bundle").symlink_to(tiny_bundle, target_is_directory=True)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("where", ["run", "manifest"])
def test_generate_takes_a_run_folder_or_the_manifest(capsys, run_folder, where):
    target = run_folder if where == "run" else run_folder / "bundle" / "manifest.json"
    assert main(["generate", str(target), "The for", "--max-new-tokens", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The for")


@pytest.mark.slow
def test_export_and_verify_take_run_folders(capsys, tmp_path, run_folder, trained_checkpoint):
    """`gptedge export RUN OUT` on the folder `gptedge train --out RUN` made (train/checkpoint.py on
    its own still refuses a run folder: the CLI resolves it), and `verify RUN --checkpoint RUN`."""
    before = snapshot(trained_checkpoint)
    out = tmp_path / "exported"
    assert main(["export", str(trained_checkpoint.parent), str(out), "--quiet"]) == 0
    assert contract.read_manifest(out).variants["fp32"].file == "model.onnx"
    assert main(["verify", str(run_folder), "--checkpoint", str(run_folder)]) == 0
    assert "files match their hashes" in capsys.readouterr().out
    assert snapshot(trained_checkpoint) == before


# -- things only a real process shows --------------------------------------------------------------

def gptedge(*args: str | bytes, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.Popen([sys.executable, "-m", "gptedge", *args], env=env, **kwargs)


@pytest.mark.slow
def test_prompt_bytes_that_are_not_utf8(tiny_bundle):
    """`gptedge generate BUNDLE $'\\xff\\xfe'`: Python keeps the bytes as lone surrogates; the
    tokenizer cannot take them, and replacing them would change the prompt, so: one line naming the byte."""
    proc = gptedge("generate", str(tiny_bundle), b"ok \xff\xfe", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == b""
    lines = err.decode("utf-8", "backslashreplace").strip().splitlines()
    assert lines == ["gptedge generate: error: the prompt is not valid UTF-8 (byte 0xff at character 3): "
                     "pass UTF-8 text (convert it with iconv -t UTF-8)"]


@pytest.mark.slow
def test_output_into_a_pipe_closed_early_ends_quietly(tiny_bundle):
    """`gptedge generate ... | head -c 20`. The prompt (echoed first) is larger than a pipe's buffer,
    so the write after the reader has gone is certain. Exit as a tool that SIGPIPE ended would (141),
    with nothing on stderr but the model line and the warning about the long prompt, one line each."""
    prompt = "word " * 20_000  # 100 KB: more than the 64 KB a Linux pipe holds
    proc = gptedge("generate", str(tiny_bundle), prompt, "--max-new-tokens", "5",
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = proc.stdout.read(20)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert head == prompt[:20].encode()
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("[variant ") and len(lines) == 2, lines
    assert lines[1].startswith("gptedge generate: warning: prompt has ")


@pytest.mark.slow
def test_output_encoding_that_cannot_hold_the_text(tiny_bundle):
    """A stdout whose encoding lacks a character (here ascii) shows it as an escape, as Python's
    stderr does, instead of a UnicodeEncodeError traceback."""
    proc = subprocess.run([sys.executable, "-m", "gptedge", "generate", str(tiny_bundle), "café", "--max-new-tokens",
                           "2"], capture_output=True, env={**os.environ, "PYTHONIOENCODING": "ascii"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"caf\\xe9") and b"Traceback" not in proc.stderr
