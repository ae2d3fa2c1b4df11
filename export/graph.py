"""Trace the GPT into one ONNX graph that serves both prefill and cached decoding.

The graph's inputs and outputs are exactly ``runtime.contract.graph_inputs`` / ``graph_outputs``:
``input_ids``, ``attention_mask``, ``position_ids`` and a past key/value per layer in, ``logits`` and
a present key/value per layer out. The first step feeds a zero-length past (B, nh, 0, hs); every
later step feeds the previous step's presents. Batch, sequence and past lengths are dynamic.

The exporter is ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript). We trace with
sample sizes of at least 2 for every dynamic dimension: torch.export specialises a dimension whose
sample size is 0 or 1, and the parity gate then proves that 0 and 1 still work at run time.
"""

from __future__ import annotations

import warnings

import onnx
import torch
import torch.nn as nn
from torch.export import Dim

from gptedge import logs
from gptedge.errors import UserError
from gptedge.runtime import contract
from gptedge.train.model import GPT

# The one place the opset is chosen. 20 is torch 2.13's default; 17 gives a graph onnxruntime
# rejects (Split num_outputs); 23 would emit the ONNX Attention op (a choice for the optimizer).
OPSET = 20

# Sample sizes for tracing: >= 2 and distinct, so torch.export treats each as symbolic and never
# confuses one dimension with another.
SAMPLE_BATCH, SAMPLE_SEQUENCE, SAMPLE_PAST = 2, 3, 4

_NUMPY_TO_ONNX = {
    "int64": onnx.TensorProto.INT64,
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
}


class FlatGPT(nn.Module):
    """The GPT with the graph's flat signature: tensors in contract order in, tensors out.

    ONNX graphs take and return flat lists of named tensors; ``GPT.forward`` takes a list of
    (key, value) pairs. This adapter only regroups, so the traced computation is ``GPT.forward``.
    """

    def __init__(self, gpt: GPT, inside: bool = False) -> None:
        super().__init__()
        self.gpt = gpt
        self.inside = inside  # also return what ``GPT.look_inside`` sees (``contract.inspection_outputs``)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, P + T)
        position_ids: torch.Tensor,  # (B, T)
        *past_key_values: torch.Tensor,  # 2 * n_layer of (B, nh, P, hs): key, value, key, value, ...
    ) -> tuple[torch.Tensor, ...]:
        past = list(zip(past_key_values[0::2], past_key_values[1::2]))
        if not self.inside:
            logits, presents = self.gpt(
                input_ids, position_ids=position_ids, attention_mask=attention_mask, past_key_values=past
            )
            return (logits, *(t for kv in presents for t in kv))  # logits (B, T, V), presents (B, nh, P + T, hs)
        logits, presents, inside = self.gpt.look_inside(
            input_ids, position_ids=position_ids, attention_mask=attention_mask, past_key_values=past
        )
        return (logits, *(t for kv in presents for t in kv), *inside.attentions, *inside.hidden_states,
                inside.lens_logits)


def model_shape(gpt: GPT) -> contract.ModelShape:
    c = gpt.config
    return contract.ModelShape(c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.context_length)


def sample_inputs(gpt: GPT) -> tuple[torch.Tensor, ...]:
    c = gpt.config
    B, T, P = SAMPLE_BATCH, SAMPLE_SEQUENCE, SAMPLE_PAST
    input_ids = torch.randint(0, c.vocab_size, (B, T))
    attention_mask = torch.ones(B, P + T, dtype=torch.long)
    position_ids = torch.arange(P, P + T).expand(B, T).contiguous()
    past = [torch.zeros(B, c.n_head, P, c.head_dim) for _ in range(2 * c.n_layer)]
    return (input_ids, attention_mask, position_ids, *past)


def dynamic_shapes(n_layer: int) -> dict[str, object]:
    """Named symbolic dimensions. The attention mask's length is its own dimension: torch.export
    cannot declare a sum of two dimensions (past + sequence), and it need not: the graph's mask
    is built from the mask's length, and ``apply_contract`` names the presents' length the same."""
    batch, seq = Dim(contract.BATCH), Dim(contract.SEQUENCE)
    past, total = Dim(contract.PAST_SEQUENCE), Dim(contract.TOTAL_SEQUENCE)
    return {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: seq},
        "past_key_values": tuple({0: batch, 2: past} for _ in range(2 * n_layer)),
    }


def trace(gpt: GPT, inside: bool = False) -> onnx.ModelProto:
    """Export ``gpt`` to an in-memory ONNX model whose IO is exactly the contract's; ``inside``
    adds ``contract.inspection_outputs`` (the inspection variant)."""
    shape = model_shape(gpt)
    if shape.context_length < SAMPLE_PAST + SAMPLE_SEQUENCE:
        raise UserError(f"context_length {shape.context_length} is too short to export: "
                        f"use a model with at least {SAMPLE_PAST + SAMPLE_SEQUENCE} positions")
    flat = FlatGPT(gpt, inside).eval()
    outputs = contract.graph_outputs(shape) + (contract.inspection_outputs(shape) if inside else [])
    with warnings.catch_warnings(), logs.quiet("torch.onnx._internal.exporter._registration"):
        # The exporter warns that two of our axes share one name: that is the point of naming them.
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch-internal
        program = torch.onnx.export(
            flat,
            sample_inputs(gpt),
            dynamo=True,
            dynamic_shapes=dynamic_shapes(shape.n_layer),
            opset_version=OPSET,
            input_names=[s.name for s in contract.graph_inputs(shape)],
            output_names=[s.name for s in outputs],
            verbose=False,
        )
    model = program.model_proto
    apply_contract(model, contract.graph_inputs(shape), outputs)
    strip_metadata(model)
    return model


def apply_contract(model: onnx.ModelProto, inputs: list[contract.TensorSpec], outputs: list[contract.TensorSpec]) -> None:
    """Give every graph input and output the contract's symbolic dimension names, checking that
    names, element types and fixed sizes already agree (a mismatch is a bug in the trace)."""
    io = ((model.graph.input, inputs), (model.graph.output, outputs))
    for values, specs in io:
        if [v.name for v in values] != [s.name for s in specs]:
            raise RuntimeError(f"traced graph IO {[v.name for v in values]} differs from the contract")
        for value, spec in zip(values, specs):
            tensor = value.type.tensor_type
            dims = tensor.shape.dim
            if tensor.elem_type != _NUMPY_TO_ONNX[spec.dtype] or len(dims) != len(spec.shape):
                raise RuntimeError(f"traced graph value {value.name} has the wrong type or rank")
            for dim, want in zip(dims, spec.shape):
                if isinstance(want, int):
                    if dim.dim_value != want:
                        raise RuntimeError(f"traced graph value {value.name} has size {dim.dim_value}, not {want}")
                elif dim.HasField("dim_value"):
                    raise RuntimeError(f"traced graph value {value.name} fixed its {want} at {dim.dim_value}")
                else:  # e.g. "s12" or "past_sequence_length + sequence_length" -> the contract's name
                    dim.dim_param = want


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node and per-value metadata: Python stack traces with absolute
    source paths, FX node dumps and the export signature; nothing a runtime reads."""
    for node in model.graph.node:
        del node.metadata_props[:]
    for value in model.graph.value_info:
        del value.metadata_props[:]
    del model.graph.metadata_props[:]

