"""``gptedge bench`` end to end on the test bundle, PyTorch baseline included (small sizes: this
checks the figures are produced and consistent, not how fast anything is)."""

import json

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
    assert "vs PyTorch eager: decode" in capsys.readouterr().out


def test_bench_names_an_unknown_variant(tiny_bundle, tmp_path, capsys):
    assert main(["bench", str(tiny_bundle), "--variants", "fp64", "--out", str(tmp_path)]) == 2
    assert "no variant 'fp64'" in capsys.readouterr().err
