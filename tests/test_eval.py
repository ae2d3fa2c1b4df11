"""``gptedge eval`` on the shared quantized test bundle and its checkpoint: one harness, the same
tokens for every engine, fp32 equal to PyTorch, quantized variants within their quality budgets.

The quality budgets: perplexity is held to the issue's budgets (int8 +2 %, int4 +5 %; the test
model meets them by a wide margin). Agreement budgets are looser than a well-trained model would
need: a model trained for seconds predicts flat next-token distributions, so at many positions the
two most likely tokens are near-ties, and the smallest rounding flips the top-1 token at positions
where its prediction means little. Speed is never asserted here (benchmarks print it)."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from gptedge.cli import main
from gptedge.errors import UserError
from gptedge.export.evaluate import evaluate_bundle, full_windows
from gptedge.runtime import contract

BUDGETS = {  # variant: (perplexity increase in %, min top-1 agreement, max |logit difference|)
    "int8": (2.0, 0.97, 0.5),
    "int4": (5.0, 0.88, 2.0),  # its output head is 4-bit too (the default --head-bits)
    "int8-static": (3.0, 0.93, 1.5),
    "fp16": (0.1, 0.995, 0.05),
}


@dataclass
class Evaluated:
    bundle: Path
    out: Path
    report: dict
    printed: str


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, quantized_bundle, export_checkpoint) -> Evaluated:
    """A copy of the quantized bundle after ``gptedge eval --checkpoint --out``."""
    bundle = tmp_path_factory.mktemp("eval") / "bundle"
    shutil.copytree(quantized_bundle, bundle)
    out = tmp_path_factory.mktemp("eval_out") / "reports"
    capture = bundle.parent / "stdout.txt"
    with open(capture, "w") as f, contextlib.redirect_stdout(f):
        # One thread: the test model is too small to gain from two, and it keeps the PyTorch speed
        # run from fighting whatever else the machine runs.
        argv = ["eval", str(bundle), "--checkpoint", str(export_checkpoint), "--out", str(out), "--threads", "1", "-q"]
        assert main(argv) == 0
    return Evaluated(bundle, out, json.loads((out / "eval.json").read_text()), capture.read_text())


def test_fp32_onnx_equals_the_pytorch_checkpoint(evaluated):
    report = evaluated.report
    fp32, torch = report["entries"]["fp32"], report["entries"]["pytorch"]
    assert abs(fp32["perplexity"] / torch["perplexity"] - 1) <= 1e-3
    assert torch["max_abs_logit_diff"] <= 1e-3 and torch["top1_agreement"] >= 0.999
    assert torch["greedy_agreement"] == 1.0


def test_quantized_variants_stay_within_their_budgets(evaluated):
    report = evaluated.report
    fp32 = report["entries"]["fp32"]["perplexity"]
    for name, (ppl_pct, top1, logit) in BUDGETS.items():
        e = report["entries"][name]
        assert e["perplexity"] <= fp32 * (1 + ppl_pct / 100), name
        assert e["top1_agreement"] >= top1, name
        assert e["max_abs_logit_diff"] <= logit, name


def test_every_engine_is_scored_on_the_same_tokens(evaluated):
    report = evaluated.report
    s = report["settings"]
    ctx = report["model"]["context_length"]
    assert s["window_tokens"] == ctx and s["tokens_scored"] == s["windows"] * (ctx - 1) and s["windows"] > 100
    assert set(report["entries"]) == {"int8", "int4", "fp32", "int8-static", "fp16", "pytorch"}
    assert s["new_tokens"] + s["prompt_tokens"] <= ctx


def test_runtime_figures_for_every_variant_the_cpu_runs(evaluated):
    report = evaluated.report
    for name in ("int8", "int4", "fp32", "int8-static", "pytorch"):
        e = report["entries"][name]
        assert e["load_s"] > 0 and e["ttft_ms"] > 0 and e["decode_tokens_per_s"] > 0, name
        assert 0.0 <= e["greedy_agreement"] <= 1.0
    assert report["entries"]["fp32"]["greedy_agreement"] == 1.0
    fp16 = report["entries"]["fp16"]
    assert fp16["provider"] is None and "does not run on cpu" in fp16["not_run"]


def test_table_and_manifest_figures(evaluated):
    report, printed = evaluated.report, evaluated.printed
    for name in report["entries"]:
        assert name in printed
    assert "perplexity" in printed and "tok/s" in printed
    manifest = contract.read_bundle(evaluated.bundle, verify=True)  # still valid, hashes unchanged
    for name, v in manifest.variants.items():
        assert v.metrics.perplexity == pytest.approx(report["entries"][name]["perplexity"])
        assert v.metrics.size_vs_fp32 == pytest.approx(report["entries"][name]["size_vs_fp32"])
    assert manifest.eval.windows == report["settings"]["windows"]
    assert manifest.eval.pytorch.perplexity == pytest.approx(report["entries"]["pytorch"]["perplexity"])
    assert not (evaluated.bundle / "eval").exists()  # --out was given


def test_report_files(evaluated):
    md = (evaluated.out / "eval.md").read_text()
    assert "| variant |" in md and "int8-static" in md and "eval.png" in md
    assert (evaluated.out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_shorter_than_a_window_is_refused(capsys, quantized_bundle, tmp_path):
    from tokenizers import Tokenizer

    from gptedge.export.heldout import MIN_TOKENS
    from gptedge.train.tokenizer import encode_documents

    short = tmp_path / "short.txt"
    short.write_text("A short text. " * 6)
    tokenizer = Tokenizer.from_file(str(quantized_bundle / "tokenizer.json"))
    assert MIN_TOKENS <= len(encode_documents(tokenizer, [short.read_text()])) < 64  # held-out minimum < it < a window
    assert main(["eval", str(quantized_bundle), "--text", str(short), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "fewer than one window" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_the_bundle_did_not_come_from_is_refused(quantized_bundle, random_checkpoint, tmp_path):
    with pytest.raises(UserError, match="was not exported from"):
        evaluate_bundle(quantized_bundle, checkpoint_dir=random_checkpoint, out_dir=tmp_path, quiet=True)


def test_full_windows_drop_the_rest():
    import numpy as np

    w = full_windows(np.arange(10), 4)
    assert w.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
