"""The "shared" cache layout: the optimized graph writes into one preallocated buffer per key and
value, which the runtime binds as both past and present (``runtime/decoder.py``)."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

import gptedge.runtime
from gptedge.errors import UserError
from gptedge.runtime import contract
from gptedge.runtime.decoder import Decoder, SharedCache


@pytest.fixture(scope="module")
def decoder(optimized_bundle):
    manifest = contract.read_bundle(optimized_bundle)
    return Decoder(optimized_bundle / manifest.variants["fp32"].file, manifest)


def test_the_cache_fills_to_the_context_and_no_further(decoder):
    C, V = decoder.shape.context_length, decoder.shape.vocab_size
    tokens = np.random.default_rng(0).integers(2, V, (1, C))
    ones = np.ones((1, C), np.int64)
    positions = np.arange(C)[None]
    full = decoder.empty_cache(1).run(tokens, ones, positions)  # (1, C, V) in one pass

    cache = decoder.empty_cache(1)
    assert isinstance(cache, SharedCache) and decoder.cache_layout == "shared"
    logits = cache.run(tokens[:, : C - 2], ones[:, : C - 2], positions[:, : C - 2])
    for t in (C - 2, C - 1):  # the last two slots, one decode step each
        logits = cache.run(tokens[:, t : t + 1], ones[:, : t + 1], positions[:, t : t + 1])
        assert np.abs(logits[0, -1] - full[0, t]).max() < 1e-4
    with pytest.raises(ValueError, match=f"holds {C} positions"):
        cache.run(tokens[:, :1], np.ones((1, C + 1), np.int64), np.array([[C]]))


def test_a_wider_mask_means_the_slots_in_use(decoder, optimized_bundle):
    """The graph reads the slots in use from the last 1 of the mask: a (B, C) mask with zeros after
    them gives the logits of the exact-width mask. Run with plain onnxruntime, left padding included."""
    shape, C = decoder.shape, decoder.shape.context_length
    session = ort.InferenceSession(str(optimized_bundle / "model.opt.onnx"), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(1).integers(2, shape.vocab_size, (2, 6))
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.int64)  # row 0 left-padded by 2
    positions = np.clip(mask.cumsum(-1) - 1, 0, None)
    past = np.zeros((2, shape.n_head, C, shape.head_dim), np.float32)
    cache = {name: past for name in decoder.past_names}
    wide = np.zeros((2, C), np.int64)
    wide[:, :6] = mask
    exact = session.run([contract.LOGITS], {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **cache})
    wider = session.run([contract.LOGITS], {"input_ids": ids, "attention_mask": wide, "position_ids": positions, **cache})
    assert np.abs(exact[0] - wider[0])[mask.astype(bool)].max() < 1e-5


def test_manifest_and_graph_must_agree_on_the_layout(optimized_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(optimized_bundle, bundle)
    manifest = contract.read_manifest(bundle)
    manifest.variants["fp32"].cache_layout = "concat"
    contract.write_manifest(bundle, manifest)
    with pytest.raises(UserError, match="shared float32 cache, the manifest says concat .*re-create the variant"):
        gptedge.runtime.load(bundle, provider="cpu", threads=1)

    raw = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    raw["variants"]["fp32"]["cache_layout"] = "ring"
    (bundle / contract.MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"variants.fp32.cache_layout is 'ring', not one of concat, shared"):
        contract.read_manifest(bundle)
