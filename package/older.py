"""Graphs for a client whose onnxruntime is older than the one a variant was made for.

The clients ship their own onnxruntime: transformers.js 1.30 (Node) and 1.31 (browsers), the
React Native package 1.24. The optimized graphs need 1.32 only for GroupQueryAttention's 17th
input; without it they run from 1.22 (1.23 with the int4 token table's `bits`), with the same logits at
batch 1, which is how those clients run them. ``older_form`` says whether that rewrite brings a
variant within reach; ``write_older_form`` writes it.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from gptedge.export import compat
from gptedge.export.shared_cache import without_query_seqlens
from gptedge.runtime import contract


def runs_on(needs: str, client: str) -> bool:
    return contract.version_tuple(needs) <= contract.version_tuple(client)


def older_form(graph: Path, client: str) -> str | None:
    """The onnxruntime the graph needs once rewritten, if that runs on ``client``; else None."""
    needs = compat.oldest_onnxruntime(without_query_seqlens(onnx.load(str(graph))))
    return needs if runs_on(needs, client) else None


def write_older_form(graph: Path, path: Path) -> None:
    """The rewritten graph at ``path`` (loaded again here, so no graph waits in memory to be written)."""
    onnx.save_model(without_query_seqlens(onnx.load(str(graph))), str(path))


def note(name: str, needs: str) -> str:
    return (f"{name}: GroupQueryAttention's 17th input dropped so that onnxruntime {needs}+ runs it "
            "(same logits at batch 1)")
