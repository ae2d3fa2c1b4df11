"""Continuous batching: requests that start and end at any step share one batched decode step.

On a CPU a decode step is bound by reading the weights, so B rows cost little more than one.
``generation.run`` batches rows that start together; the engine lets each request come and go on
its own (llama.cpp calls its rows slots): up to ``slots`` rows decode together, (B, 1) per step;
a new request is prefilled alone and joins at the next step; a finished or cancelled one frees
its row at once; past the slots, requests wait in a bounded queue. A request gets the tokens it
would get alone: its prefill is its own, in the batch its row attends only to its own slots (the
mask), and it has its own sampler and seed.

The batch cache, B rows x C slots (C the context length):
- every live row's last fed token sits at slot ``width - 1``; row b holds its tokens in
  [start_b, width), its positions counting from 0 at start_b, its mask 0 before start_b;
- a request of P tokens joins at [width - P, width) (everything moves right first if P > width);
- GroupQueryAttention takes the slots in use from the row with the most 1s in the mask, so some
  row must start at slot 0: when the one that did leaves, the cache moves left (``Cache.move``)
  until one does again (a row with no request has mask 0 everywhere, its output unread);
- at the context's end (width = C) a row whose window is full slides as in ``generation`` (its
  last W tokens re-prefilled alone, then placed again), and the others move left.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from gptedge.errors import UserError
from gptedge.runtime import generation
from gptedge.runtime.generation import Batch, GenerationResult, Row
from gptedge.runtime.next_token import log_softmax, top_tokens
from gptedge.runtime.sampling import Sampler
from gptedge.runtime.settings import GenerationSettings

if TYPE_CHECKING:
    from gptedge.runtime.model import Model, Prompt


RATE_WINDOW = 10.0  # seconds over which tokens_per_second counts


class Busy(UserError):
    """Every slot is taken and the queue is full: try again shortly."""


@dataclass
class Event:
    """What one step of a request produced: a token and the text it made showable, and at the end
    the whole result (``result`` set, ``token`` None)."""

    token: int | None
    text: str = ""
    logprob: float | None = None  # of the chosen token, under the model's distribution
    top: list[tuple[int, float]] = field(default_factory=list)  # the most likely tokens, with logprobs
    result: GenerationResult | None = None
    finish_reason: str = ""  # "eos", "stop", "length" or "cancelled", with the result


class Job:
    """One request: its row's state, its own sampler, and the events its caller reads."""

    def __init__(self, row: Row, settings: GenerationSettings, logprobs: int, vocab_size: int) -> None:
        self.row = row
        self.settings = settings
        self.logprobs = logprobs
        self.sampler = Sampler(settings.temperature, settings.top_k, settings.top_p,
                               settings.repetition_penalty, settings.seed)
        self.seen = np.zeros((1, vocab_size), dtype=bool) if self.sampler.needs_history else None
        if self.seen is not None:
            self.seen[0, row.tokens] = True
        self.events: queue.Queue[Event] = queue.Queue()
        self.cancelled = threading.Event()
        self.started = time.perf_counter()
        self.logits: np.ndarray | None = None  # (V,): the next token's logits, once prefilled
        self.alone: Any = None  # its own cache after a prefill, until placed in the batch

    def cancel(self) -> None:
        """Stop generating (a client that went away): the row is freed at the next step."""
        self.cancelled.set()

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.events.get()
            yield event
            if event.result is not None:
                return

    def result(self) -> tuple[GenerationResult, str]:
        """Wait for the end; (result, finish reason)."""
        for event in self:  # the last event carries the result
            pass
        return event.result, event.finish_reason

    def take(self, token: int, eos_id: int) -> Event:
        """Record the chosen token; return its event (with the result if the row is done)."""
        event = Event(token)
        if self.logprobs:
            logp = log_softmax(self.logits.astype(np.float64))
            event.logprob = float(logp[token])
            event.top = top_tokens(logp, self.logprobs)
        now = time.perf_counter()
        row = self.row
        if not row.generated:
            row.first_at = now
        row.last_at = now
        event.text = row.push(token, self.settings, eos_id)
        if self.seen is not None:
            self.seen[0, token] = True
        if row.done:
            event.result, event.finish_reason = row.result(self.started), row.stop_reason
        return event

    def end(self, reason: str) -> None:
        """Finish early (cancelled, or the engine stopping)."""
        self.row.stop_reason = self.row.stop_reason or reason
        self.events.put(Event(None, result=self.row.result(self.started), finish_reason=reason))


class Engine:
    """A background thread that decodes every submitted request in one shared batch."""

    def __init__(self, model: "Model", slots: int = 4, queue_size: int = 64) -> None:
        decoder = model.decoder
        if decoder.device != "cpu":
            raise UserError(f"continuous batching rearranges the cache in host memory: serve with the cpu "
                            f"provider, not {model.provider}")
        for name, value, least in (("slots", slots, 1), ("queue_size", queue_size, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UserError(f"{name}={value!r} is invalid: use a whole number >= {least}")
        self.model, self.decoder = model, decoder
        self.C, self.V = decoder.shape.context_length, decoder.shape.vocab_size
        self.eos_id, self.pad_id = model.manifest.eos_token_id, model.manifest.pad_token_id
        self.slots, self.queue_size = slots, queue_size
        self.cache = decoder.empty_cache(slots)
        self.width = 0  # slots of the batch cache in use
        # Row b of the batch serves jobs[b]; rows in use are packed at the top (a leaving row's place
        # is taken by the last one), so a step runs only len(jobs) rows, never idle ones.
        self.jobs: list[Job] = []
        self.start = np.zeros(slots, dtype=np.int64)  # each row's first slot
        self.mask = np.zeros((slots, self.C), dtype=np.int64)  # (B, C); 0 everywhere for a row not placed
        self.placed = [False] * slots  # whether row b's request is in the batch cache now
        self.waiting: collections.deque[Job] = collections.deque()
        self.counts = collections.Counter()  # requests, cancelled, prompt and generated tokens (/metrics)
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens) per step
        self._cond = threading.Condition()
        self._stopping = False
        self._broken = ""  # set if the loop died of a bug: later requests are refused, not left waiting
        self._thread = threading.Thread(target=self._loop, name="gptedge-engine", daemon=True)
        self._thread.start()

    # -- what callers use ---------------------------------------------------------------------

    def submit(self, prompt: "Prompt", settings: GenerationSettings | None = None, logprobs: int = 0,
               **overrides: Any) -> Job:
        """Queue a request; iterate over the returned job for its events. Raises ``Busy`` when
        every slot is taken and the queue is full, ``UserError`` for a bad prompt or setting."""
        settings = self.model._settings(settings, overrides)
        job = Job(self.model._row(prompt, settings), settings, logprobs, self.V)
        if settings.max_new_tokens == 0:
            job.end("length")
            return job
        with self._cond:
            if self._stopping:
                raise Busy("the server is shutting down")
            if self._broken:
                raise UserError(f"the engine stopped after an error ({self._broken}): restart it")
            if len(self.waiting) >= self.queue_size + self.slots - len(self.jobs):  # waiting ones take free rows first
                slots = "the one slot" if self.slots == 1 else f"all {self.slots} slots"
                raise Busy(f"{slots} and the queue of {self.queue_size} are full: try again shortly")
            self.waiting.append(job)
            self.counts["requests"] += 1
            self.counts["prompt_tokens"] += job.row.prompt_tokens
            self._cond.notify()
        return job

    @property
    def busy(self) -> int:
        return len(self.jobs)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def tokens_per_second(self) -> float:
        """Tokens generated per second over the last ``RATE_WINDOW`` seconds, all requests together."""
        self._forget(time.perf_counter())
        return sum(n for _, n in self._recent) / RATE_WINDOW

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - RATE_WINDOW:
            self._recent.popleft()

    def close(self, timeout: float = 5.0) -> None:
        """Stop: requests still running or waiting end with finish reason "cancelled"."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.waiting and not self.jobs:
                    self._cond.wait()
                if self._stopping:
                    break
                joining = [self.waiting.popleft() for _ in range(min(len(self.waiting), self.slots - len(self.jobs)))]
                for job in joining:
                    self._add_row(job)
            try:
                for job in joining:
                    self._prefill(job)
                    self._place(job)
                self._iteration()
            except Exception as error:  # a bug: fail every request rather than hang them
                for job in [*self.jobs, *self.waiting]:
                    job.end(f"error: {error}")
                self.jobs = []
                self.waiting.clear()
                self._broken = f"{type(error).__name__}: {error}"
                raise
        for job in [*self.jobs, *self.waiting]:
            job.end("cancelled")

    def _iteration(self) -> None:
        """Each placed row takes its next token; those that go on decode one step together."""
        sliding: list[Job] = []
        taken = 0
        for job in list(self.jobs):
            b = self.jobs.index(job)
            if not self.placed[b]:
                continue
            if job.cancelled.is_set():
                job.end("cancelled")
                self.counts["cancelled"] += 1
                self._free(job)
                continue
            token = int(job.sampler(job.logits[None, :], job.seen)[0])
            event = job.take(token, self.eos_id)
            taken += 1
            job.events.put(event)
            if event.result is not None:
                self._free(job)
            elif self.width >= self.C and self.start[b] == 0:  # its window is full: slide
                job.row.tokens = generation.window(job.row.tokens, self.C)
                job.row.slides += 1
                if job.seen is not None:
                    job.seen[:] = generation.seen_tokens([job.row], self.V)
                self._unset(b)
                sliding.append(job)
        now = time.perf_counter()
        self._recent.append((now, taken))
        self._forget(now)
        self.counts["generated_tokens"] += taken
        if any(self.placed[: len(self.jobs)]):
            self._step()
        for job in sliding:
            self._prefill(job)
            self._place(job)

    def _step(self) -> None:
        """Feed every placed row its last token at slot ``width``; a row not placed feeds padding."""
        k = len(self.jobs)
        rows = [b for b in range(k) if self.placed[b]]
        first = int(self.start[rows].min())
        if first > 0:  # no row spans every slot in use: drop the slots no row needs
            self._move(-first)
        w = self.width
        ids = np.full((k, 1), self.pad_id, dtype=np.int64)  # (k, 1)
        positions = np.zeros((k, 1), dtype=np.int64)  # (k, 1)
        for b in rows:
            ids[b, 0] = self.jobs[b].row.tokens[-1]
            positions[b, 0] = w - self.start[b]
        self.cache.resize(k)
        logits = self.cache.run(ids, self.mask[:k, : w + 1], positions)  # (k, 1, V)
        self.width = w + 1
        for b in rows:
            self.jobs[b].logits = logits[b, -1]  # read before the next step overwrites it

    # -- rows and the batch cache ----------------------------------------------------------------

    def _add_row(self, job: Job) -> None:
        self.jobs.append(job)
        self._unset(len(self.jobs) - 1)

    def _prefill(self, job: Job) -> None:
        """The request's tokens through the model alone: its own cache and next token's logits."""
        alone = Batch(self.decoder, [job.row], self.pad_id, 0)
        job.alone, job.logits = alone.cache, alone.logits[0].copy()

    def _place(self, job: Job) -> None:
        """Put a prefilled request's cache into its row, ending at ``width``."""
        b = self.jobs.index(job)
        n = len(job.row.tokens)
        self.cache.resize(len(self.jobs))
        if n > self.width:
            self._move(n - self.width)
        self.cache.place(b, job.alone, n, self.width)
        job.alone = None
        self.start[b] = self.width - n
        self.mask[b] = np.arange(self.C) >= self.start[b]
        self.placed[b] = True

    def _move(self, offset: int) -> None:
        """Move every placed row's slots by ``offset`` (right > 0, left < 0)."""
        if offset == 0:
            return
        self.cache.move(offset, self.width)
        self.width += offset
        for b in range(len(self.jobs)):
            if self.placed[b]:
                self.start[b] += offset
                self.mask[b] = np.arange(self.C) >= self.start[b]

    def _unset(self, b: int) -> None:
        """Take row b out of the batch: mask all 0, its output unread."""
        self.placed[b] = False
        self.start[b] = 0
        self.mask[b] = 0
        self.cache.remask()

    def _free(self, job: Job) -> None:
        """The job leaves: the last row takes its place, so rows in use stay packed."""
        b, last = self.jobs.index(job), len(self.jobs) - 1
        if b != last:
            self.cache.copy_row(last, b, self.width)
            self.jobs[b] = self.jobs[last]
            self.start[b], self.placed[b] = self.start[last], self.placed[last]
            self.mask[b] = self.mask[last]
        self.jobs.pop()
        self._unset(last)
        if not self.jobs:
            self.cache.move(-self.width, self.width)  # empty: the next request starts from slot 0
            self.width = 0
