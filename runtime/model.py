"""``load`` a bundle and ``generate`` or ``stream`` text from it: the runtime's public face.

    model = gptedge.runtime.load("bundle/", variant="auto", provider="auto", threads=None)
    print(model.generate("Once upon a time", max_new_tokens=50).text)
    for piece in model.stream("The meaning of", temperature=0):
        print(piece, end="", flush=True)

A prompt is a string or a list of token ids; a list of prompts is a batch. Sessions are shared per
(variant file, provider, threads, optimization level) while a model uses them, so loading the same
variant again reuses the onnxruntime session instead of building another copy of the weights; the
session goes when the last model using it does.
"""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, Union

import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state
from tokenizers import Tokenizer

from gptedge.errors import UserError, check_text
from gptedge.runtime import chat, contract, generation, providers
from gptedge.runtime.generation import GenerationResult, Row
from gptedge.runtime.settings import GenerationSettings
from gptedge.runtime.decoder import Decoder
from gptedge.runtime.text import ShownText, TextAtEnd, check_token_ids, token_bytes

log = logging.getLogger("gptedge.runtime")

Prompt = Union[str, Sequence[int]]
# What onnxruntime raises for a graph it cannot load (bad protobuf, unknown op or input count, ...).
_ORT_ERRORS = (_ort_state.Fail, _ort_state.InvalidArgument, _ort_state.InvalidGraph, _ort_state.InvalidProtobuf,
               _ort_state.NoSuchFile, _ort_state.NotImplemented, _ort_state.RuntimeException)
if TYPE_CHECKING:
    from gptedge.runtime.inspection import Inspection

# Sessions in use, so that loading a variant again shares its weights. Weak: a session is freed
# with the last Model that uses it, so a long process (a server, ``gptedge build``) does not keep
# every variant it ever opened.
_DECODERS: "weakref.WeakValueDictionary[tuple, Decoder]" = weakref.WeakValueDictionary()


def load(
    bundle_dir: str | Path,
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
    optimization: str = "all",
) -> "Model":
    """Open a bundle for generation on the best (or the named) execution provider.

    ``variant`` names an entry of the manifest's variants, ``provider`` a short provider name
    ("cpu", "cuda", ...; see ``gptedge.runtime.providers``); "auto" picks, and the choice is logged
    and kept in ``model.variant`` / ``model.provider``. ``threads`` sets onnxruntime's intra-op
    threads (None: one per physical core). The variant's file is checked against its sha256 when
    its session is first created.
    """
    if not isinstance(bundle_dir, (str, Path)):
        raise UserError(f"load() takes the bundle's folder as a str or Path, not {type(bundle_dir).__name__}")
    for name, value in (("variant", variant), ("provider", provider), ("optimization", optimization)):
        if not isinstance(value, str):
            raise UserError(f"{name}={value!r} is invalid: use a name (a str), or \"auto\"")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserError(f"threads={threads!r} is invalid: use a positive whole number, or leave it unset")
    bundle_dir = Path(bundle_dir)
    manifest = contract.read_manifest(bundle_dir)
    name, chosen = providers.choose(manifest, variant, provider)
    entry = manifest.variants[name]
    path = bundle_dir / entry.file
    key = (str(path.resolve()), entry.sha256, entry.data_sha256, chosen.name, threads, optimization)
    decoder = _DECODERS.get(key)
    if decoder is None:
        contract.verify_variant(bundle_dir, manifest, name)
        decoder = _open_decoder(path, manifest, name, chosen, threads, optimization)
        _DECODERS[key] = decoder
    tokenizer = read_tokenizer(bundle_dir, manifest)
    model = Model(decoder, tokenizer, manifest, name, chosen.name)
    log.info("gptedge.runtime: %s", model.describe())
    return model


def _open_decoder(
    path: Path, manifest: contract.Manifest, name: str, chosen: providers.Provider, threads: int | None, optimization: str
) -> Decoder:
    """The variant's session. A graph that passed its hash check can still be one onnxruntime
    refuses (a damaged file whose hash was updated, another model's graph): that is the bundle's
    fault, said in one line, not onnxruntime's stack."""
    entry = manifest.variants[name]
    options = providers.session_options(threads, optimization, chosen.name)
    try:
        decoder = Decoder(path, manifest, providers=providers.ep_list(chosen), options=options, device=chosen.device)
    except _ORT_ERRORS as e:
        raise UserError(f"variant {name!r}: onnxruntime cannot load {entry.file} ({_first_line(e)}): "
                        f"re-create the variant") from None
    except KeyError as e:
        raise UserError(f"variant {name!r}: {entry.file} has no input {e}: it is not this bundle's graph; re-create the variant") from None
    if (decoder.cache_layout, decoder.cache_dtype.name) != (entry.cache_layout, entry.cache_dtype):
        raise UserError(
            f"variant {name!r}: its graph has a {decoder.cache_layout} {decoder.cache_dtype.name} cache, the "
            f"manifest says {entry.cache_layout} {entry.cache_dtype}: re-create the variant"
        )
    return decoder


def _first_line(error: Exception, limit: int = 160) -> str:
    """What a library said, cut to fit a one-line message (its type when it said nothing)."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def read_tokenizer(bundle_dir: str | Path, manifest: contract.Manifest) -> Tokenizer:
    """The bundle's tokenizer, checked against its hash and against the model it must serve."""
    path = contract.verify_tokenizer(bundle_dir, manifest)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a damaged file
        raise UserError(f"cannot read {path} ({_first_line(e)}): the bundle's tokenizer is damaged; "
                        f"re-export the bundle") from None
    if tokenizer.get_vocab_size() > manifest.model.vocab_size:
        raise UserError(
            f"the bundle's tokenizer has {tokenizer.get_vocab_size()} tokens but the model only "
            f"{manifest.model.vocab_size}: the bundle mixes files of different models; re-export it"
        )
    return tokenizer


@dataclass
class Model:
    decoder: Decoder
    tokenizer: Tokenizer
    manifest: contract.Manifest
    variant: str  # the variant chosen (its manifest key)
    provider: str  # the provider's short name
    settings: GenerationSettings = field(init=False)  # defaults: the manifest's sampling

    def __post_init__(self) -> None:
        self.settings = self.manifest.sampling
        self._table = token_bytes(self.tokenizer, self.manifest.model.vocab_size)

    @property
    def context_length(self) -> int:
        return self.manifest.model.context_length

    @property
    def token_bytes(self) -> list[bytes]:
        """The bytes each token id stands for (special tokens: none), as ``StreamDecoder`` reads them."""
        return self._table

    def chat_prompt(self, messages: Any) -> str:
        """The prompt for chat ``messages`` ([{"role": ..., "content": ...}, ...]) laid out by the
        bundle's chat template, ending where the answer starts (``runtime.chat``)."""
        if self.manifest.chat_template is None:
            raise UserError("this bundle declares no chat template (it is a base model, which continues text): "
                            "give a prompt instead, or export a chat model with gptedge export --chat-template FILE")
        eos = self.tokenizer.id_to_token(self.manifest.eos_token_id) or ""
        return chat.render(self.manifest.chat_template, messages, bos_token=eos, eos_token=eos)

    def chat(self, messages: Any, settings: GenerationSettings | None = None, **overrides: Any) -> GenerationResult:
        """The model's answer to chat ``messages``: ``generate`` on their ``chat_prompt``."""
        return self.generate(self.chat_prompt(messages), settings, **overrides)

    def describe(self) -> str:
        v = self.manifest.variants[self.variant]
        return f"variant {self.variant!r} ({v.precision}, {v.file}) on {self.provider}"

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise UserError(f"encode got {type(text).__name__}: pass a string")
        return self.tokenizer.encode(check_text(text, "the text"), add_special_tokens=False).ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(check_token_ids(token_ids, self.manifest.model.vocab_size))

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> GenerationResult | list[GenerationResult]:
        """Generate for one prompt (a result) or a list of prompts (a list, one batch, in order).

        ``settings`` replaces the bundle's defaults; keyword overrides change single fields,
        e.g. ``generate("Hi", temperature=0, max_new_tokens=20)``."""
        single = isinstance(prompts, str) or _is_token_list(prompts)
        V = self.manifest.model.vocab_size
        if not single and (
            not isinstance(prompts, (list, tuple, np.ndarray))
            or (len(prompts) > 0 and not any(isinstance(p, (str, list, tuple, np.ndarray)) for p in prompts))
        ):  # ([] is an empty batch: no results)
            _check_prompt(prompts, V)  # neither a prompt nor a list of prompts: say which types are
        batch = [prompts] if single else list(prompts)
        settings = self._settings(settings, overrides)
        for p in batch:
            _check_prompt(p, V)
        started = time.perf_counter()
        rows = [self._row(p, settings, shown=bool(settings.stop)) for p in batch]
        for _ in self._run(rows, settings):
            pass
        results = [row.result(started) for row in rows]
        return results[0] if single else results

    def inspect(self, text: str | Sequence[int], k: int = 5) -> "Inspection":
        """What happens inside the model for ``text``: attention per layer and head, the residual
        stream, each layer's top-k next-token guesses (needs the inspection variant; see
        ``runtime.inspection``)."""
        from gptedge.runtime.inspection import inspect

        return inspect(self, text, k)

    def stream(self, prompt: Prompt, settings: GenerationSettings | None = None, **overrides: Any) -> "TextStream":
        """Iterate over text pieces as they are generated; ``.result`` holds the full result after.
        A bad prompt or setting fails here, not at the first piece."""
        _check_prompt(prompt, self.manifest.model.vocab_size)
        return TextStream(self, prompt, self._settings(settings, overrides))

    def _settings(self, settings: GenerationSettings | None, overrides: dict[str, Any]) -> GenerationSettings:
        if settings is not None and not isinstance(settings, GenerationSettings):
            raise UserError(
                f"settings must be a GenerationSettings, not {type(settings).__name__}: pass single settings "
                f"as keywords, e.g. generate(prompt, temperature=0)"
            )
        return (settings or self.settings).replace(**overrides)

    def _run(self, rows: list[Row], settings: GenerationSettings) -> Iterator[tuple[int, str]]:
        if rows and settings.max_new_tokens > 0:
            m = self.manifest
            yield from generation.run(self.decoder, rows, settings, m.eos_token_id, m.pad_token_id)

    def _row(self, prompt: Prompt, settings: GenerationSettings, shown: bool = True) -> Row:
        if isinstance(prompt, str):
            ids = self.encode(prompt)
        elif _is_token_list(prompt):
            ids = check_token_ids(prompt, self.manifest.model.vocab_size, "prompt token ids")
        else:
            _check_prompt(prompt, self.manifest.model.vocab_size)
        if not ids:  # an empty prompt starts a new document, as in training
            ids = [self.manifest.eos_token_id]
        window = generation.window(ids, self.context_length)
        if len(window) < len(ids):
            warnings.warn(
                f"prompt has {len(ids)} tokens, more than the context of {self.context_length}: "
                f"keeping its last {len(window)}",
                stacklevel=4,
            )
        return Row(
            tokens=list(window),
            prompt_tokens=len(window),
            output=ShownText(self._table, settings.stop) if shown else TextAtEnd(self._table),
        )


class TextStream:
    """The pieces of one generation, produced lazily as the loop runs."""

    def __init__(self, model: Model, prompt: Prompt, settings: GenerationSettings) -> None:
        self._model, self._prompt, self._settings = model, prompt, settings
        self.result: GenerationResult | None = None  # set when the stream is exhausted

    def __iter__(self) -> Iterator[str]:
        m = self._model
        started = time.perf_counter()
        row = m._row(self._prompt, self._settings)
        for _, piece in m._run([row], self._settings):
            yield piece
        self.result = row.result(started)


def _check_prompt(prompt: Any, vocab_size: int) -> None:
    """A UserError unless ``prompt`` is valid text or a non-empty list of token ids of the model."""
    if isinstance(prompt, str):
        check_text(prompt, "the prompt")
    elif _is_token_list(prompt):
        check_token_ids(prompt, vocab_size, "prompt token ids")
    else:
        if isinstance(prompt, (bytes, bytearray)):
            raise UserError("the prompt is bytes, not a string: decode it first, e.g. data.decode('utf-8')")
        if isinstance(prompt, (list, tuple, np.ndarray)) and len(prompt) == 0:
            raise UserError("the prompt is an empty list of token ids: pass at least one id, or '' for a new document")
        raise UserError(f"the prompt is {_describe(prompt)}: pass a string or a list of integer token ids")


def _describe(x: Any) -> str:
    if isinstance(x, (list, tuple)) and x:
        bad = next(t for t in x if not isinstance(t, (int, np.integer)) or isinstance(t, bool))
        return f"a {type(x).__name__} holding {type(bad).__name__} ({bad!r:.40})"
    if isinstance(x, np.ndarray):
        return f"a {x.ndim}-D {x.dtype} array"
    return f"of type {type(x).__name__}"


def _is_token_list(x: Any) -> bool:
    """A prompt given as token ids: a non-empty list/tuple of ints, or a 1-D integer array."""
    if isinstance(x, np.ndarray):
        return x.ndim == 1 and np.issubdtype(x.dtype, np.integer)
    return (
        isinstance(x, (list, tuple))
        and len(x) > 0
        and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in x)
    )
