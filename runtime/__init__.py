"""Generation from a gptedge bundle with nothing but onnxruntime, tokenizers and numpy.

    import gptedge.runtime
    model = gptedge.runtime.load("bundle/")
    print(model.generate("Once upon a time").text)

The names below are imported on first use, so ``import gptedge.runtime`` (and ``gptedge --help``,
which reaches ``gptedge.runtime.cli``) does not pay for importing onnxruntime until it is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "gptedge.runtime.model",
    "Model": "gptedge.runtime.model",
    "TextStream": "gptedge.runtime.model",
    "GenerationSettings": "gptedge.runtime.settings",
    "GenerationResult": "gptedge.runtime.generation",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gptedge.runtime' has no attribute {name!r}")
