"""``gptedge bench --genai`` / ``--genai-builder``: the parts that need no onnxruntime-genai (the
Llama derived from a manifest, the rule that drops rounds disturbed by other load, the choice of
variants, argument errors) in milliseconds, and the builder comparison end to end where its side
venv exists (``.venv-genai``, or GPTEDGE_GENAI_VENV): making it downloads and takes minutes, so
neither CI nor this file makes it (the README has the command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from blockers import blocking
from cli_checks import one_line_error

from gptedge.errors import UserError
from gptedge.measure import genai_bench
from gptedge.measure.genai_builder import llama_config, mlp_width, pick_variants

REPO = Path(__file__).resolve().parents[1]
GENAI_VENV = Path(os.environ.get("GPTEDGE_GENAI_VENV") or REPO / ".venv-genai")


def fake_manifest(**precisions: str) -> SimpleNamespace:
    """A manifest with GPT-2's shape and the given {variant: precision}, all for the CPU."""
    variants = {n: SimpleNamespace(precision=p, providers=["cpu"], inspection=None) for n, p in precisions.items()}
    model = SimpleNamespace(n_layer=12, n_head=12, n_embd=768, vocab_size=8192, context_length=1024)
    return SimpleNamespace(model=model, variants=variants, eos_token_id=0, pad_token_id=1,
                           for_generation=lambda: variants)


def test_the_llama_has_the_bundles_size():
    config = llama_config(fake_manifest(fp32="fp32"))
    assert config == {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
                      "intermediate_size": 2048, "vocab_size": 8192, "max_position_embeddings": 1024,
                      "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    assert 3 * 768 * 2048 == 2 * 768 * 4 * 768  # the MLP's parameters: GPT-2's 4x MLP's, exactly at 768
    for width in (64, 256, 1024, 1600):
        assert mlp_width(width) % 32 == 0 and abs(3 * mlp_width(width) - 8 * width) <= 3 * 16


def test_one_variant_per_builder_precision_and_named_ones_checked():
    manifest = fake_manifest(**{"fp32": "fp32", "int8-static": "int8-static", "int8": "int8", "q4": "int4", "fp16": "fp16"})
    assert pick_variants(manifest, None) == {"q4": "int4", "int8": "int8", "fp32": "fp32"}
    assert pick_variants(manifest, ["int8"]) == {"int8": "int8"}
    with pytest.raises(UserError, match="'fp16' is fp16: genai's builder is compared at int4, int8, fp32"):
        pick_variants(manifest, ["int8", "fp16"])
    with pytest.raises(UserError, match="no int4, int8 or fp32 variant"):
        pick_variants(fake_manifest(fp16="fp16"), None)


def test_rounds_with_other_load_are_dropped_but_one_is_always_kept():
    limit = genai_bench.FOREIGN_LOAD_LIMIT
    assert genai_bench.kept_rounds([0.0, limit + 0.01, limit, None]) == [0, 2, 3]  # None: not measured
    assert genai_bench.kept_rounds([0.9, 0.3, 0.5]) == [1]  # all disturbed: the quietest


def test_interleaved_rounds_keep_the_quiet_ones(tmp_path, monkeypatch, capsys):
    """Round 1 is loaded by another process, round 2 is quiet: the figures and the same-round ratio
    come from round 2 alone, and the table says how many rounds were kept."""
    counter = tmp_path / "calls"

    def worker(figures: str) -> list[str]:  # prints round-dependent figures: 1st call [0], 2nd [1]
        return [sys.executable, "-c", f"import json, pathlib; p = pathlib.Path({str(counter)!r}); "
                f"n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); print(json.dumps({figures}))"]

    ours = worker('{"ttft_ms": {"median": 5.0}, "decode_tokens_per_s": {"median": [100.0, 100.0, 300.0, 300.0][n]}, '
                  '"request_peak_rss_mb": 90}')
    theirs = worker('{"version": "0.18.0", "ttft_ms": 4.0, "decode_tokens_per_s": [50.0, 50.0, 150.0, 150.0][n], '
                    '"peak_rss_mb": 80}')
    clock = iter([(0.0, 0.0), (1000.0, 1.0), (1000.0, 1.0), (1000.0, 1.0)])  # busy, own CPU s: round 1 was busy
    monkeypatch.setattr(genai_bench, "cpu_seconds", lambda: next(clock))
    r = genai_bench.interleave("int4", 2, ours, theirs)
    assert r["rounds_kept"] == [2] and not r["all_rounds_disturbed"] and r["foreign_load_cores"][1] == 0
    assert r["decode_tokens_per_s"] == {"gptedge": 300.0, "genai": 150.0} and r["decode_ratio_same_round"] == 2.0
    assert "int4: 1 of 2 rounds discarded" in capsys.readouterr().err
    report = {"results": [r], "rounds": 2, "prompt_tokens": 8, "new_tokens": 8, "threads": 1, "compared": "x",
              "foreign_load_limit_cores": 0.1, "notes": ["a note"]}
    table = genai_bench.format_table(report)
    assert " 1/2\n" in table and table.endswith("a note") and "quietest" not in table


def test_the_genai_worker_runs_without_gptedge():
    """The side venv has no gptedge: run by path, the worker finds machine.py beside it."""
    script = blocking(("gptedge",)) + (
        f"import runpy; sys.path.insert(0, {str(REPO / 'measure')!r}); sys.argv = ['genai_worker.py', '--help']\n"
        f"runpy.run_path({str(REPO / 'measure' / 'genai_worker.py')!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and "{time,llama,describe}" in proc.stdout, proc.stderr


def test_genai_venv_belongs_to_genai_builder(capsys, tmp_path):
    err = one_line_error(capsys, ["bench", str(tmp_path), "--genai-venv", str(tmp_path / "v")])
    assert "--genai-venv is the side venv of --genai-builder" in err


def test_one_side_benchmark_at_a_time(capsys, tiny_bundle, tmp_path):
    err = one_line_error(capsys, ["bench", str(tiny_bundle), "--genai", "--genai-builder", "--out", str(tmp_path)])
    assert "run one at a time" in err


def test_a_folder_that_is_no_venv_is_refused(capsys, tiny_bundle, tmp_path):
    err = one_line_error(capsys, ["bench", str(tiny_bundle), "--genai-builder", "--genai-venv", str(tmp_path),
                                  "--out", str(tmp_path / "out")])
    assert "is not a virtual environment (no bin/python)" in err


def test_builder_comparison_end_to_end(quantized_bundle, tmp_path, capsys):
    """genai's builder makes the Llama of the test bundle's size at int8 in the side venv (cached
    there), and both engines are timed: int8 keeps its own float32 embedding table."""
    from gptedge.cli import main

    if not (GENAI_VENV / "bin" / "python").exists():
        pytest.skip(f"no side venv at {GENAI_VENV}: `gptedge bench BUNDLE --genai-builder` makes it (downloads)")
    out = tmp_path / "out"
    assert main(["bench", str(quantized_bundle), "--genai-builder", "--genai-venv", str(GENAI_VENV), "--variants",
                 "int8", "--threads", "1", "--repeat", "1", "--prompt-tokens", "8", "--new-tokens", "8",
                 "--out", str(out)]) == 0
    report = json.loads((out / "bench_genai_builder.json").read_text())
    (r,) = report["results"]
    assert r["variant"] == r["precision"] == "int8" and r["decode_ratio_same_round"] > 0
    for key in ("decode_tokens_per_s", "ttft_ms", "peak_rss_mb"):
        assert r[key]["gptedge"] > 0 and r[key]["genai"] > 0
    made = r["genai_model"]
    assert made["builder_options"] == ["-p", "int8", "-e", "cpu"] and made["extra_options"] == []
    assert {m["bits"] for m in made["matmul_nbits"]} == {8} and made["embedding"] == "Gather of float32, a table of its own"
    assert report["side_venv"]["onnxruntime-genai"] == "0.18.0"
    assert report["llama"]["hidden_size"] == json.loads((quantized_bundle / "manifest.json").read_text())["model"]["n_embd"]
    assert (out / "bench_genai_builder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gptedge/genai" in capsys.readouterr().out


def test_the_side_venv_is_pinned():
    """Every package of genai_requirements.txt is pinned (the install is the same on every run),
    torch is left to its own CPU-wheel step, and genai is the version the comparison names."""
    from gptedge.measure.genai_builder import REQUIREMENTS, TORCH

    pins = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in pins) and not any(line.startswith("torch==") for line in pins)
    assert {"onnxruntime-genai==0.18.0", "onnxruntime==1.32.0"} <= set(pins) and TORCH.startswith("torch==")
