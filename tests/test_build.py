"""``gptedge build``: the whole chain on a small corpus with a test-sized model and a few steps,
then a rerun that finds every stage done. Nothing is shared with other fixtures: the point is that
one command goes from text files to a measured bundle."""

import json
from pathlib import Path

import pytest
from pydoc_data.topics import topics

from fixtures_model import TEST_MODEL
from gptedge.cli import main
from gptedge.demo.views import variant_table
from gptedge.errors import UserError
from gptedge.pipeline import STAGES, build, parse_setting
from gptedge.runtime import contract

pytestmark = pytest.mark.slow  # the whole pipeline

STEPS = 12
SETTINGS = {**TEST_MODEL, "seq_len": 32, "batch_size": 4, "warmup_steps": 2, "eval_interval": STEPS,
            "eval_batches": 2, "checkpoint_interval": STEPS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder of text files: 24 of Python's documentation topics."""
    folder = tmp_path_factory.mktemp("corpus")
    for name, text in sorted(topics.items())[:24]:
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("build") / "run"
    return build(str(corpus), out=out, steps=STEPS, overrides=SETTINGS, quiet=True), out


def test_build_makes_a_measured_bundle_with_every_variant(built):
    b, out = built
    assert b.ran == [s.name for s in STAGES] and b.skipped == []
    assert b.bundle == out / "bundle" and b.checkpoint == out / "checkpoint"
    manifest = contract.read_bundle(b.bundle)  # every file matches its hash
    assert {"fp32", "int8", "int4", "inspect"} <= set(manifest.variants)
    assert manifest.variants["inspect"].inspection is not None  # the page's Look inside
    assert json.loads((b.checkpoint / "config.json").read_text())["step"] == STEPS
    assert manifest.provenance.optimized.sha256 == manifest.variants["fp32"].sha256
    for name, variant in manifest.for_generation().items():  # the eval harness's figures, for the demo's table
        assert variant.metrics.perplexity > 1 and variant.metrics.decode_tokens_per_s > 0, name
    assert {"eval.json", "eval.md", "eval.png"} <= {p.name for p in (b.bundle / "eval").iterdir()}
    headers, rows = variant_table(manifest)  # what the demo page's table shows
    perplexity = headers.index("perplexity")
    assert [r[0] for r in rows] == list(manifest.for_generation())
    for row in rows:
        assert float(row[perplexity]) == pytest.approx(manifest.variants[row[0]].metrics.perplexity, abs=0.01)


def test_rerun_skips_every_finished_stage(built, corpus, capsys):
    b, out = built
    before = (b.bundle / contract.MANIFEST_FILE).read_bytes()
    argv = ["build", str(corpus), "--out", str(out), "--steps", str(STEPS)]
    argv += [f"--set={k}={v}" for k, v in SETTINGS.items()]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for i, stage in enumerate(STAGES, 1):
        assert f"[{i}/{len(STAGES)}] {stage.name}: skipped" in printed
    assert "ran: nothing" in printed and f"gptedge demo {b.bundle}" in printed
    table = printed[printed.index("variant "):]  # the eval table, from the report on disk
    assert all(name in table for name in ("fp32", "int8", "int4", "pytorch")) and "perplexity" in table
    assert (b.bundle / contract.MANIFEST_FILE).read_bytes() == before


def test_a_finished_build_is_not_reused_with_other_settings(built, corpus, capsys):
    _, out = built
    assert main(["build", str(corpus), "--out", str(out), "--steps", str(STEPS), "--set", "n_layer=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "n_layer" in err and "another --out" in err and "\n" not in err
    assert main(["build", str(corpus), "--out", str(out), "--steps", str(STEPS), "--set", "n_layers=3"]) == 2
    assert "unknown setting 'n_layers'" in capsys.readouterr().err


def test_bad_build_requests_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_setting("n_layer")
    assert parse_setting("lr=3e-4") == ("lr", 3e-4) and parse_setting("gelu=tanh") == ("gelu", "tanh")
    with pytest.raises(UserError, match="--from-checkpoint replaces training"):
        build("corpus.txt", from_checkpoint=tmp_path, out=tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        build(from_checkpoint=tmp_path / "nope", out=tmp_path / "out")
