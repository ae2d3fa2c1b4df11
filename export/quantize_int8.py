"""int8: dynamic quantization for CPUs, the safe default.

Every weight matrix is stored as int8 with one scale per output channel; activations are
quantized to uint8 on the fly at each run (``DynamicQuantizeLinear``) and the products run as
integer matmuls, so no calibration data is needed. The tied token matrix is stored once, as the
head's int8 weights (see ``tied_embedding``); the position table stays fp32 (context x C floats).

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


def quantize_int8(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The int8 graph and the settings used (for the manifest); ``model`` is consumed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    seven_bits, reason = reduce_range()
    tied = tied_embedding.find(model)
    if tied is not None:
        tied_embedding.untie(model, tied)
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
