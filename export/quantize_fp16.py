"""fp16: half-precision weights and activations, for GPU providers.

onnxruntime's own converter (``onnxruntime.transformers.float16``; ``onnxconverter-common`` fails
on the dynamo graph) turns every float tensor to float16, clipping constants to fp16's range, so
the attention mask's fill value (float32's lowest) becomes -65504: still a zero after softmax.

The KV cache is float16 in and out: on a GPU it is the largest tensor traffic of a decode step and
halving it is half the point. The logits stay float32, so sampling (numpy, on the host) and every
caller reading them see the same type for every variant. On CPU onnxruntime runs fp16 slower than
fp32, so the runtime's ``auto`` never picks this variant there.
"""

from __future__ import annotations

from typing import Any

import onnx

from gptedge.runtime import contract

CACHE_DTYPE = "float16"


def convert_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The fp16 graph and the settings used; ``model`` is consumed."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=[contract.LOGITS])
    settings = {
        "method": "onnxruntime.transformers.float16.convert_float_to_float16",
        "cache_dtype": CACHE_DTYPE,
        "logits_dtype": "float32",
        "token_embedding": "fp16, stored once (the head reads its transpose)",
    }
    return converted, settings
