"""One onnxruntime session for one bundle variant, fed and read by the contract's names.

This is the thin layer every caller shares (generation, the export's parity gate, benchmarks):
feed ``input_ids``/``attention_mask``/``position_ids`` plus the cache, get logits and the next cache.
The cache that comes out of one step goes into the next untouched.

Two ways to run, chosen by ``io_binding``:

- plain ``session.run`` with numpy arrays (the default on CPU): numpy inputs are wrapped without
  a copy and the present outputs come back as numpy arrays that are fed straight back in. On CPU
  this measured faster than IO binding: same time inside onnxruntime, but binding every input and
  output by name each step costs about 0.3 ms of Python against 0.1 ms (tiny preset, 2 threads).
- IO binding (always on a GPU or other device provider): the present outputs are allocated on the
  device and bound as the next step's past inputs as ``OrtValue``s, so the cache never travels to
  the host; only the logits are copied back, because sampling runs in numpy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import onnxruntime as ort

from gptedge.runtime import contract

# numpy arrays on the plain path; OrtValues (possibly in device memory) with IO binding.
Cache = list[Union[np.ndarray, ort.OrtValue]]


class Decoder:
    def __init__(
        self,
        path: str | Path,
        manifest: contract.Manifest,
        providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
        options: ort.SessionOptions | None = None,
        cache_dtype: str = "float32",
        device: str = "cpu",
        io_binding: bool = False,
    ) -> None:
        self.manifest = manifest
        self.shape = manifest.model
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.cache_dtype = np.dtype(cache_dtype)
        self.past_names = [n for i in range(self.shape.n_layer) for n in contract.past_names(i)]
        self.output_names = manifest.outputs
        self.device = device
        self.io_binding = io_binding or device != "cpu"
        # Time spent inside onnxruntime, for overhead figures: wall clock, and CPU time of the
        # calling thread (which other processes on a busy machine cannot inflate).
        self.run_seconds = 0.0
        self.run_cpu_seconds = 0.0

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        """A zero-length past, (B, nh, 0, hs) per key and value: the first step's input."""
        shape = (batch, self.shape.n_head, 0, self.shape.head_dim)
        return [np.zeros(shape, dtype=self.cache_dtype) for _ in self.past_names]

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        cache: Cache,
    ) -> tuple[np.ndarray, Cache]:
        """input_ids/position_ids (B, T), attention_mask (B, P + T), cache 2*n_layer x (B, nh, P, hs).
        Returns logits (B, T, V) as numpy and the new cache, (B, nh, P + T, hs) each, of the same kind
        as the decoder's (numpy arrays, or OrtValues with IO binding)."""
        if self.io_binding:
            return self._run_bound(input_ids, attention_mask, position_ids, cache)
        feed = {
            contract.INPUT_IDS: input_ids,
            contract.ATTENTION_MASK: attention_mask,
            contract.POSITION_IDS: position_ids,
            **dict(zip(self.past_names, cache)),
        }
        start, cpu = time.perf_counter(), time.thread_time()
        logits, *present = self.session.run(self.output_names, feed)
        self.run_seconds += time.perf_counter() - start
        self.run_cpu_seconds += time.thread_time() - cpu
        return logits, present

    def _run_bound(self, input_ids, attention_mask, position_ids, cache):
        binding = self.session.io_binding()  # one per step: callers may share the decoder across threads
        binding.bind_cpu_input(contract.INPUT_IDS, np.ascontiguousarray(input_ids))
        binding.bind_cpu_input(contract.ATTENTION_MASK, np.ascontiguousarray(attention_mask))
        binding.bind_cpu_input(contract.POSITION_IDS, np.ascontiguousarray(position_ids))
        for name, value in zip(self.past_names, cache):
            if isinstance(value, np.ndarray):  # the empty first cache, or a caller's host copy
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        # Bound to a device, not to buffers: ORT allocates each output there at its new size
        # (the present grows by T every step).
        binding.bind_output(contract.LOGITS, "cpu")
        for name in self.output_names[1:]:
            binding.bind_output(name, self.device)
        start, cpu = time.perf_counter(), time.thread_time()
        self.session.run_with_iobinding(binding)
        self.run_seconds += time.perf_counter() - start
        self.run_cpu_seconds += time.thread_time() - cpu
        logits, *present = binding.get_outputs()
        return logits.numpy(), present
