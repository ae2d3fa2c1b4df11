"""The bundle's bad inputs and faults: manifests of the wrong shape, files that do not match their
hashes, variants this onnxruntime cannot run, and writers that are killed, run out of disk or
meet each other. Each case: a one-line error naming the problem, no traceback, and every file as
it was (or, after a fault, the old valid bundle)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import gptedge.runtime
from cli_checks import one_line_error, snapshot
from gptedge.errors import UserError
from gptedge.runtime import contract

GPTEDGE = [sys.executable, "-m", "gptedge"]


def copy(bundle: Path, tmp_path: Path, name: str = "bundle") -> Path:
    out = tmp_path / name
    shutil.copytree(bundle, out)
    return out


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = bundle / contract.MANIFEST_FILE
    d = json.loads(path.read_text())
    result = change(d)
    path.write_text(json.dumps(d if result is None else result))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rehash(bundle: Path, file: str) -> None:
    """Record ``file``'s new size and hash in the manifest, as someone who edits by hand might."""
    size, digest = contract.describe_file(bundle, file)

    def change(d):
        for record in [d["tokenizer"], *d["variants"].values()]:
            if record["file"] == file:
                record["size_bytes"], record["sha256"] = size, digest

    edit_manifest(bundle, change)


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    d[last] = value


# (id, field path, bad value, what the message must name)
BAD_FIELDS = [
    ("n_head-zero", "model.n_head", 0, "model.n_head must be > 0"),
    ("n_head-string", "model.n_head", "two", "model.n_head must be a whole number"),
    ("n_embd-not-divisible", "model.n_embd", 63, "model.n_embd (63) must be divisible by n_head"),
    ("vocab-negative", "model.vocab_size", -5, "model.vocab_size must be > 0"),
    ("context-float", "model.context_length", 64.5, "model.context_length must be a whole number"),
    ("model-not-object", "model", 5, "model must be an object"),
    ("variants-list", "variants", [], "variants must be an object"),
    ("variants-empty", "variants", {}, "variants is empty"),
    ("file-absolute", "variants.fp32.file", "/etc/passwd", "variants.fp32.file '/etc/passwd' leaves the folder"),
    ("file-dotdot", "variants.fp32.file", "../model.onnx", "variants.fp32.file '../model.onnx' leaves the folder"),
    ("file-empty", "variants.fp32.file", "", "variants.fp32.file '' leaves the folder"),
    ("precision-unknown", "variants.fp32.precision", "int3", "variants.fp32.precision is 'int3', not one of"),
    ("layout-unknown", "variants.fp32.cache_layout", "ring", "variants.fp32.cache_layout is 'ring'"),
    ("cache-dtype-unknown", "variants.fp32.cache_dtype", "int8", "variants.fp32.cache_dtype is 'int8'"),
    ("size-negative", "variants.fp32.size_bytes", -1, "variants.fp32.size_bytes must be >= 0"),
    ("size-bool", "variants.fp32.size_bytes", True, "variants.fp32.size_bytes must be a whole number"),
    ("sha-not-hex", "variants.fp32.sha256", "xyz", "variants.fp32.sha256 must be 64 lowercase hex digits"),
    ("providers-string", "variants.fp32.providers", "cpu", "variants.fp32.providers must be a list"),
    ("min-ort-garbage", "variants.fp32.min_onnxruntime", "soon", "variants.fp32.min_onnxruntime must be a version"),
    ("eos-out-of-vocab", "eos_token_id", 10**6, "eos_token_id must be a token id in 0..511"),
    ("pad-string", "pad_token_id", "1", "pad_token_id must be a whole number"),
    ("temperature-negative", "sampling.temperature", -1, "sampling is invalid: temperature=-1"),
    ("top-p-string", "sampling.top_p", "high", "sampling.top_p must be a number"),
    ("stop-not-list", "sampling.stop", "\n", "sampling.stop must be a list"),
    ("tokenizer-file-outside", "tokenizer.file", "../tokenizer.json", "tokenizer.file '../tokenizer.json' leaves"),
    ("tokenizer-missing-record", "tokenizer", None, "tokenizer is missing"),
    ("provenance-step-string", "provenance.checkpoint_step", "ten", "provenance.checkpoint_step must be a whole number"),
    ("parity-not-object", "parity", [1, 2], "parity must be an object"),
    ("unknown-field", "surprise", 1, "surprise is not a known field"),
    ("inputs-renamed", "inputs", ["ids"], "inputs do not match the gptedge graph contract"),
    ("chat-template-empty", "chat_template", " ", "chat_template must be a Jinja template of 1 to 65536 characters"),
    ("chat-template-number", "chat_template", 5, "chat_template must be"),
    ("version-newer", "format_version", 4, "format_version 4, this gptedge reads 1, 2 and 3: upgrade gptedge"),
    ("version-string", "format_version", "2", "format_version '2', this gptedge reads 1, 2 and 3: re-export"),
]


@pytest.mark.parametrize("field,value,expected", [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS])
def test_manifest_of_the_wrong_shape(tiny_bundle, tmp_path, capsys, field, value, expected):
    bundle = copy(tiny_bundle, tmp_path)
    edit_manifest(bundle, lambda d: set_path(d, field, value))
    before = snapshot(bundle)
    message = one_line_error(capsys, ["generate", str(bundle), "hi", "--max-new-tokens", "1"])
    assert expected in message and "manifest.json" in message, message
    with pytest.raises(UserError, match="manifest.json"):
        gptedge.runtime.load(bundle)
    assert snapshot(bundle) == before


@pytest.mark.parametrize("content,expected", [
    ("[1, 2, 3]", "must hold a JSON object, not list"),
    ('"bundle"', "must hold a JSON object, not str"),
    ("null", "must hold a JSON object, not NoneType"),
    ('{"format_version": 2, "model": ', "is not valid JSON"),
    ("\udcff", "is not valid JSON"),
], ids=["list", "string", "null", "truncated", "not-utf8"])
def test_manifest_that_is_not_an_object(tiny_bundle, tmp_path, capsys, content, expected):
    bundle = copy(tiny_bundle, tmp_path)
    (bundle / contract.MANIFEST_FILE).write_bytes(content.encode("utf-8", "surrogateescape"))
    before = snapshot(bundle)
    assert expected in one_line_error(capsys, ["verify", str(bundle)])
    assert snapshot(bundle) == before


def test_missing_required_field(tiny_bundle, tmp_path, capsys):
    bundle = copy(tiny_bundle, tmp_path)
    edit_manifest(bundle, lambda d: d.__delitem__("variants"))
    assert "variants is missing" in one_line_error(capsys, ["generate", str(bundle), "hi"])


def test_bundle_path_is_a_file(tiny_bundle, capsys):
    message = one_line_error(capsys, ["generate", str(tiny_bundle / "model.onnx"), "hi"])
    assert "is a file, not a bundle folder" in message


# ---------------------------------------------------------------------------------------------
# Files against their hashes


def test_swapped_tokenizer_is_refused(tiny_bundle, tokenizer_file, tmp_path, capsys):
    """Another tokenizer of the same vocabulary size: without its hash it would generate garbage."""
    from tokenizers import Tokenizer

    bundle = copy(tiny_bundle, tmp_path)
    other = Tokenizer.from_file(str(tokenizer_file))
    other.add_tokens(["<|swap|>"])  # another tokenizer, same size class: only the hash can tell
    other.save(str(bundle / "tokenizer.json"))
    before = snapshot(bundle)
    message = one_line_error(capsys, ["generate", str(bundle), "hi", "--max-new-tokens", "1"])
    assert "tokenizer: tokenizer.json does not match its manifest hash" in message
    assert "tokenizer.json does not match" in one_line_error(capsys, ["verify", str(bundle)])
    assert snapshot(bundle) == before


def test_corrupt_tokenizer_with_its_hash_updated(tiny_bundle, tmp_path, capsys):
    bundle = copy(tiny_bundle, tmp_path)
    (bundle / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 7}}')
    rehash(bundle, "tokenizer.json")
    message = one_line_error(capsys, ["generate", str(bundle), "hi"])
    assert "the bundle's tokenizer is damaged" in message


def test_damaged_graph_with_its_hash_updated(tiny_bundle, tmp_path, capsys):
    bundle = copy(tiny_bundle, tmp_path)
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])
    rehash(bundle, "model.onnx")
    before = snapshot(bundle)
    message = one_line_error(capsys, ["generate", str(bundle), "hi", "--variant", "fp32"])
    assert "onnxruntime cannot load model.onnx" in message and "re-create the variant" in message
    assert snapshot(bundle) == before


def test_another_models_graph_with_its_hash_updated(tiny_bundle, optimized_bundle, tmp_path, capsys):
    """The fused graph under the exported graph's manifest entry: its cache is another layout."""
    bundle = copy(tiny_bundle, tmp_path)
    shutil.copy(optimized_bundle / "model.opt.onnx", bundle / "model.onnx")
    rehash(bundle, "model.onnx")
    message = one_line_error(capsys, ["generate", str(bundle), "hi", "--variant", "fp32"])
    assert "its graph has a shared float32 cache, the manifest says concat" in message


@pytest.mark.parametrize("damage", ["truncated", "missing", "appended"])
def test_graph_that_does_not_match_its_hash(tiny_bundle, tmp_path, capsys, damage):
    bundle = copy(tiny_bundle, tmp_path)
    graph = bundle / "model.onnx"
    if damage == "missing":
        graph.unlink()
    elif damage == "truncated":
        graph.write_bytes(graph.read_bytes()[:-10])
    else:
        graph.write_bytes(graph.read_bytes() + b"\0")
    message = one_line_error(capsys, ["verify", str(bundle)])
    assert ("is missing" if damage == "missing" else "does not match its manifest hash") in message


# ---------------------------------------------------------------------------------------------
# onnxruntime versions


def test_variant_that_needs_a_newer_onnxruntime(quantized_bundle, tmp_path, capsys):
    import onnxruntime

    bundle = copy(quantized_bundle, tmp_path)
    edit_manifest(bundle, lambda d: set_path(d, "variants.int8.min_onnxruntime", "99.1"))
    message = one_line_error(capsys, ["generate", str(bundle), "hi", "--variant", "int8"])
    assert f"needs onnxruntime >= 99.1, this is onnxruntime {onnxruntime.__version__}" in message
    assert "pip install -U 'onnxruntime>=99.1'" in message and "--variant" in message
    # "auto" passes over it to the next variant this onnxruntime runs
    assert gptedge.runtime.load(bundle).variant == "int4"


def test_no_variant_this_onnxruntime_runs(tiny_bundle, tmp_path, capsys):
    bundle = copy(tiny_bundle, tmp_path)
    edit_manifest(bundle, lambda d: set_path(d, "variants.fp32.min_onnxruntime", "99.1"))
    assert "needs onnxruntime >= 99.1" in one_line_error(capsys, ["generate", str(bundle), "hi"])


def test_recorded_versions(quantized_bundle, optimized_bundle):
    """Each variant records the oldest onnxruntime its operators need."""
    from gptedge.export import compat

    plain = contract.read_manifest(quantized_bundle).variants
    assert plain["fp32"].min_onnxruntime == plain["int8"].min_onnxruntime == compat.BASE == "1.18"
    assert plain["int4"].min_onnxruntime == "1.23"  # its token table's `bits` attribute (GatherBlockQuantized)
    fused = contract.read_manifest(optimized_bundle).variants["fp32"]
    assert fused.cache_layout == "shared" and fused.min_onnxruntime == "1.32"


# ---------------------------------------------------------------------------------------------
# A version-1 bundle


def as_version_1(bundle: Path) -> None:
    """What gptedge 0.1 wrote: no tokenizer record, no oldest onnxruntime, empty payloads as {}."""

    def change(d):
        d["format_version"] = 1
        del d["tokenizer"]
        for v in d["variants"].values():
            del v["min_onnxruntime"]
            v["metrics"] = v.get("metrics") or {}
        d["eval"] = d.get("eval") or {}

    edit_manifest(bundle, change)


def test_version_1_bundle_loads_and_is_upgraded_by_the_next_writer(tiny_bundle, tmp_path, capsys):
    from gptedge.cli import main

    bundle = copy(tiny_bundle, tmp_path)
    as_version_1(bundle)
    before = snapshot(bundle)
    model = gptedge.runtime.load(bundle, provider="cpu")
    assert model.generate("The", max_new_tokens=3, temperature=0).token_ids
    assert contract.read_manifest(bundle).variants["fp32"].min_onnxruntime == "1.18"
    assert snapshot(bundle) == before  # reading never rewrites it
    assert main(["quantize", str(bundle), "--to", "int8", "--quiet"]) == 0
    d = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    assert d["format_version"] == 2 and d["tokenizer"]["sha256"] == sha(bundle / "tokenizer.json")
    assert all("min_onnxruntime" in v for v in d["variants"].values())


# ---------------------------------------------------------------------------------------------
# Writers: leftovers, locks, faults


def test_leftovers_of_killed_writers_are_removed_and_nothing_else(tiny_bundle, tmp_path, capsys):
    from gptedge.cli import main

    bundle = copy(tiny_bundle, tmp_path)
    ours = [bundle / ".manifest.json.k2j4h_9a.tmp", bundle / ".model.int8.onnx.abcd1234.tmp",
            bundle / "model.int8.onnx", bundle / "model.opt.onnx.data", tmp_path / ".bundle.x7y8z9w0.partial",
            tmp_path / ".bundle.4242.old"]
    users = [bundle / "notes.txt", bundle / "model.mine.onnx", bundle / ".hidden", tmp_path / ".other.abcd1234.partial"]
    for p in ours + users:
        if p.suffix in (".partial", ".old"):
            p.mkdir()
            (p / "model.onnx").write_bytes(b"x")
        else:
            p.write_bytes(b"left behind")
    assert main(["quantize", str(bundle), "--to", "int4", "--quiet"]) == 0
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in users)
    assert not (tmp_path / ".bundle.lock").exists()


def test_a_dead_processes_lock_is_taken_over(tiny_bundle, tmp_path):
    """A lock file left by a killed writer (its flock died with it) does not block the next one."""
    from gptedge.cli import main

    bundle = copy(tiny_bundle, tmp_path)
    (tmp_path / ".bundle.lock").write_text("gptedge process 999999\n")
    assert main(["quantize", str(bundle), "--to", "int8", "--quiet"]) == 0
    assert "int8" in contract.read_bundle(bundle).variants


def run_gptedge(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([*GPTEDGE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_concurrent_writers_both_land(tiny_bundle, tmp_path):
    """Two quantize commands and an optimize on one bundle at once: all three results land, and
    the manifest is valid at every moment a reader looks."""
    bundle = copy(tiny_bundle, tmp_path)
    procs = [run_gptedge("quantize", str(bundle), "--to", p, "--quiet") for p in ("int8", "int4")]
    procs.append(run_gptedge("optimize", str(bundle), "--quiet"))
    while any(p.poll() is None for p in procs):
        contract.read_manifest(bundle)  # never half-written
        time.sleep(0.05)
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        assert "Traceback" not in err
    manifest = contract.read_bundle(bundle)
    assert {"int8", "int4", "fp32"} <= set(manifest.variants)
    assert manifest.provenance.optimized is not None
    assert set(manifest.provenance.quantization) == {"int8", "int4"}
    assert not (tmp_path / ".bundle.lock").exists()


# Each command's argv and progress steps (what its progress bar names, in order), and whether it
# changes an existing bundle. quantize takes --force so that a run after one that finished before
# its kill redoes the work.
KILL_CASES = {
    "export": (lambda b, ckpt: ["export", str(ckpt), str(b)], ("trace", "save", "verify"), False),
    "optimize": (lambda b, ckpt: ["optimize", str(b)], ("load", "fuse", "write", "parity"), True),
    "quantize": (lambda b, ckpt: ["quantize", str(b), "--to", "int4", "--force"],
                 ("int4: convert", "int4: check", "int4: commit"), True),
}


def kill_in_step(argv: list[str], step: str, delay: float) -> bool:
    """Run gptedge and kill -9 it ``delay`` seconds after its progress bar shows ``step``: a moment
    inside the work, never in the interpreter's start-up. Returns whether it was still working
    (a run after one that committed before its kill may have nothing left to do)."""
    proc = subprocess.Popen([*GPTEDGE, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shown = threading.Event()

    def watch() -> None:  # the bar redraws itself on stderr with each step's name
        seen = b""
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            seen = seen[-256:] + chunk
            if step.encode() in seen:
                shown.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    while not shown.wait(0.01) and proc.poll() is None:
        pass
    time.sleep(delay)
    working = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    return working


@pytest.mark.slow
@pytest.mark.parametrize("command", list(KILL_CASES))
def test_kill_at_random_points_leaves_a_valid_bundle(tiny_bundle, export_checkpoint, tmp_path, command):
    """kill -9 inside randomly chosen steps, three times on one bundle: after each kill the bundle is
    a valid one (the old one, or the committed new one; for a new export, absent or complete), each
    run clears what the kill before it left, and a last run succeeds and leaves nothing behind."""
    argv, steps, existing = KILL_CASES[command]
    rng = random.Random(f"kill-{command}")
    bundle = tmp_path / "bundle"
    if existing:
        shutil.copytree(tiny_bundle, bundle)
    before = contract.read_bundle(bundle) if existing else None

    def again() -> list[str]:  # export over a bundle an earlier attempt may have finished
        return [*argv(bundle, export_checkpoint), *(["--force"] if command == "export" and bundle.exists() else [])]

    killed = 0
    for _ in range(3):
        killed += kill_in_step(again(), rng.choice(steps), rng.uniform(0, 0.1))
        if existing:
            after = contract.read_bundle(bundle)  # valid: the old one, or the committed new one
            assert set(before.variants) <= set(after.variants)
        elif bundle.exists():
            contract.read_bundle(bundle)
    assert killed, "every run ended before its kill"
    last = subprocess.run([*GPTEDGE, *again(), "--quiet"], capture_output=True, text=True)
    assert last.returncode == 0 or "already" in last.stderr, last.stderr
    contract.read_bundle(bundle)
    leftovers = [p.name for p in [*tmp_path.iterdir(), *bundle.iterdir()] if p.name.endswith((".tmp", ".partial", ".old", ".lock"))]
    assert leftovers == []


def tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave_bytes: int) -> None:
    """Fill the file system of ``folder`` until ``leave_bytes`` are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["quantize", "optimize", "export"])
def test_disk_full_while_writing(tiny_bundle, export_checkpoint, tmp_path, capsys, command):
    mount = tmp_path / "disk"
    tmpfs(mount, "12m")
    try:
        bundle = mount / "bundle"
        if command != "export":
            shutil.copytree(tiny_bundle, bundle)
        fill(mount, 64 * 1024)
        before = snapshot(bundle) if bundle.exists() else None
        argv = {"quantize": ["quantize", str(bundle), "--to", "int8", "--quiet"],
                "optimize": ["optimize", str(bundle), "--quiet"],
                "export": ["export", str(export_checkpoint), str(bundle), "--quiet"]}[command]
        message = one_line_error(capsys, argv)
        assert message.endswith(f"free some space and {command} again") and "no space left" in message
        if before is None:
            assert not bundle.exists()
        else:
            assert snapshot(bundle) == before
        assert sorted(p.name for p in mount.iterdir()) == sorted(["filler"] + (["bundle"] if before else []))
    finally:
        umount(mount)


@pytest.mark.slow
def test_read_only_bundle(tiny_bundle, tmp_path, capsys):
    mount = tmp_path / "ro"
    tmpfs(mount, "32m")
    try:
        shutil.copytree(tiny_bundle, mount / "bundle")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        before = snapshot(mount / "bundle")
        message = one_line_error(capsys, ["quantize", str(mount / "bundle"), "--to", "int8", "--quiet"])
        assert "cannot write" in message and "Read-only file system" in message
        assert snapshot(mount / "bundle") == before
        # reading needs no write: generation works from a read-only bundle
        assert gptedge.runtime.load(mount / "bundle").generate("a", max_new_tokens=2).token_ids
    finally:
        umount(mount)
