"""``gptedge bench`` end to end on the test bundle, PyTorch baseline included (small sizes: this
checks the figures are produced and consistent, not how fast anything is)."""

import json
import subprocess
import sys

from gptedge.cli import main


def test_bench_writes_figures_and_chart_with_a_pytorch_baseline(tiny_bundle, export_checkpoint, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", str(tiny_bundle), "--checkpoint", str(export_checkpoint), "--threads", "1",
                 "--repeat", "1", "--prompt-tokens", "8", "--new-tokens", "8", "--soak", "8", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert {r["variant"] for r in report["results"]} == set(manifest["variants"])
    for r in report["results"]:
        assert r["provider"] == "cpu" and r["decode_tokens_per_s"]["median"] > 0
        assert [p["past"] for p in r["past"]] == [p["past"] for p in report["pytorch"]["past"]]
        assert 0 < r["peak_rss_mb"] and len(r["soak"]["rss_mb"]) == 5
    assert report["pytorch"]["engine"] == "pytorch-eager"
    printed = capsys.readouterr().out
    assert "vs PyTorch eager: decode" in printed and "8 short generations: resident memory" in printed


def test_bench_names_an_unknown_variant(tiny_bundle, tmp_path, capsys):
    assert main(["bench", str(tiny_bundle), "--variants", "fp64", "--out", str(tmp_path)]) == 2
    assert "no variant 'fp64'" in capsys.readouterr().err


def test_pytorch_baseline_in_a_process_of_its_own(random_checkpoint):
    from gptedge.measure.pytorch import run_baseline

    result = run_baseline(random_checkpoint, prompt_tokens=8, new_tokens=16, threads=1, pasts=[16], repeat=1)
    assert result["engine"] == "pytorch-eager" and result["threads"] == 1
    assert result["ttft_ms"] > 0 and result["decode_tokens_per_s"] > 0
    assert [p["past"] for p in result["past"]] == [16] and result["past"][0]["decode_tokens_per_s"] > 0


def test_pytorch_baseline_refuses_too_many_tokens(random_checkpoint, capsys):
    from gptedge.measure import pytorch

    assert pytorch.main([str(random_checkpoint), "--new-tokens", "1000", "--json"]) == 2
    assert "exceeds the context of 64" in capsys.readouterr().err


def test_the_bench_worker_needs_no_torch():
    """The worker a device runs imports the runtime and the measurement helpers, never torch."""
    from blockers import BLOCK_HEAVY

    script = BLOCK_HEAVY + "import gptedge.measure.bench, gptedge.measure.machine, gptedge.measure.tables\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bench_against_onnxruntime_genai_on_the_same_graph(quantized_bundle, tmp_path, capsys):
    """``--genai``: both engines measured on each variant's one graph file, with same-round ratios."""
    import pytest

    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is in the dev extra")
    out = tmp_path / "genai"
    assert main(["bench", str(quantized_bundle), "--genai", "--variants", "int4", "fp32", "--threads", "1",
                 "--repeat", "1", "--prompt-tokens", "8", "--new-tokens", "8", "--out", str(out)]) == 0
    report = json.loads((out / "bench_genai.json").read_text())
    assert [r["variant"] for r in report["results"]] == ["int4", "fp32"]
    for r in report["results"]:
        for key in ("decode_tokens_per_s", "ttft_ms", "peak_rss_mb"):
            assert r[key]["gptedge"] > 0 and r[key]["genai"] > 0
        assert r["decode_ratio_same_round"] > 0 and r["genai_version"]
    assert (out / "bench_genai.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gptedge/genai" in capsys.readouterr().out
