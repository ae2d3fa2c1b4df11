"""int8: 8-bit weights for CPUs, the safe default, in one of two formats (``FORMATS``).

"per-channel" (the default): every weight matrix is stored as int8 with one scale per output
channel; activations are quantized to uint8 on the fly at each run (``DynamicQuantizeLinear``) and
the products run as integer matmuls (onnxruntime fuses them into ``DynamicQuantizeMatMul``), so no
calibration data is needed. Its integer GEMM makes the prompt's prefill fast.

"blocks": 8-bit symmetric blocks along each matrix's input dimension, run by ``MatMulNBits``
(the format of onnxruntime-genai's int8), as the int4 variant's blocks but at 8 bits. Its
single-row kernel streams the weights faster, so decode is faster on x86 CPUs with AVX-512, while
the prefill of a prompt is slower (the README has both figures): the choice for long answers to
short prompts. It needs a newer onnxruntime (``export.compat``). It was measured on an AVX-512 VNNI
CPU only.

Either way the tied token matrix is stored once, as the head's 8-bit weights (see
``tied_embedding``); the position table stays fp32 (context x C floats).

``reduce_range`` (7-bit weights) is for x86 CPUs without VNNI: there onnxruntime multiplies
uint8 x int8 with AVX2's ``vpmaddubsw``, which adds pairs of products in int16 and saturates;
with per-channel scales that saturation multiplied the logit error several times (measured on an
AVX2 machine, see the field notes). VNNI (``avx512_vnni`` / ``avx_vnni``) accumulates in int32 and
takes the full 8 bits; on a VNNI CPU per-channel int8 measured the best of the four settings in
top-1 agreement with fp32. The choice is made on the machine
that quantizes and recorded in the manifest: quantize on (or for) the kind of CPU that will run it.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

import onnx

from gptedge.export import tied_embedding


def cpu_vnni_flags() -> list[str]:
    """The VNNI flags of this CPU (Linux: /proc/cpuinfo); empty when it has none or cannot tell."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return sorted(flags & {"avx512_vnni", "avx_vnni"})


def reduce_range() -> tuple[bool, str]:
    """Whether to quantize weights to 7 bits on this machine, and why (for the user)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return False, f"{machine} CPU: full 8-bit weights (its int8 dot products do not saturate)"
    vnni = cpu_vnni_flags()
    if vnni:
        return False, f"this CPU has VNNI ({', '.join(vnni)}): full 8-bit weights"
    return True, "this CPU has no VNNI (avx512_vnni/avx_vnni): 7-bit weights (reduce_range) avoid int16 saturation"


FORMATS = ("per-channel", "blocks")  # the first is the default


def quantize_int8(model: onnx.ModelProto, n_embd: int, int8_format: str = FORMATS[0]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The int8 graph of a model ``n_embd`` wide in ``int8_format`` and the settings used (for the
    manifest, where the method and the block size tell the formats apart); ``model`` is consumed."""
    if int8_format not in FORMATS:
        raise ValueError(f"int8_format={int8_format!r}: int8 is stored as {' or '.join(FORMATS)}")
    tied = tied_embedding.find(model)
    if tied is not None:
        tied_embedding.untie(model, tied)
    if int8_format == "blocks":
        return _blocks(model, n_embd, tied)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    seven_bits, reason = reduce_range()
    with tempfile.TemporaryDirectory(prefix="gptedge-int8-") as tmp:
        out = Path(tmp) / "model.int8.onnx"
        quantize_dynamic(
            model, out, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=seven_bits,
            weight_type=QuantType.QInt8,
        )
        quantized = onnx.load(str(out))
    if tied is not None:
        tied_embedding.retie_int8(quantized, tied)
    settings = {
        "method": "onnxruntime quantize_dynamic: MatMul weights int8 per channel, uint8 activations",
        "reduce_range": seven_bits,
        "reduce_range_reason": reason,
        "token_embedding": "int8 rows with a scale per token, shared with the output head" if tied else "fp32",
        "position_embedding": "fp32",
    }
    return quantized, settings


def _blocks(model: onnx.ModelProto, n_embd: int, tied: tied_embedding.TiedMatrix | None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The "blocks" format: 8-bit MatMulNBits with int4's block length and accuracy level (the
    activations go to int8 per block, the dot products are integer). The quantizer quantizes a
    Gather at 4 bits only, so the position table stays fp32 and the token table is retied."""
    from gptedge.export.quantize_int4 import ACCURACY_LEVEL, block_quantize, block_size

    block = block_size(n_embd)
    model = block_quantize(model, 8, block, ("MatMul",), exclude=[])
    if tied is not None:
        tied_embedding.retie_blockwise(model, tied, 8, block)
    settings = {
        "method": "onnxruntime MatMulNBitsQuantizer: weight-only, symmetric blocks",
        "bits": 8,
        "block_size": block,
        "accuracy_level": ACCURACY_LEVEL,
        "token_embedding": "8-bit blocks shared with the output head" if tied else "fp32",
        "position_embedding": "fp32",
    }
    return model, settings
