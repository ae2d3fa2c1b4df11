"""Looking inside the model: the inspection variant (made by the real ``gptedge inspect --make``),
``model.inspect`` and the ``gptedge inspect`` command. The attention maps must be attention:
rows sum to 1, exactly zero above the causal diagonal and over left padding, equal to PyTorch's
weights; the last layer's logit lens must be the model's own next-token distribution."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

import gptedge.runtime
from cli_checks import one_line_error
from gptedge.cli import main
from gptedge.errors import UserError
from gptedge.export import inspection
from gptedge.runtime import Decoder, contract, left_pad, next_token_candidates
from gptedge.runtime import run_inspection
from gptedge.train.checkpoint import load_checkpoint

TEXT = "The for statement is used to iterate over the elements of a sequence"


@pytest.fixture(scope="module")
def inspected(tmp_path_factory, optimized_bundle, export_checkpoint):
    """The build's layout (optimized fp32) with the inspection variant added by the real CLI."""
    bundle = tmp_path_factory.mktemp("inspect") / "bundle"
    shutil.copytree(optimized_bundle, bundle)
    assert main(["inspect", str(bundle), "--make", "--checkpoint", str(export_checkpoint), "-q"]) == 0
    return bundle


def test_the_variant_is_recorded_checked_and_never_auto(inspected):
    manifest = contract.read_bundle(inspected, verify=True)
    v = manifest.variants[inspection.VARIANT]
    f = v.inspection
    assert f is not None and v.cache_layout == "concat" and f.batch == 2 and f.left_padding > 0
    assert max(f.max_attention_diff, f.max_hidden_diff, f.max_logit_diff_vs_fp32) <= inspection.TOLERANCE
    assert gptedge.runtime.load(inspected).variant != inspection.VARIANT
    assert gptedge.runtime.load(inspected, variant="inspect").generate("The", max_new_tokens=3).token_ids  # still a variant


def test_attention_rows_are_probabilities_over_the_past_only(inspected):
    seen = gptedge.runtime.load(inspected, variant="inspect").inspect(TEXT)
    L, nh, T, _ = seen.attentions.shape
    assert (L, nh) == (contract.read_manifest(inspected).model.n_layer, contract.read_manifest(inspected).model.n_head)
    assert T == len(seen.tokens) == len(seen.token_ids) and seen.hidden_states.shape[:2] == (L + 1, T)
    np.testing.assert_allclose(seen.attentions.sum(-1), 1.0, atol=1e-5)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    assert (seen.attentions[..., future] == 0).all()  # exactly zero, not merely small
    assert (seen.attentions[..., ~future] > 0).all()


def test_graph_equals_pytorch_and_padding_gets_nothing(inspected, export_checkpoint):
    manifest = contract.read_manifest(inspected)
    model = load_checkpoint(export_checkpoint).model.eval()
    tok = gptedge.runtime.load(inspected, variant="inspect")
    rows = [tok.encode(TEXT), tok.encode("A class definition")]
    ids, mask, positions = left_pad(rows, manifest.pad_token_id)
    out = run_inspection(Decoder(inspected / manifest.variants["inspect"].file, manifest), ids, mask, positions)
    with torch.no_grad():
        _, _, inside = model.look_inside(torch.from_numpy(ids), torch.from_numpy(positions), torch.from_numpy(mask))
    pad = len(rows[0]) - len(rows[1])
    for i, weights in enumerate(inside.attentions):
        ours = out[contract.attentions_name(i)]
        assert np.abs(ours - weights.numpy()).max() <= 1e-5
        assert (ours[1, :, pad:, :pad] == 0).all()  # the padded row's real queries take nothing from padding
    for i, hidden in enumerate(inside.hidden_states):
        assert np.abs(out[contract.hidden_states_name(i)] - hidden.numpy()).max() <= 1e-4


def test_the_last_layers_lens_is_the_models_next_token_distribution(inspected):
    seen = gptedge.runtime.load(inspected, variant="inspect").inspect(TEXT, k=5)
    fp32 = gptedge.runtime.load(inspected, variant="fp32")
    expected = next_token_candidates(fp32.decoder, fp32.tokenizer, fp32.encode(TEXT), k=5)
    assert [c.token_id for c in seen.lens[-1]] == [c.token_id for c in expected]
    np.testing.assert_allclose([c.probability for c in seen.lens[-1]], [c.probability for c in expected], atol=1e-5)
    assert all(len(guesses) == 5 for guesses in seen.lens)


def test_cli_writes_heatmaps_and_the_lens_table(inspected, tmp_path, capsys):
    out = tmp_path / "all"
    assert main(["inspect", str(inspected), TEXT, "--out", str(out)]) == 0
    n_layer = contract.read_manifest(inspected).model.n_layer
    assert sorted(p.name for p in out.glob("*.png")) == [f"attention_layer{i}.png" for i in range(n_layer)]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in out.glob("*.png"))
    table = (out / "lens.txt").read_text()
    assert table.count("\n") == n_layer + 1 and "guess 1" in capsys.readouterr().out
    one = tmp_path / "one"
    assert main(["inspect", str(inspected), TEXT, "--layer", "1", "--head", "0", "--out", str(one)]) == 0
    assert [p.name for p in one.glob("*.png")] == ["attention_layer1_head0.png"]


def test_bad_input(inspected, tiny_bundle, tmp_path, capsys):
    assert "no inspection variant" in one_line_error(capsys, ["inspect", str(tiny_bundle), "x", "--out", str(tmp_path)])
    assert "--layer 99 is out of range" in one_line_error(
        capsys, ["inspect", str(inspected), "x", "--layer", "99", "--out", str(tmp_path)])
    assert "give the TEXT" in one_line_error(capsys, ["inspect", str(inspected)])
    # /proc takes no folder: refused at once where it is not writable, at the first write for root
    err = one_line_error(capsys, ["inspect", str(inspected), "x", "--out", "/proc/gptedge-inspect"])
    assert err.startswith("gptedge inspect: error: cannot write ") and "/proc/gptedge-inspect (" in err
    assert "pass --checkpoint DIR" in one_line_error(capsys, ["inspect", str(tiny_bundle), "--make"])
    with pytest.raises(UserError, match="no inspection outputs"):
        gptedge.runtime.load(inspected, variant="fp32").inspect("x")
    assert list(tmp_path.iterdir()) == []
    model = gptedge.runtime.load(inspected, variant="inspect")
    V = model.manifest.model.vocab_size
    for ids, words in (({"a": 1}, "are of type dict"), ([V], f"must be in 0..{V - 1} for this model, not {V}"),
                       (np.array([1.0]), "are a 1-D float64 array"), ([[1]], "hold list")):
        with pytest.raises(UserError, match="the token ids to look at " + re.escape(words)):
            model.inspect(ids)
