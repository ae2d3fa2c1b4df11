"""Let onnxruntime's fusions see the attention: one MultiHeadAttention per layer, cache included.

The exported graph computes attention as the PyTorch model does, op by op: per layer
``present = Concat(past, new)`` for the key and the value, then Q·Kᵀ (through a reshape, a
transpose and a scale of the *whole* key cache), the additive mask, Softmax and ·V. Every decode
step so copies the full cache several times, and the step time grows with the past.

onnxscript's onnxruntime fusions (``onnxscript.rewriter.ort_fusions``) know this pattern and turn
it into ``com.microsoft.MultiHeadAttention(q, k_new, v_new, attention_bias=mask, past_key,
past_value) -> (out, present_key, present_value)``: the same cache contract (present = past + new,
(B, nh, P + T, hs)), with the concatenation and the attention in one kernel. Their rule only fires
when it can *prove* the shapes fit, and the exported graph does not state two facts it needs:

1. the mask's query length is written ``Max(0, total_sequence_length - Min(past_sequence_length,
   total_sequence_length))``: torch.export cannot declare ``total = past + sequence``, so it never
   learns that this is just ``sequence_length``. The contract says it is (``contract.TOTAL_SEQUENCE``),
   so ``name_dims_by_contract`` simplifies every symbolic size with that identity;
2. the cache Concat is spelled ``axis=2``, the rule's pattern ``axis=-2`` (the same axis of a 4-D
   tensor), so ``spell_cache_concat`` rewrites the attribute.

Neither changes what the graph computes. ``fused_layers`` then says how many layers the fusion
reached, so a change in the exporter that defeats it shows up in the op counts and the tests.
"""

from __future__ import annotations

import functools
import re

import onnx
import sympy

from gptedge.runtime import contract

# Sizes are non-negative whole numbers: sympy then knows Min(P, P + T) = P and Max(0, T) = T.
_SIZE = dict(integer=True, nonnegative=True)
# sympify evaluates its input, and a graph file's size names are not to be trusted: only strings
# made of the contract's three size names, Min, Max, whole numbers and + - * ( ) , are parsed.
_NAMES_ALLOWED = {contract.PAST_SEQUENCE, contract.SEQUENCE, contract.TOTAL_SEQUENCE, "Min", "Max"}
_EXPRESSION = re.compile(r"[A-Za-z0-9_+\-*(), ]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@functools.lru_cache(maxsize=None)
def _contract_name(dim_param: str) -> str:
    """The contract's name for a symbolic size, when the identity total = past + sequence makes it
    one of the contract's sizes; otherwise the name unchanged."""
    if not _EXPRESSION.fullmatch(dim_param) or not set(_NAME.findall(dim_param)) <= _NAMES_ALLOWED:
        return dim_param  # e.g. "batch_size", "unk__3": not about the sequence lengths
    names = (contract.PAST_SEQUENCE, contract.SEQUENCE, contract.TOTAL_SEQUENCE)
    past, seq, total = (sympy.Symbol(n, **_SIZE) for n in names)
    try:
        size = sympy.sympify(dim_param, locals={s.name: s for s in (past, seq, total)})
    except (sympy.SympifyError, SyntaxError, TypeError):  # e.g. unbalanced parentheses
        return dim_param
    if not isinstance(size, sympy.Expr):
        return dim_param
    size = sympy.simplify(size.subs(total, past + seq))
    for name, value in zip(names, (past, seq, past + seq)):
        if sympy.simplify(size - value) == 0:
            return name
    return dim_param


def name_dims_by_contract(model: onnx.ModelProto) -> int:
    """Rename symbolic sizes that equal a contract size to its name; returns how many changed."""
    changed = 0
    graph = model.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and (name := _contract_name(dim.dim_param)) != dim.dim_param:
                dim.dim_param = name
                changed += 1
    return changed


def spell_cache_concat(model: onnx.ModelProto, shape: contract.ModelShape) -> int:
    """Write each layer's cache Concat (the producer of a present output) with axis -2, the
    spelling the fusion rule matches; returns how many were rewritten."""
    presents = {name for i in range(shape.n_layer) for name in contract.present_names(i)}
    changed = 0
    for node in model.graph.node:
        if node.op_type == "Concat" and presents.intersection(node.output):
            for attr in node.attribute:
                if attr.name == "axis" and attr.i == 2:
                    attr.i = -2
                    changed += 1
    return changed


def prepare(model: onnx.ModelProto, shape: contract.ModelShape) -> None:
    """Both rewrites above, in place, before the fusions run."""
    name_dims_by_contract(model)
    spell_cache_concat(model, shape)


def fused_layers(model: onnx.ModelProto, shape: contract.ModelShape, op_type: str = "MultiHeadAttention") -> int:
    """How many layers' present key and value come straight out of one com.microsoft ``op_type``."""
    producers = {out: node for node in model.graph.node for out in node.output}
    count = 0
    for i in range(shape.n_layer):
        nodes = [producers.get(name) for name in contract.present_names(i)]
        if all(n is not None and n.op_type == op_type and n.domain == "com.microsoft" for n in nodes):
            count += 1
    return count
