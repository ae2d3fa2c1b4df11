"""One onnxruntime session for one bundle variant, fed and read by the contract's names.

This is the thin layer every caller shares (generation, the export's parity gate, benchmarks):
feed ``input_ids``/``attention_mask``/``position_ids`` plus the cache, get logits and the next cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from gptedge.runtime import contract


class Decoder:
    def __init__(
        self,
        path: str | Path,
        manifest: contract.Manifest,
        providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
        options: ort.SessionOptions | None = None,
        cache_dtype: str = "float32",
    ) -> None:
        self.manifest = manifest
        self.shape = manifest.model
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.cache_dtype = np.dtype(cache_dtype)
        self.past_names = [n for i in range(self.shape.n_layer) for n in contract.past_names(i)]
        self.output_names = manifest.outputs

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        """A zero-length past, (B, nh, 0, hs) per key and value: the first step's input."""
        shape = (batch, self.shape.n_head, 0, self.shape.head_dim)
        return [np.zeros(shape, dtype=self.cache_dtype) for _ in self.past_names]

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        cache: list[np.ndarray],
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """input_ids/position_ids (B, T), attention_mask (B, P + T), cache 2*n_layer x (B, nh, P, hs).
        Returns logits (B, T, V) and the new cache, (B, nh, P + T, hs) each."""
        feed = {
            contract.INPUT_IDS: input_ids,
            contract.ATTENTION_MASK: attention_mask,
            contract.POSITION_IDS: position_ids,
            **dict(zip(self.past_names, cache)),
        }
        logits, *present = self.session.run(self.output_names, feed)
        return logits, present
