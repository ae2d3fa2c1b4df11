"""int8: dynamic quantization for CPUs, the safe default.

Every weight matrix is stored as int8 with one scale per output channel; activations are
quantized to uint8 on the fly at each run (``DynamicQuantizeLinear``) and the products run as
integer matmuls, so no calibration data is needed. The tied token matrix is stored once, as the
head's int8 weights (see ``tied_embedding``); the position table stays fp32 (context x C floats).

``reduce_range`` (7-bit weights) is for x86 CPUs without VNNI: there onnxruntime multiplies
uint8 x int8 with AVX2's ``vpmaddubsw``, which adds pairs of products in int16 and saturates;
with per-channel scales that saturation multiplied the logit error by 6.6 in our measurements.
VNNI (``avx512_vnni`` / ``avx_vnni``) accumulates in int32 and takes the full 8 bits.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

import onnx

from gptedge.export import tied_embedding


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (Linux: /proc/cpuinfo flags). False when it cannot tell."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def quantize_int8(model: onnx.ModelProto, vnni: bool | None = None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The int8 graph and the settings used (for the manifest); ``model`` is consumed.
    ``vnni`` None: detect it on this machine."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if vnni is None:
        vnni = cpu_has_vnni() or platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686")
    tied = tied_embedding.find(model)
    if tied is not None:
        tied_embedding.untie(model, tied)
    with tempfile.TemporaryDirectory(prefix="gptedge-int8-") as tmp:
        out = Path(tmp) / "model.int8.onnx"
        quantize_dynamic(
            model, out, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=not vnni,
            weight_type=QuantType.QInt8,
        )
        quantized = onnx.load(str(out))
    if tied is not None:
        tied_embedding.retie_int8(quantized, tied)
    settings = {
        "method": "onnxruntime quantize_dynamic: MatMul weights int8 per channel, uint8 activations",
        "reduce_range": not vnni,
        "reduce_range_reason": (
            "this CPU has VNNI: full 8-bit weights" if vnni
            else "this CPU has no VNNI (avx512_vnni/avx_vnni): 7-bit weights (reduce_range) avoid int16 saturation"
        ),
        "token_embedding": "int8 rows with a scale per token, shared with the output head" if tied else "fp32",
        "position_embedding": "fp32",
    }
    return quantized, settings
