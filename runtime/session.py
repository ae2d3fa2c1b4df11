"""One onnxruntime session for one bundle variant, fed and read by the contract's names.

This is the thin layer every caller shares (generation, the export's parity gate, benchmarks):
feed ``input_ids``/``attention_mask``/``position_ids`` plus the cache, get logits and the next cache.
``run`` takes a cache and returns the one to pass to the next step; the caller never looks inside,
so both cache layouts (``contract.CACHE_LAYOUTS``) look the same from outside. The graph itself says
which one it has (the size name of its past input), as does the manifest.

- **concat** (the exported graph). On CPU, plain ``session.run`` with numpy arrays: they are
  wrapped without a copy and each present output is fed straight back as the next past. This
  measured faster than IO binding here: binding every input and output by name each step costs
  about 0.3 ms of Python against 0.1 ms (tiny preset, 2 threads). On a GPU or other device, IO
  binding: the presents are allocated on the device and bound as the next step's past, so the
  cache never travels to the host.
- **shared** (``gptedge optimize``'s GroupQueryAttention graph). ``empty_cache`` allocates one
  (B, nh, C, hs) buffer per key and value, on the device, and an IO binding that binds each buffer
  as both the past input and the present output, once; the decode step's inputs and logits are
  bound once too (``SharedCache``). onnxruntime writes the new keys and values in place: no cache
  is allocated, copied or freed per token, a step at a 90 % full context costs about what one at
  past 64 does, and the Python side of a step is a few numpy writes. The binding lives in the
  cache, so threads that share a decoder but not a cache do not interfere.

Only the logits come back to the host, because sampling runs in numpy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import onnxruntime as ort

from gptedge.runtime import contract

# onnxruntime's type strings for the dtypes a graph's cache and logits may have.
_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


class SharedCache:
    """The "shared" layout's cache: preallocated buffers, bound as both past and present, and the
    decode step's inputs and logits, bound once too.

    A decode step (T = 1) then only writes numbers into numpy arrays that onnxruntime already
    reads: its token and position, and a 1 in the (B, C) attention mask (the zeros after the
    slots in use do not count). Binding a new tensor instead costs ~0.1 ms per step at the gpt2 size,
    where the Python loop's budget is 0.1 ms in all (``export.shared_cache``)."""

    def __init__(self, decoder: "Decoder", batch: int) -> None:
        shape = decoder.shape
        C = shape.context_length
        dims = (batch, shape.n_head, C, shape.head_dim)  # (B, nh, C, hs)
        if decoder.device == "cpu":  # numpy memory (np.zeros: pages are only touched when written)
            self.arrays: list[np.ndarray] | None = [np.zeros(dims, decoder.cache_dtype) for _ in decoder.past_names]
            self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]
        else:
            self.arrays = None
            self.values = [
                ort.OrtValue.ortvalue_from_shape_and_type(dims, decoder.cache_dtype, decoder.device, 0)
                for _ in decoder.past_names
            ]
        self.binding = decoder.session.io_binding()
        for past, present, value in zip(decoder.past_names, decoder.output_names[1:], self.values):
            self.binding.bind_ortvalue_input(past, value)
            self.binding.bind_ortvalue_output(present, value)
        self.mask = np.zeros((batch, C), dtype=np.int64)  # (B, C), 1 up to the slots in use
        self.width = 0  # slots marked in ``mask`` so far
        self.binding.bind_ortvalue_input(contract.ATTENTION_MASK, ort.OrtValue.ortvalue_from_numpy(self.mask))
        self.step_ids = np.zeros((batch, 1), dtype=np.int64)  # (B, 1)
        self.step_positions = np.zeros((batch, 1), dtype=np.int64)  # (B, 1)
        self.step_logits = np.zeros((batch, 1, shape.vocab_size), dtype=decoder.logits_dtype)  # (B, 1, V)
        self.step_bound = False  # whether the three above are what the binding holds now

    def bind_step(self) -> None:
        if not self.step_bound:
            self.binding.bind_ortvalue_input(contract.INPUT_IDS, ort.OrtValue.ortvalue_from_numpy(self.step_ids))
            self.binding.bind_ortvalue_input(
                contract.POSITION_IDS, ort.OrtValue.ortvalue_from_numpy(self.step_positions)
            )
            logits = self.step_logits
            self.binding.bind_output(contract.LOGITS, "cpu", 0, logits.dtype, logits.shape, logits.ctypes.data)
            self.step_bound = True

    def set_mask(self, attention_mask: np.ndarray) -> None:
        """Copy the caller's (B, P + T) mask into the bound (B, C) one; slots after it stay 0."""
        w = attention_mask.shape[1]
        if w == self.width + 1:  # the next decode step: one new slot (the rest is already there)
            self.mask[:, w - 1] = attention_mask[:, -1]
        else:
            self.mask[:, :w] = attention_mask
            if w < self.width:  # not a continuation: clear what an earlier, longer call marked
                self.mask[:, w : self.width] = 0
        self.width = w


# numpy arrays on the plain path; OrtValues (possibly in device memory) with IO binding; or a
# SharedCache. Opaque to callers: pass the cache ``run`` returned to the next ``run``.
Cache = Union[list[Union[np.ndarray, ort.OrtValue]], SharedCache]


class Decoder:
    def __init__(
        self,
        path: str | Path,
        manifest: contract.Manifest,
        providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
        options: ort.SessionOptions | None = None,
        device: str = "cpu",
        io_binding: bool = False,
    ) -> None:
        self.manifest = manifest
        self.shape = manifest.model
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.past_names = [n for i in range(self.shape.n_layer) for n in contract.past_names(i)]
        self.output_names = manifest.outputs
        inputs = {i.name: i for i in self.session.get_inputs()}
        past = inputs[self.past_names[0]]
        self.cache_dtype = _DTYPES[past.type]
        self.logits_dtype = _DTYPES[self.session.get_outputs()[0].type]
        self.cache_layout = "shared" if past.shape[2] == contract.CACHE_CAPACITY else "concat"
        self.device = device
        self.io_binding = io_binding or device != "cpu"
        self.run_seconds = 0.0  # wall time spent inside onnxruntime, for overhead figures

    def empty_cache(self, batch: int) -> Cache:
        """The first step's cache: a zero-length past, (B, nh, 0, hs) per key and value, or for the
        shared layout fresh buffers of C slots."""
        if self.cache_layout == "shared":
            return SharedCache(self, batch)
        shape = (batch, self.shape.n_head, 0, self.shape.head_dim)
        return [np.zeros(shape, dtype=self.cache_dtype) for _ in self.past_names]

    def host_cache(self, cache: Cache) -> list[np.ndarray]:
        """The cache as numpy arrays, in ``past_names`` order (to feed another session with it)."""
        if isinstance(cache, SharedCache):
            return cache.arrays if cache.arrays is not None else [v.numpy() for v in cache.values]
        return [c if isinstance(c, np.ndarray) else c.numpy() for c in cache]

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        cache: Cache,
    ) -> tuple[np.ndarray, Cache]:
        """input_ids/position_ids (B, T), attention_mask (B, P + T), the cache of P positions.
        Returns logits (B, T, V) as numpy and the cache of P + T positions. The cache passed in is
        consumed (the shared layout updates it in place): continue from the returned one.

        With the shared layout, a decode step's (T = 1) logits are the cache's own buffer, valid
        until the next ``run`` on that cache: copy them to keep them longer."""
        if isinstance(cache, SharedCache):
            return self._run_shared(input_ids, attention_mask, position_ids, cache)
        if self.io_binding:
            return self._run_bound(input_ids, attention_mask, position_ids, cache)
        feed = {
            contract.INPUT_IDS: input_ids,
            contract.ATTENTION_MASK: attention_mask,
            contract.POSITION_IDS: position_ids,
            **dict(zip(self.past_names, cache)),
        }
        start = time.perf_counter()
        logits, *present = self.session.run(self.output_names, feed)
        self.run_seconds += time.perf_counter() - start
        return logits, present

    def _timed_run(self, binding: ort.IOBinding) -> None:
        start = time.perf_counter()
        self.session.run_with_iobinding(binding)
        self.run_seconds += time.perf_counter() - start

    def _run_shared(self, input_ids, attention_mask, position_ids, cache: SharedCache):
        if attention_mask.shape[1] > self.shape.context_length:
            raise ValueError(f"the cache holds {self.shape.context_length} positions, not {attention_mask.shape[1]}")
        cache.set_mask(attention_mask)
        binding = cache.binding
        if input_ids.shape[1] == 1:  # a decode step: into the buffers bound once
            cache.bind_step()
            cache.step_ids[:] = input_ids
            cache.step_positions[:] = position_ids
            self._timed_run(binding)
            return cache.step_logits, cache  # overwritten by the next step (a copy costs ~0.06 ms at gpt2 size)
        cache.step_bound = False
        binding.bind_cpu_input(contract.INPUT_IDS, np.ascontiguousarray(input_ids))
        binding.bind_cpu_input(contract.POSITION_IDS, np.ascontiguousarray(position_ids))
        B, T = input_ids.shape
        logits = np.empty((B, T, self.shape.vocab_size), dtype=self.logits_dtype)
        binding.bind_output(contract.LOGITS, "cpu", 0, logits.dtype, logits.shape, logits.ctypes.data)
        self._timed_run(binding)
        return logits, cache

    def _run_bound(self, input_ids, attention_mask, position_ids, cache):
        binding = self.session.io_binding()  # one per step: callers may share the decoder across threads
        for name, value in ((contract.INPUT_IDS, input_ids), (contract.ATTENTION_MASK, attention_mask),
                            (contract.POSITION_IDS, position_ids)):
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
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
        self._timed_run(binding)
        logits, *present = binding.get_outputs()
        return logits.numpy(), present
