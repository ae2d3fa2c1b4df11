"""The tied token matrix, stored once in every variant.

The GPT reads and writes tokens with one (V, C) matrix: the embedding takes rows of it
(``Gather(table, input_ids)``) and the output head multiplies by its transpose
(``MatMul(h, Transpose(table))``). The exported graph keeps it once, but onnxruntime's quantizers
only quantize a MatMul whose weight is an initializer and a Gather on its own, so left alone they
would keep the head in fp32 or store the matrix twice.

So quantization goes in three steps:

1. ``untie``: give the head its own (C, V) initializer, so the quantizer quantizes it;
2. the quantizer runs (the head is now an ordinary weight);
3. ``retie_int8`` / ``retie_blockwise`` / ``retie_qdq`` (one per quantizer's output format): point
   the embedding at the head's quantized weights and drop the fp32 table, so the file holds the
   matrix once, in the head's format. Transposes and reshapes of constants are folded by
   onnxruntime when the session loads (memory then holds both layouts; the file holds one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass(frozen=True)
class TiedMatrix:
    table: str  # the (V, C) initializer the embedding Gather reads
    gather: str  # name of the embedding Gather node
    head: str  # name of the output head's MatMul node
    head_weight: str  # the head's weight input, (C, V) once untied


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: n for n in model.graph.node for out in n.output}


def find(model: onnx.ModelProto) -> TiedMatrix | None:
    """The tied matrix, either as exported (the head reads ``Transpose(table)``) or already
    untied by an optimizer (the head's own initializer equal to ``table.T``); None if the graph
    has no output head sharing the embedding's weights."""
    inits = _initializers(model)
    producers = _producers(model)
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    for head in (n for n in model.graph.node if n.op_type == "MatMul"):
        weight = head.input[1]
        source = producers.get(weight)
        for gather in gathers:
            table = gather.input[0]
            if source is not None and source.op_type == "Transpose" and source.input[0] == table:
                return TiedMatrix(table, gather.name, head.name, weight)
            if source is None and weight in inits and tuple(inits[weight].dims) == tuple(inits[table].dims)[::-1]:
                if np.array_equal(numpy_helper.to_array(inits[weight]), numpy_helper.to_array(inits[table]).T):
                    return TiedMatrix(table, gather.name, head.name, weight)
    return None


def untie(model: onnx.ModelProto, tied: TiedMatrix) -> None:
    """Replace ``Transpose(table)`` by a (C, V) initializer of the same name (no-op if already one)."""
    graph = model.graph
    transpose = _producers(model).get(tied.head_weight)
    if transpose is None:
        return
    table = numpy_helper.to_array(_initializers(model)[tied.table])  # (V, C)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(table.T), tied.head_weight))
    graph.node.remove(transpose)


def _replace_gather(model: onnx.ModelProto, tied: TiedMatrix, nodes: list[onnx.NodeProto]) -> None:
    """Swap the embedding Gather for ``nodes`` (which must produce its output) and drop the table."""
    graph = model.graph
    index = next(i for i, n in enumerate(graph.node) if n.name == tied.gather)
    del graph.node[index]
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    graph.initializer.remove(_initializers(model)[tied.table])


def retie_int8(model: onnx.ModelProto, tied: TiedMatrix) -> None:
    """After ``quantize_dynamic(per_channel=True)``: the head holds an int8 (C, V) weight with one
    scale per token (symmetric, zero point 0). Store it once as an int8 (V, C) table; the head reads
    its transpose and the embedding dequantizes the rows it gathers: row * scale[token]."""
    graph = model.graph
    inits = _initializers(model)
    quantized, scale, zero_point = (inits[f"{tied.head_weight}_{s}"] for s in ("quantized", "scale", "zero_point"))
    if numpy_helper.to_array(zero_point).any() or len(scale.dims) != 1:
        raise RuntimeError("the output head was not quantized symmetrically per channel")
    gather = next(n for n in graph.node if n.name == tied.gather)
    ids, out = gather.input[1], gather.output[0]

    table_name = f"{tied.table}_int8"
    table = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(quantized).T), table_name)  # (V, C)
    graph.initializer.remove(quantized)
    graph.initializer.append(table)
    axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{tied.table}_axes")
    graph.initializer.append(axes)
    p = f"{tied.gather}_int8"  # prefix of the new value names
    _replace_gather(model, tied, [
        helper.make_node("Transpose", [table_name], [quantized.name], name=f"{tied.head}_tied_weight", perm=[1, 0]),
        helper.make_node("Gather", [table_name, ids], [f"{p}_rows"], name=f"{p}_rows"),  # (B, T, C) int8
        helper.make_node("Cast", [f"{p}_rows"], [f"{p}_rows_f"], name=f"{p}_cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [scale.name, ids], [f"{p}_scale"], name=f"{p}_scale"),  # (B, T)
        helper.make_node("Unsqueeze", [f"{p}_scale", axes.name], [f"{p}_scale_u"], name=f"{p}_unsqueeze"),
        helper.make_node("Mul", [f"{p}_rows_f", f"{p}_scale_u"], [out], name=f"{p}_dequantize"),  # (B, T, C)
    ])


def retie_blockwise(model: onnx.ModelProto, tied: TiedMatrix, bits: int, block_size: int) -> None:
    """After ``MatMulNBitsQuantizer``: the head is a MatMulNBits whose weight is packed per output
    column, i.e. per token, as (V, C / block, block * bits / 8) bytes with scales (V, C / block):
    exactly a row-wise block-quantized (V, C) table. The embedding becomes a GatherBlockQuantized
    reading those bytes (MatMulNBits's unsigned layout, implicit zero point 8 or 128)."""
    graph = model.graph
    inits = _initializers(model)
    packed, scales = inits[f"{tied.head_weight}_Q{bits}"], inits[f"{tied.head_weight}_scales"]
    n_tokens, n_blocks, blob = packed.dims
    gather = next(n for n in graph.node if n.name == tied.gather)
    ids, out = gather.input[1], gather.output[0]
    shape = numpy_helper.from_array(np.array([n_tokens, n_blocks * blob], dtype=np.int64), f"{tied.table}_packed_shape")
    graph.initializer.append(shape)
    p = f"{tied.gather}_q{bits}"
    rows = f"{p}_table"
    _replace_gather(model, tied, [
        helper.make_node("Reshape", [packed.name, shape.name], [rows], name=f"{p}_table"),  # (V, C * bits / 8)
        helper.make_node(
            "GatherBlockQuantized", [rows, ids, scales.name], [out], name=p, domain="com.microsoft",
            gather_axis=0, quantize_axis=1, block_size=block_size, bits=bits,
        ),
    ])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def retie_qdq(model: onnx.ModelProto, tied: TiedMatrix) -> None:
    """After ``quantize_static`` (QDQ) with the embedding Gather left out: the head's weight is
    ``DequantizeLinear`` of an int8 (C, V) tensor with one scale per token (axis 1). The embedding
    gathers from a DequantizeLinear of the same int8 tensor, transposed to (V, C), with the same
    per-token scales (axis 0), and the fp32 table goes."""
    graph = model.graph
    head = next(n for n in graph.node if n.name == tied.head)
    head_dq = _producers(model)[head.input[1]]
    if head_dq.op_type != "DequantizeLinear":
        raise RuntimeError("the quantizer did not put a DequantizeLinear before the output head")
    quantized, scale, zero_point = head_dq.input
    gather = next(n for n in graph.node if n.name == tied.gather)
    ids, out = gather.input[1], gather.output[0]
    p = f"{tied.gather}_qdq"
    _replace_gather(model, tied, [
        helper.make_node("Transpose", [quantized], [f"{p}_rows_q"], name=f"{p}_transpose", perm=[1, 0]),  # (V, C) int8
        helper.make_node("DequantizeLinear", [f"{p}_rows_q", scale, zero_point], [f"{p}_table"], name=f"{p}_dequantize", axis=0),
        helper.make_node("Gather", [f"{p}_table", ids], [out], name=p),  # (B, T, C)
    ])
