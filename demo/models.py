"""The models behind the page: one runtime ``Model`` per (variant, provider), loaded on first use.

Switching the variant or provider in the page must not restart anything, and switching back must
be instant: the pool keeps every model it has loaded (the runtime itself shares one onnxruntime
session per variant file and provider among the models using it, so two pools never load the
same weights twice).
No gradio here: the page (``app.py``) calls these and only formats what they return.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import gptedge.runtime
from gptedge.errors import UserError, check_text
from gptedge.runtime import (
    Candidate, GenerationResult, GenerationSettings, StreamDecoder, contract, next_token_candidates, providers,
    token_bytes, token_probabilities,
)

# Limits that keep one visitor from tying up the machine: prompts are cut off by characters
# (before tokenizing, so a huge paste costs nothing), answers by tokens.
MAX_PROMPT_CHARS = 2000  # a prompt, or one chat message
MAX_CONVERSATION_CHARS = 8000  # a chat's messages together (the page sends all of them each turn)
MAX_NEW_TOKENS = 512
TOP_CANDIDATES = 10


@dataclass
class TokenProbability:
    text: str  # what this token added to the answer ("" while a character is still incomplete)
    probability: float  # the model's probability for it given everything before (temperature 1)


def check_prompt(prompt: str, what: str = "the prompt",
                 empty: str = "type the beginning of a text for the model to continue") -> str:
    """The prompt (or a chat message: ``what``) as the model will see it, or a UserError the page
    shows as a message. It may come from the API rather than the text box: anything but text is
    refused here."""
    if prompt is not None and not isinstance(prompt, str):
        raise UserError(f"{what} must be text, not {type(prompt).__name__}: send a string")
    if not prompt or not prompt.strip():
        raise UserError(f"{what} is empty: {empty}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(
            f"{what} has {len(prompt):,} characters, more than the {MAX_PROMPT_CHARS:,} this page accepts: "
            f"shorten it"
        )
    return check_text(prompt, what)


def chat_messages(history: list[dict[str, str]], message: object) -> list[dict[str, str]]:
    """The conversation so far (kept by the page, as the model saw it) and the user's new
    ``message``, as chat messages; or a UserError."""
    message = check_prompt(message, "the message", "type a message for the model to answer")
    messages = [*history, {"role": "user", "content": message}]
    total = sum(len(m["content"]) for m in messages)
    if total > MAX_CONVERSATION_CHARS:
        raise UserError(f"the conversation has {total:,} characters, more than the {MAX_CONVERSATION_CHARS:,} "
                        "this page accepts: press Clear to start a new one")
    return messages


def check_choice(value: object, choices: list[str], what: str) -> str:
    """``value`` if it is one of the page's ``choices`` (a dropdown's list), else a UserError: an API
    call can send any value, and only the listed ones are on offer."""
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{what} {value!r} is not available here: use one of {', '.join(choices)}")
    return value


def page_number(value: object, label: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A number from one of the page's sliders or boxes, held to the widget's bounds. An API call
    can send anything JSON holds (a string, null, NaN): each is named in a one-line message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{label} {value!r} is not a number: send a finite number")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "" if minimum is None else f"{minimum:g}"
        high = "" if maximum is None else f"{maximum:g}"
        rule = f"{low} to {high}" if low and high else (f"at least {low}" if low else f"at most {high}")
        raise UserError(f"{label} {value:g} is out of range: use {rule}")
    return value


class ModelPool:
    def __init__(self, bundle_dir: str | Path, threads: int | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = contract.read_bundle(self.bundle_dir)  # every file checked against its hash
        self.threads = threads
        self.default_variant, provider = providers.choose(self.manifest, "auto", "auto")
        self.default_provider = provider.name
        # Loaded models, shared by all visitors: the runtime runs concurrent generations on one model
        # (each has its own cache and IO binding; onnxruntime sessions are thread-safe).
        self._models: dict[tuple[str, str], gptedge.runtime.Model] = {}
        self._loading = threading.Lock()
        self._table: list[bytes] | None = None

    @property
    def variants(self) -> list[str]:
        """The variants a visitor can generate with (the inspection variant serves Look inside)."""
        return list(self.manifest.for_generation())

    @property
    def providers(self) -> list[str]:
        return providers.available()

    def get(self, variant: str, provider: str) -> gptedge.runtime.Model:
        key = (variant, provider)
        with self._loading:
            if key not in self._models:
                model = gptedge.runtime.load(self.bundle_dir, variant=variant, provider=provider, threads=self.threads)
                self._models[key] = model
                if self._table is None:
                    self._table = token_bytes(model.tokenizer, self.manifest.model.vocab_size)
            return self._models[key]

    @property
    def inspection_variant(self) -> str | None:
        """The variant that shows what happens inside the model (``gptedge inspect --make``), if any."""
        return next((n for n, v in self.manifest.variants.items() if v.inspection is not None), None)

    def look_inside(self, text: str) -> gptedge.runtime.Inspection:
        """The inspection variant's view of ``text`` (its last context_length tokens)."""
        name = self.inspection_variant
        if name is None:
            raise UserError(f"this bundle has no inspection variant: add it with gptedge inspect --make {self.bundle_dir}")
        return self._inspections(text)

    @functools.lru_cache(maxsize=8)  # the page asks again for each layer, head or token a reader picks
    def _inspections(self, text: str) -> gptedge.runtime.Inspection:
        return self.get(self.inspection_variant, "cpu").inspect(text, k=TOP_CANDIDATES)

    def prompt_ids(self, model: gptedge.runtime.Model, prompt: str) -> list[int]:
        """The prompt's tokens as generation sees them (an empty text starts a new document)."""
        return model.encode(prompt) or [self.manifest.eos_token_id]

    def next_words(self, model: gptedge.runtime.Model, prompt: str, k: int = TOP_CANDIDATES) -> list[Candidate]:
        return next_token_candidates(model.decoder, model.tokenizer, self.prompt_ids(model, prompt), k)

    def stream(
        self, model: gptedge.runtime.Model, prompt: str, settings: GenerationSettings
    ) -> Iterator[str | GenerationResult]:
        """Yield the text generated since the caller last asked (as soon as there is some), then
        the result with its figures.

        The model runs in a thread of its own and never waits for the caller: a web page takes
        milliseconds to send each update, which, pulled token by token, would slow generation
        (and its tokens/s) several times over. A reader that keeps up sees every token alone; a
        slower one gets the tokens that piled up meanwhile. Closing this generator (the page's
        Stop button) stops the model at its next token."""
        pieces: queue.Queue = queue.Queue()
        cancelled = threading.Event()

        def generate() -> None:
            try:
                text = model.stream(prompt, settings)
                for piece in text:
                    if cancelled.is_set():
                        return
                    pieces.put(piece)
                pieces.put(text.result)
            except BaseException as e:  # handed to the reader, raised there
                pieces.put(e)

        threading.Thread(target=generate, name="gptedge-demo-generate", daemon=True).start()
        try:
            while True:
                item = pieces.get()
                batch = []
                while isinstance(item, str):
                    batch.append(item)
                    try:
                        item = pieces.get_nowait()
                    except queue.Empty:
                        item = None
                        break
                if batch:
                    yield "".join(batch)
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, GenerationResult):
                    yield item
                    return
        finally:
            cancelled.set()

    def answer_probabilities(
        self, model: gptedge.runtime.Model, prompt: str, result: GenerationResult
    ) -> list[TokenProbability]:
        """Each generated token with the probability the model gave it, in one teacher-forced pass
        over the prompt (as generation kept it) and the answer."""
        if not result.token_ids:
            return []
        prompt_ids = self.prompt_ids(model, prompt)[-result.prompt_tokens :]
        probs = token_probabilities(model.decoder, prompt_ids + result.token_ids, start=len(prompt_ids))
        assert self._table is not None
        text = StreamDecoder(self._table)
        pieces = [text.push(t) for t in result.token_ids]
        pieces[-1] += text.flush()
        return [TokenProbability(piece, float(p)) for piece, p in zip(pieces, probs)]


def settings_from_page(
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
    max_new_tokens: int,
    seed: float,
    stop: str,
) -> GenerationSettings:
    """The page's widgets as runtime settings. Stop strings are one per line; ``\\n`` in one
    stands for a newline (the most useful stop string, and one a text box cannot hold). Values come
    from the page or from an API call, so each is checked: a bad one is a UserError naming it."""
    page_number(max_new_tokens, "max new tokens", 1, MAX_NEW_TOKENS)
    for value, label in ((temperature, "temperature"), (top_k, "top-k"), (top_p, "top-p"),
                         (repetition_penalty, "repetition penalty")):
        page_number(value, label)  # ranges: GenerationSettings below, and the page's sliders
    if seed is not None:
        page_number(seed, "seed", minimum=-1)
    if stop is not None and not isinstance(stop, str):
        raise UserError(f"stop strings must be text, not {type(stop).__name__}: send one string, a stop string per line")
    stops = tuple(line.replace("\\n", "\n") for line in (stop or "").splitlines() if line)
    return GenerationSettings(
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        repetition_penalty=float(repetition_penalty),
        seed=None if seed is None or seed < 0 else int(seed),  # -1: a fresh seed per answer
        stop=stops,
    )
