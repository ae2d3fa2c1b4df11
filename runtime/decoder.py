"""One onnxruntime session for one bundle variant, fed and read by the contract's names.

This is the thin layer every caller shares (generation, the export's parity gate, benchmarks):
``cache = decoder.empty_cache(B)``, then ``logits = cache.run(input_ids, attention_mask,
position_ids)`` per step. The graph itself says which cache layout it has (the size name of its
past input), and ``empty_cache`` makes that layout's cache, which owns the step; callers never look
inside, so both layouts (``contract.CACHE_LAYOUTS``) look the same from outside:

- ``ConcatCache`` (the exported graph): the presents come back and are fed as the next past.
- ``SharedCache`` (``gptedge optimize``'s GroupQueryAttention graph): one (B, nh, S, hs) buffer
  per key and value, bound as both past and present once, written in place by onnxruntime; no
  cache is allocated, copied or freed per token. S, the capacity, is what the caller will use (a
  request's prompt + new tokens), at most the context C: memory follows the request, not the
  model. The binding lives in the cache, so threads that share a decoder but not a cache do not
  interfere.

Only the logits come back to the host, because sampling runs in numpy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from gptedge.runtime import contract

# onnxruntime's type strings for the dtypes a graph's cache and logits may have.
_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


class Cache:
    """A variant's KV cache for B rows, made by ``Decoder.empty_cache``: one class per layout,
    each owning the model's step.

    ``run``: input_ids and position_ids (B, T), attention_mask (B, P + T), the cache holding P
    positions; returns logits (B, T, V) as numpy, and the cache then holds P + T (updated in
    place). A shared cache's decode-step logits are its own buffer, valid until its next run:
    copy them to keep them longer. ``host`` gives the cache as numpy arrays in ``past_names``
    order (to feed another session with it). The rest is what continuous batching
    (``runtime.engine``) does to the rows in host memory; each layout supplies ``_arrays`` (its
    (B, nh, S, hs) arrays) and ``remask``."""

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def place(self, row: int, other: Cache, length: int, end: int) -> None:
        """Put the first ``length`` slots of ``other``'s one row into row ``row``, ending at slot
        ``end``; the row's slots before them are zeroed."""
        for mine, theirs in zip(self._arrays(), other.host()):
            mine[row, :, : end - length] = 0
            mine[row, :, end - length : end] = theirs[0, :, :length]
        self.remask()

    def copy_row(self, src: int, dst: int, width: int) -> None:
        """Row ``src``'s first ``width`` slots into row ``dst``."""
        for a in self._arrays():
            a[dst, :, :width] = a[src, :, :width]
        self.remask()


class ConcatCache(Cache):
    """The "concat" layout's cache: the past goes in, a present one step longer comes out.

    On the CPU, plain ``session.run`` with numpy arrays (each present is fed straight back as the
    next past; cheaper than binding every input and output by name each step). On a device, IO
    binding with the presents allocated there, so the cache never travels to the host."""

    def __init__(self, decoder: "Decoder", batch: int, capacity: int) -> None:
        self.decoder = decoder  # the presents grow as needed: ``capacity`` is not used
        shape = (batch, decoder.shape.n_head, 0, decoder.shape.head_dim)  # (B, nh, 0, hs): a zero-length past
        self.values: list[np.ndarray | ort.OrtValue] = [np.zeros(shape, decoder.cache_dtype) for _ in decoder.past_names]

    def host(self) -> list[np.ndarray]:
        return [v if isinstance(v, np.ndarray) else v.numpy() for v in self.values]

    def move(self, offset: int, width: int) -> None:
        """Move slots [0, width) of every row by ``offset`` (right > 0, zeros in front; left < 0,
        the first -offset slots dropped): the cache is then ``width + offset`` slots long."""
        if offset > 0:
            self.values = [np.concatenate([np.zeros((*a.shape[:2], offset, a.shape[3]), a.dtype), a[:, :, :width]],
                                          axis=2) for a in self._arrays()]
        else:
            self.values = [np.ascontiguousarray(a[:, :, -offset:width]) for a in self._arrays()]

    def remask(self) -> None:
        """Nothing to do: this layout takes the whole mask every run."""

    def resize(self, batch: int) -> None:
        """Keep the first ``batch`` rows, or add rows of zeros up to it."""
        rows = self._arrays()[0].shape[0]
        if batch < rows:
            self.values = [a[:batch] for a in self._arrays()]
        elif batch > rows:
            self.values = [np.concatenate([a, np.zeros((batch - rows, *a.shape[1:]), a.dtype)]) for a in self._arrays()]

    def _arrays(self) -> list[np.ndarray]:
        if self.decoder.io_binding:
            raise ValueError("a cache kept on a device cannot be rearranged from the host")
        return self.values

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        d = self.decoder
        if d.io_binding:
            return self._run_bound(input_ids, attention_mask, position_ids)
        feed = {contract.INPUT_IDS: input_ids, contract.ATTENTION_MASK: attention_mask,
                contract.POSITION_IDS: position_ids, **dict(zip(d.past_names, self.values))}
        start = time.perf_counter()
        logits, *self.values = d.session.run(d.output_names, feed)
        d.run_seconds += time.perf_counter() - start
        return logits

    def _run_bound(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        d = self.decoder
        binding = d.session.io_binding()  # one per step: callers may share the decoder across threads
        for name, value in ((contract.INPUT_IDS, input_ids), (contract.ATTENTION_MASK, attention_mask),
                            (contract.POSITION_IDS, position_ids)):
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in zip(d.past_names, self.values):
            if isinstance(value, np.ndarray):  # the empty first cache
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        # Bound to a device, not to buffers: onnxruntime allocates each present there at its new size.
        binding.bind_output(contract.LOGITS, "cpu")
        for name in d.output_names[1:]:
            binding.bind_output(name, d.device)
        d.timed_run(binding)
        logits, *self.values = binding.get_outputs()
        return logits.numpy()


class SharedCache(Cache):
    """The "shared" layout's cache: preallocated buffers, bound as both past and present, and the
    decode step's inputs and logits, bound once too.

    A decode step (T = 1) then only writes numbers into numpy arrays that onnxruntime already
    reads: its token and position, and a 1 in the (B, S) attention mask (the zeros after the
    slots in use do not count); binding a new tensor per step would cost more than the rest of
    the Python loop. A decode step's logits are this cache's own buffer, valid until its next run."""

    def __init__(self, decoder: "Decoder", batch: int, capacity: int) -> None:
        self.decoder = decoder
        shape = decoder.shape
        self.capacity = capacity
        dims = (batch, shape.n_head, capacity, shape.head_dim)  # (B, nh, S, hs)
        if decoder.device == "cpu":  # numpy memory
            self.arrays: list[np.ndarray] | None = [np.zeros(dims, decoder.cache_dtype) for _ in decoder.past_names]
            self.device_values: list[ort.OrtValue] = []
        else:
            self.arrays = None
            self.device_values = [
                ort.OrtValue.ortvalue_from_shape_and_type(dims, decoder.cache_dtype, decoder.device, 0)
                for _ in decoder.past_names
            ]
        self._bind(batch)

    def _bind(self, batch: int) -> None:
        """Bind the first ``batch`` rows of the buffers, and step inputs and logits of that size."""
        d, S = self.decoder, self.capacity
        self.batch = batch
        if self.arrays is not None:
            self.values = [ort.OrtValue.ortvalue_from_numpy(a[:batch]) for a in self.arrays]  # views, no copy
        else:
            self.values = self.device_values
        self.binding = d.session.io_binding()
        for past, present, value in zip(d.past_names, d.output_names[1:], self.values):
            self.binding.bind_ortvalue_input(past, value)
            self.binding.bind_ortvalue_output(present, value)
        self.mask = np.zeros((batch, S), dtype=np.int64)  # (B, S), 1 up to the slots in use
        self.width = 0  # slots marked in ``mask`` so far
        self.binding.bind_ortvalue_input(contract.ATTENTION_MASK, ort.OrtValue.ortvalue_from_numpy(self.mask))
        self.step_ids = np.zeros((batch, 1), dtype=np.int64)  # (B, 1)
        self.step_positions = np.zeros((batch, 1), dtype=np.int64)  # (B, 1)
        self.step_logits = np.zeros((batch, 1, d.shape.vocab_size), dtype=d.logits_dtype)  # (B, 1, V)
        self.step_bound = False  # whether the three above are what the binding holds now

    def host(self) -> list[np.ndarray]:
        return self._arrays() if self.arrays is not None else [v.numpy() for v in self.values]

    def resize(self, batch: int) -> None:
        """Run on the first ``batch`` rows of the buffers from now on (at most the batch it was made
        for): continuous batching steps only the rows in use."""
        if batch != self.batch:
            self._arrays()
            self._bind(batch)
            self.remask()

    def move(self, offset: int, width: int) -> None:
        """As ``ConcatCache.move``, within the S slots of the buffers."""
        for a in self._arrays():
            if offset > 0:
                a[:, :, offset : width + offset] = a[:, :, :width].copy()
                a[:, :, :offset] = 0
            else:
                a[:, :, : width + offset] = a[:, :, -offset:width].copy()
        self.remask()

    def remask(self) -> None:
        """The caller changed earlier columns of the mask: copy it whole at the next run."""
        self.width = self.capacity

    def _arrays(self) -> list[np.ndarray]:
        if self.arrays is None:
            raise ValueError("a cache kept on a device cannot be rearranged from the host")
        return [a[: self.batch] for a in self.arrays]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        d = self.decoder
        if attention_mask.shape[1] > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions, not {attention_mask.shape[1]}")
        self._set_mask(attention_mask)
        if input_ids.shape[1] == 1:  # a decode step: into the buffers bound once
            self._bind_step()
            self.step_ids[:] = input_ids
            self.step_positions[:] = position_ids
            d.timed_run(self.binding)
            return self.step_logits  # overwritten by the next step
        self.step_bound = False
        self.binding.bind_cpu_input(contract.INPUT_IDS, np.ascontiguousarray(input_ids))
        self.binding.bind_cpu_input(contract.POSITION_IDS, np.ascontiguousarray(position_ids))
        B, T = input_ids.shape
        logits = np.empty((B, T, d.shape.vocab_size), dtype=d.logits_dtype)
        self.binding.bind_output(contract.LOGITS, "cpu", 0, logits.dtype, logits.shape, logits.ctypes.data)
        d.timed_run(self.binding)
        return logits

    def _bind_step(self) -> None:
        if not self.step_bound:
            self.binding.bind_ortvalue_input(contract.INPUT_IDS, ort.OrtValue.ortvalue_from_numpy(self.step_ids))
            self.binding.bind_ortvalue_input(
                contract.POSITION_IDS, ort.OrtValue.ortvalue_from_numpy(self.step_positions)
            )
            logits = self.step_logits
            self.binding.bind_output(contract.LOGITS, "cpu", 0, logits.dtype, logits.shape, logits.ctypes.data)
            self.step_bound = True

    def _set_mask(self, attention_mask: np.ndarray) -> None:
        """Copy the caller's (B, P + T) mask into the bound (B, S) one; slots after it stay 0."""
        w = attention_mask.shape[1]
        if w == self.width + 1:  # the next decode step: one new slot (the rest is already there)
            self.mask[:, w - 1] = attention_mask[:, -1]
        else:
            self.mask[:, :w] = attention_mask
            if w < self.width:  # not a continuation: clear what an earlier, longer call marked
                self.mask[:, w : self.width] = 0
        self.width = w


CACHES: dict[str, type[Cache]] = {"concat": ConcatCache, "shared": SharedCache}


class Decoder:
    """One onnxruntime session for one variant: its graph's cache layout and dtypes, and ``run``."""

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
        self.io_binding = io_binding or device != "cpu"  # the concat cache kept as OrtValues between steps
        self.run_seconds = 0.0  # wall time spent inside onnxruntime, for overhead figures

    def empty_cache(self, batch: int, capacity: int | None = None) -> Cache:
        """The first step's cache: a zero-length past, or for the shared layout fresh buffers of
        ``capacity`` slots (the context C when not given): the most positions it will hold."""
        C = self.shape.context_length
        capacity = C if capacity is None else capacity
        if not 1 <= capacity <= C:
            raise ValueError(f"a cache holds 1 to {C} positions, not {capacity}")
        return CACHES[self.cache_layout](self, batch, capacity)

    def timed_run(self, binding: ort.IOBinding) -> None:
        start = time.perf_counter()
        self.session.run_with_iobinding(binding)
        self.run_seconds += time.perf_counter() - start
