"""Which onnxruntime a graph needs: the oldest release that loads and runs it, from its operators.

Each variant records the answer (``Variant.min_onnxruntime``) when it is made, so ``load`` can
refuse, in one line naming both versions, a variant the installed onnxruntime would reject with a
schema error about input counts. The rules are measured, not read from release notes: every kind
of variant gptedge writes was loaded and run (prefill, decode, a chunk on a past, a left-padded
batch) in throwaway environments with onnxruntime 1.16 to 1.32 (the README's table).
"""

from __future__ import annotations

from typing import Callable

import onnx

from gptedge.runtime import contract

# IR version 10, which torch.onnx writes: 1.16 and 1.17 refuse it ("max supported IR version: 9").
BASE = "1.18"


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _is(domain: str, op_type: str) -> Callable[[onnx.NodeProto], bool]:
    return lambda n: n.domain == domain and n.op_type == op_type


_GQA = _is("com.microsoft", "GroupQueryAttention")
_GATHER_BLOCKS = _is("com.microsoft", "GatherBlockQuantized")
_MATMUL_NBITS = _is("com.microsoft", "MatMulNBits")

# (the test on a node, the oldest onnxruntime that runs such a node)
RULES: list[tuple[Callable[[onnx.NodeProto], bool], str]] = [
    (lambda n: _GQA(n) and len(n.input) >= 17, "1.32"),  # query_seqlens, the 17th input
    (lambda n: _GQA(n) and len(n.input) >= 11, "1.22"),  # attention_bias, the padding mask
    (lambda n: _GATHER_BLOCKS(n) and any(a.name == "bits" for a in n.attribute), "1.23"),  # the token table's bits (4 or 8)
    (_GATHER_BLOCKS, "1.20"),
    (lambda n: _MATMUL_NBITS(n) and _attribute(n, "bits", 4) == 8, "1.22"),  # 8-bit tied output head
    (_MATMUL_NBITS, "1.20"),
]


def oldest_onnxruntime(model: onnx.ModelProto) -> str:
    """The newest of the minimum versions the graph's nodes need (``BASE`` for standard ops)."""
    needed = [BASE]
    for node in model.graph.node:
        needed += [version for applies, version in RULES if applies(node)]
    return max(needed, key=contract.version_tuple)
