"""The exported graph itself: its IO is exactly the contract, it runs with any batch and with a
zero-length past, the tied matrix is stored once, and nothing local leaks into the file."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from gptedge.export import graph
from gptedge.runtime import contract
from gptedge.runtime.decoder import Decoder
from gptedge.train.checkpoint import load_checkpoint

ONNX_DTYPES = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT: "float32"}


@pytest.fixture(scope="module")
def onnx_model(tiny_bundle) -> onnx.ModelProto:
    return onnx.load(str(tiny_bundle / "model.onnx"))


@pytest.fixture(scope="module")
def gpt(export_checkpoint):
    return load_checkpoint(export_checkpoint).model


def _read_back(values) -> list[contract.TensorSpec]:
    specs = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
        specs.append(contract.TensorSpec(v.name, ONNX_DTYPES[t.elem_type], dims))
    return specs


def test_graph_io_is_exactly_the_contract(onnx_model, tiny_bundle):
    shape = contract.read_bundle(tiny_bundle).model
    assert _read_back(onnx_model.graph.input) == contract.graph_inputs(shape)
    assert _read_back(onnx_model.graph.output) == contract.graph_outputs(shape)
    assert onnx_model.graph.input[1].type.tensor_type.shape.dim[1].dim_param == "total_sequence_length"
    assert onnx_model.graph.output[1].type.tensor_type.shape.dim[2].dim_param == "total_sequence_length"
    assert [o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")] == [graph.OPSET]
    onnx.checker.check_model(onnx_model)


def test_no_exporter_metadata_or_local_paths(onnx_model, tiny_bundle):
    assert not onnx_model.graph.metadata_props
    assert all(not n.metadata_props for n in onnx_model.graph.node)
    assert all(not v.metadata_props for v in onnx_model.graph.value_info)
    data = (tiny_bundle / "model.onnx").read_bytes()
    assert b"stack_trace" not in data
    assert str(Path(graph.__file__).resolve().parents[1]).encode() not in data  # the source tree's path


def test_tied_matrix_is_stored_once(onnx_model, tiny_bundle, gpt):
    c = gpt.config
    tables = [t for t in onnx_model.graph.initializer if sorted(t.dims) == sorted([c.vocab_size, c.n_embd])]
    assert len(tables) == 1
    unique_bytes = 4 * gpt.num_params()  # counts the tied matrix once
    assert contract.read_bundle(tiny_bundle).provenance.parameters == gpt.num_params()
    size = (tiny_bundle / "model.onnx").stat().st_size
    # Equal-valued constants (e.g. untrained LayerNorm weights) may be stored once, hence 0.95.
    assert 0.95 * unique_bytes <= size <= 1.05 * unique_bytes  # a second copy would add 4 * V * C
    assert 4 * c.vocab_size * c.n_embd > 0.2 * unique_bytes  # ... which is more than 5 % here


@pytest.mark.parametrize("batch", [1, 3])
def test_zero_length_past_and_single_token_steps(tiny_bundle, gpt, batch):
    """Prefill from a zero-length past, then steps of one token: each output matches PyTorch."""
    manifest = contract.read_bundle(tiny_bundle)
    decoder = Decoder(tiny_bundle / "model.onnx", manifest)
    nh, hs = manifest.model.n_head, manifest.model.head_dim
    ids = np.random.default_rng(batch).integers(0, manifest.model.vocab_size, (batch, 9))
    with torch.inference_mode():
        want, _ = gpt(torch.from_numpy(ids))  # (B, 9, V), no cache
    cache = decoder.empty_cache(batch)
    assert cache.host()[0].shape == (batch, nh, 0, hs)
    T = 6
    positions = np.tile(np.arange(T), (batch, 1))
    logits = cache.run(ids[:, :T], np.ones((batch, T), np.int64), positions)
    assert logits.shape == (batch, T, manifest.model.vocab_size)
    np.testing.assert_allclose(logits, want[:, :T].numpy(), atol=1e-4)
    for t in range(T, 9):
        logits = cache.run(ids[:, t : t + 1], np.ones((batch, t + 1), np.int64), np.full((batch, 1), t))
        assert logits.shape == (batch, 1, manifest.model.vocab_size)
        assert all(c.shape == (batch, nh, t + 1, hs) for c in cache.host())
        np.testing.assert_allclose(logits[:, 0], want[:, t].numpy(), atol=1e-4)
