"""int4: weight-only block quantization for CPUs, the smallest variant.

Each weight matrix is cut into blocks along its input dimension; a block keeps 4-bit integers and
one fp32 scale (symmetric). Blocks are as long as the model's width allows, up to 128 values
(``block_size``): onnxruntime-genai's builder uses 32, but at the gpt2 shape blocks of 128 decoded
clearly faster here (fewer scales to read, and a faster kernel path) for a perplexity cost that
stays far inside the int4 budget (``gptedge eval``; figures in the README). The matmuls run as
onnxruntime's ``MatMulNBits``; ``accuracy_level`` 4 lets it quantize the activations to int8 and
use integer dot products (measured clearly faster than level 0, which computes in fp32; see the
field notes). The position table is block-quantized too (``GatherBlockQuantized``), and the tied
token matrix is stored once, as the output head's packed weights, which the embedding gathers rows
from (see ``tied_embedding``).

The output head is where 4 bits cost most quality: its errors land directly on the logits. It is
also the largest single matrix (V x C, stored once for the head and the embedding), and decode
reads all of it every token, so at a GPT-2-sized vocabulary it is a large share of the file and of
each step's memory traffic. ``HEAD_BITS`` stores it at 4 bits by default, as onnxruntime-genai
does: measured with ``gptedge eval`` (figures in the README) the perplexity stays well within the
int4 budget on our models, while the file shrinks by V x C / 2 bytes. ``head_bits=8``
(``gptedge quantize --head-bits 8``) keeps the logits closer to fp32 (higher top-1 and greedy
agreement) for that size.
"""

from __future__ import annotations

from typing import Any

import onnx

from gptedge.export import tied_embedding

BLOCK_SIZES = (128, 64, 32, 16)  # the longest that divides the width is used (MatMulNBits takes 16..256)
ACCURACY_LEVEL = 4
HEAD_BITS = 4
HEAD_BITS_CHOICES = (4, 8)  # what GatherBlockQuantized reads back for the tied token table


def block_size(n_embd: int) -> int:
    """The block length for a model ``n_embd`` wide: every matrix's input dimension (and the
    embeddings' width) is a multiple of n_embd, so blocks that divide it never straddle a row."""
    return next((b for b in BLOCK_SIZES if n_embd % b == 0), BLOCK_SIZES[-1])


def block_quantize(
    model: onnx.ModelProto, bits: int, block: int, op_types: tuple[str, ...], exclude: list[str]
) -> onnx.ModelProto:
    """onnxruntime's weight-only quantizer: symmetric ``bits``-bit blocks of ``block`` values along
    each matrix's input dimension (MatMulNBits) and, for "Gather", along the embedding's width."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block,
        is_symmetric=True,
        accuracy_level=ACCURACY_LEVEL,
        nodes_to_exclude=exclude,
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),  # blocks along the input dim / the embedding dim
    )
    quantizer.process()
    return quantizer.model.model


def quantize_int4(
    model: onnx.ModelProto, n_embd: int, head_bits: int = HEAD_BITS
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The int4 graph of a model ``n_embd`` wide (output head at ``head_bits``: 4 or 8) and the
    settings used; ``model`` is consumed."""
    if head_bits not in HEAD_BITS_CHOICES:
        raise ValueError(f"head_bits={head_bits!r}: the output head is stored at 4 or 8 bits")
    block = block_size(n_embd)
    tied = tied_embedding.find(model)
    keep = []
    if tied is not None:
        tied_embedding.untie(model, tied)
        keep = [tied.gather] + ([tied.head] if head_bits != 4 else [])
    model = block_quantize(model, 4, block, ("MatMul", "Gather"), exclude=keep)
    if tied is not None:
        if head_bits != 4:
            # The blocks' other MatMuls (attention scores) have no constant weight: only the head is left.
            model = block_quantize(model, head_bits, block, ("MatMul",), exclude=[])
        tied_embedding.retie_blockwise(model, tied, head_bits, block)
    settings = {
        "method": "onnxruntime MatMulNBitsQuantizer: weight-only, symmetric blocks",
        "bits": 4,
        "block_size": block,
        "accuracy_level": ACCURACY_LEVEL,
        "output_head_bits": head_bits if tied is not None else 4,
        "token_embedding": f"{head_bits}-bit blocks shared with the output head" if tied else "4-bit blocks",
        "position_embedding": "4-bit blocks",
    }
    return model, settings
