"""Generation from a gptedge bundle with nothing but onnxruntime, tokenizers and numpy.

    import gptedge.runtime
    model = gptedge.runtime.load("bundle/")
    print(model.generate("Once upon a time").text)

The names below are the runtime's public API, what the demo, export and measure use (the modules
``contract`` and ``records`` describe bundles); they are imported on first use, so
``import gptedge.runtime`` (and ``gptedge --help``) does not pay for onnxruntime until it is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # generating text
    "load": "gptedge.runtime.model",
    "Model": "gptedge.runtime.model",
    "TextStream": "gptedge.runtime.model",
    "GenerationSettings": "gptedge.runtime.settings",
    "GenerationResult": "gptedge.runtime.generation",
    # many requests coming and going in one batch (gptedge serve)
    "Engine": "gptedge.runtime.engine",
    "Busy": "gptedge.runtime.engine",
    "Job": "gptedge.runtime.engine",
    "Event": "gptedge.runtime.engine",
    # looking at the next token (the demo's Next word view)
    "Candidate": "gptedge.runtime.next_token",
    "next_token_candidates": "gptedge.runtime.next_token",
    "token_probabilities": "gptedge.runtime.next_token",
    "token_logprobs": "gptedge.runtime.next_token",
    "StreamDecoder": "gptedge.runtime.text",
    # looking inside the model (the inspection variant)
    "Inspection": "gptedge.runtime.inspection",
    "run_inspection": "gptedge.runtime.inspection",
    "token_bytes": "gptedge.runtime.text",
    # running a variant's graph step by step (export's parity checks, quantize, eval)
    "Decoder": "gptedge.runtime.decoder",
    "Cache": "gptedge.runtime.decoder",
    "left_pad": "gptedge.runtime.padding",
    "read_tokenizer": "gptedge.runtime.model",
    "PREFILL_LOGITS": "gptedge.runtime.generation",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gptedge.runtime' has no attribute {name!r}")
