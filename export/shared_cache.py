"""A cache that does not move: each layer's attention as GroupQueryAttention over a preallocated buffer.

After ``fuse_attention`` every layer is one ``MultiHeadAttention(q, k, v, mask, past) -> present``
whose present is a *new* tensor of P + T positions: each decode step copies the whole cache into
it, so a step near the end of the context costs clearly more than one early on (README). onnxruntime's
``GroupQueryAttention`` can instead write the new keys and values *into* the past buffer when the
caller binds the same memory as past and present (``past_present_share_buffer``): the buffer is
allocated once, (B, nh, C, hs), and a step writes only its own column.

The rewrite keeps the graph's inputs (``input_ids``, ``attention_mask``, ``position_ids``, the
past) and their meaning, so every caller feeds both layouts alike (left padding included), with
one freedom more: the mask may be wider than the P + T slots in use, zeros after them. The
runtime uses it to bind one (B, C) mask buffer once and set one slot per step, instead of
handing onnxruntime a new, wider mask every token (which costs more than everything else the
Python loop does per token at the gpt2 size: creating an input tensor touches memory that the
step's 500 MB of weights just pushed out of the CPU caches).

- the slots in use are the most 1s in any row (with left padding the longest row has none):
  ``total_sequence_length``; every row fills the same slots, padding included, so ``seqlens_k``
  is that - 1 for every row (a row whose prompt is still all padding in an early prefill chunk
  included);
- the padding goes in as GroupQueryAttention's ``attention_bias``, (B, 1, T, slots): 0 for a real
  token, ``MASKED`` for padding; the causal part is the op's own (``causal=1``) on slot indexes,
  as in the exported graph. ``MASKED`` is finite, and small enough for fp16: a padding query whose
  keys are all masked then averages them instead of producing NaN;
- the past and present sizes become ``contract.CACHE_CAPACITY``: the runtime allocates C slots and
  binds the same buffer as both (``runtime.decoder``, cache layout "shared").

Each layer's query, key and value go in packed, as the one tensor the QKV projection makes (its
Split goes), and the old mask subgraph is dropped once no node reads it.
"""

from __future__ import annotations

import copy

import onnx
from onnx import TensorProto, helper

from gptedge.runtime import contract

MASKED = -10000.0  # attention bias on padding keys (fp16 holds it; exp(-1e4) is 0 in fp32 too)
_PREFIX = "shared_cache"


def _mask_nodes(dtype: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], tuple[str, str, str, str]]:
    """Nodes computing GroupQueryAttention's (seqlens_k, total_sequence_length, attention_bias,
    query_seqlens) from attention_mask and input_ids."""
    p = _PREFIX
    mask = contract.ATTENTION_MASK
    consts = [
        helper.make_tensor(f"{p}_one", TensorProto.INT64, [], [1]),
        helper.make_tensor(f"{p}_one_1d", TensorProto.INT64, [1], [1]),
        helper.make_tensor(f"{p}_zero_1d", TensorProto.INT64, [1], [0]),
        helper.make_tensor(f"{p}_zero_bias", dtype, [], [0.0]),
        helper.make_tensor(f"{p}_masked_bias", dtype, [], [MASKED]),
        helper.make_tensor(f"{p}_bias_axes", TensorProto.INT64, [2], [1, 2]),
    ]
    nodes = [
        # Slots in use: the most 1s in any row. With left padding the longest row has no padding,
        # and every row fills the same slots (even one still all padding in an early prefill chunk).
        helper.make_node("ReduceSum", [mask, f"{p}_one_1d"], [f"{p}_real"], keepdims=0),  # (B,)
        helper.make_node("ReduceMax", [f"{p}_real"], [f"{p}_total_1d"], keepdims=1),  # (1,)
        helper.make_node("Sub", [f"{p}_total_1d", f"{p}_one"], [f"{p}_last_1d"]),
        helper.make_node("Cast", [f"{p}_last_1d"], [f"{p}_last_1d_i32"], to=TensorProto.INT32),
        helper.make_node("Shape", [mask], [f"{p}_batch_1d"], start=0, end=1),  # (1,) = (B,)
        helper.make_node("Expand", [f"{p}_last_1d_i32", f"{p}_batch_1d"], [f"{p}_seqlens_k"]),  # (B,)
        helper.make_node("Squeeze", [f"{p}_total_1d"], [f"{p}_total_i64"]),
        helper.make_node("Cast", [f"{p}_total_i64"], [f"{p}_total"], to=TensorProto.INT32),  # scalar
        # Padding bias over the slots in use, (B, 1, T, total).
        helper.make_node("Slice", [mask, f"{p}_zero_1d", f"{p}_total_1d", f"{p}_one_1d"], [f"{p}_mask_used"]),
        helper.make_node("Cast", [f"{p}_mask_used"], [f"{p}_keep"], to=TensorProto.BOOL),
        helper.make_node("Where", [f"{p}_keep", f"{p}_zero_bias", f"{p}_masked_bias"], [f"{p}_bias_2d"]),
        helper.make_node("Unsqueeze", [f"{p}_bias_2d", f"{p}_bias_axes"], [f"{p}_bias_row"]),  # (B, 1, 1, total)
        helper.make_node("Shape", [contract.INPUT_IDS], [f"{p}_query_1d"], start=1, end=2),  # (1,) = (T,)
        helper.make_node("Concat", [f"{p}_batch_1d", f"{p}_one_1d", f"{p}_query_1d", f"{p}_total_1d"],
                         [f"{p}_bias_shape"], axis=0),
        helper.make_node("Expand", [f"{p}_bias_row", f"{p}_bias_shape"], [f"{p}_bias"]),
        # Every row's T tokens are new (no right padding inside a chunk).
        helper.make_node("Cast", [f"{p}_query_1d"], [f"{p}_query_1d_i32"], to=TensorProto.INT32),
        helper.make_node("Expand", [f"{p}_query_1d_i32", f"{p}_batch_1d"], [f"{p}_query_seqlens"]),  # (B,)
    ]
    for i, n in enumerate(nodes):
        n.name = f"{p}_{i}_{n.op_type}"
    return nodes, consts, (f"{p}_seqlens_k", f"{p}_total", f"{p}_bias", f"{p}_query_seqlens")


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes, initializers and value_info that nothing reaches the graph outputs through."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _packed(qkv: list[str], producers: dict[str, onnx.NodeProto]) -> tuple[str, str, str] | None:
    """(packed QKV, "", "") when q, k and v are the three equal parts of one tensor's last axis,
    in that order (the exporter's ``c_attn`` output split in three): GroupQueryAttention then
    reads the packed tensor itself, and the Split goes."""
    split = producers.get(qkv[0])
    if split is None or split.op_type != "Split" or list(split.output) != list(qkv):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in split.attribute}
    sizes_given = len(split.input) > 1 and split.input[1]
    if attrs.get("axis") not in (2, -1) or sizes_given or attrs.get("num_outputs") != 3:
        return None
    return split.input[0], "", ""


def to_group_query_attention(model: onnx.ModelProto, shape: contract.ModelShape) -> int:
    """Rewrite, in place, every fused MultiHeadAttention with past/present into GroupQueryAttention
    over a shared buffer; returns how many layers. Call only when every layer was fused."""
    graph = model.graph

    def is_attention(node: onnx.NodeProto) -> bool:
        return node.op_type == "MultiHeadAttention" and node.domain == "com.microsoft"

    layers = sum(map(is_attention, graph.node))
    if not layers:
        return 0
    dtype = next(v.type.tensor_type.elem_type for v in graph.input if v.name == contract.past_names(0)[0])
    mask_nodes, consts, (seqlens_k, total, bias, query_seqlens) = _mask_nodes(dtype)
    producers = {out: node for node in graph.node for out in node.output}
    nodes = list(mask_nodes)
    for node in graph.node:
        if not is_attention(node):
            nodes.append(node)
            continue
        q, k, v = _packed(node.input[0:3], producers) or node.input[0:3]
        past_key, past_value = node.input[6:8]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        gqa = helper.make_node(
            "GroupQueryAttention",
            [q, k, v, past_key, past_value, seqlens_k, total, *[""] * 3, bias, *[""] * 5, query_seqlens],
            list(node.output),
            name=node.name.replace("MultiHeadAttention", "GroupQueryAttention"),
            domain="com.microsoft",
            num_heads=shape.n_head,
            kv_num_heads=shape.n_head,
            **({"scale": attrs["scale"]} if "scale" in attrs else {}),
        )
        nodes.append(gqa)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts)
    _prune(graph)
    cache_names = {n for i in range(shape.n_layer) for n in (*contract.past_names(i), *contract.present_names(i))}
    for value in (*graph.input, *graph.output):
        if value.name in cache_names:
            value.type.tensor_type.shape.dim[2].dim_param = contract.CACHE_CAPACITY
    return layers



def without_query_seqlens(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph for onnxruntime before 1.32 (onnxruntime-node, -web, mobile packages), which
    refuses GroupQueryAttention's 17th input: each node keeps its inputs up to ``attention_bias``.
    Logits are unchanged at batch 1 (a batch of several left-padded rows fed in chunks over a past
    needs the dropped input). Returns a copy; the original is untouched."""
    model = copy.deepcopy(model)
    for node in model.graph.node:
        if node.domain == "com.microsoft" and node.op_type == "GroupQueryAttention" and len(node.input) >= 17:
            kept = list(node.input[:16])
            while kept and not kept[-1]:
                kept.pop()
            del node.input[:]
            node.input.extend(kept)
    _prune(model.graph)
    return model
