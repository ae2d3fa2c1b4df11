"""Which onnxruntime a graph needs: the oldest release that loads and runs it, from its operators.

Each variant records the answer (``Variant.min_onnxruntime``) when it is made, so ``load`` can
refuse, in one line naming both versions, a variant the installed onnxruntime would reject with a
schema error about input counts. The table is measured, not read from release notes: each kind of
variant gptedge writes was loaded and run in throwaway environments with each onnxruntime release
(README, "onnxruntime versions").
"""

from __future__ import annotations

import onnx

from gptedge.runtime import contract

BASE = "1.20"  # the oldest release measured; the exported graph's standard ops all run there

# (domain, op type, number of inputs it is given) -> the oldest onnxruntime that accepts it.
# None as the count: any number of inputs.
NEEDS: dict[tuple[str, str, int | None], str] = {
    ("com.microsoft", "GroupQueryAttention", 17): "1.32",
}


def oldest_onnxruntime(model: onnx.ModelProto) -> str:
    """The newest of the minimum versions the graph's nodes need (``BASE`` for standard ops)."""
    needed = [BASE]
    for node in model.graph.node:
        for key in ((node.domain, node.op_type, len(node.input)), (node.domain, node.op_type, None)):
            if key in NEEDS:
                needed.append(NEEDS[key])
    return max(needed, key=contract.version_tuple)
