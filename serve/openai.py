"""The OpenAI completions and chat completions APIs as data: requests read and checked into what
the engine takes, and results shaped into the response, stream chunk and error objects clients parse.

Checked the way the OpenAI API checks: a wrong type or value is a 400 ``invalid_request_error``
naming the parameter; parameters this server cannot honour (``n`` > 1, a ``suffix``, presence or
frequency penalties, ``logit_bias``, tools, structured output) are refused rather than ignored, so a
client never gets silently different behaviour. gptedge's own ``top_k``, ``repetition_penalty`` and
``ignore_eos`` are accepted as extra fields.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gptedge.runtime import GenerationSettings

MAX_LOGPROBS = 5  # as the OpenAI completions API allows
MAX_TOP_LOGPROBS = 20  # and its chat completions API
MAX_STOP = 4


class ApiError(Exception):
    """An error the client is told about: HTTP status and the OpenAI error object's fields."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class CompletionRequest:
    """A checked completions request, or a chat one (``prompts`` then holds its one message list)."""

    prompts: list[str | list[int] | list[dict]]
    settings: GenerationSettings
    stream: bool = False
    logprobs: int = 0  # candidates computed per token (0: none)
    top_logprobs: int = 0  # of those, how many a chat answer lists
    echo: bool = False
    include_usage: bool = False  # stream_options.include_usage
    model: str | None = None


def _get(body: dict, name: str, kinds: tuple[type, ...], default: Any, what: str) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ApiError(400, f"{name} must be {what}, not {type(value).__name__}", param=name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite number", param=name)
    return value


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g}, not {value}", param=name)


def _prompts(body: dict, vocab_size: int) -> list[str | list[int]]:
    """``prompt``: a string, a list of strings, a list of token ids, or a list of those lists."""
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "prompt is required: give a string, a list of strings or token ids", param="prompt")
    is_ids = lambda x: isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
    if isinstance(prompt, str) or is_ids(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or is_ids(p) for p in prompt):
        prompts = list(prompt)
    else:
        raise ApiError(400, "prompt must be a non-empty string, list of strings, list of token ids or list of those",
                       param="prompt")
    for p in prompts:
        if isinstance(p, str) and not p:
            raise ApiError(400, "prompt is empty: give at least one character", param="prompt")
        if isinstance(p, list) and not all(0 <= t < vocab_size for t in p):
            raise ApiError(400, f"prompt holds a token id outside 0..{vocab_size - 1}", param="prompt")
    return prompts


def read_completion(body: Any, defaults: GenerationSettings, context_length: int, vocab_size: int) -> CompletionRequest:
    """Check a ``POST /v1/completions`` body; raise ``ApiError`` (400) naming the first problem."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if body.get("suffix") not in (None, ""):
        raise ApiError(400, "suffix is not supported: these models only continue text", param="suffix")
    prompts = _prompts(body, vocab_size)
    logprobs = _get(body, "logprobs", (int,), 0, "a whole number")
    _in_range("logprobs", logprobs, 0, MAX_LOGPROBS)
    return _request(body, prompts, _settings(body, defaults, context_length, vocab_size, "max_tokens", 16),
                    logprobs=logprobs, echo=bool(_get(body, "echo", (bool,), False, "true or false")))


def read_chat(body: Any, defaults: GenerationSettings, context_length: int, vocab_size: int) -> CompletionRequest:
    """Check a ``POST /v1/chat/completions`` body: ``messages`` are kept as given (the model's chat
    template checks and lays them out), the rest as for completions. Tools, other response formats
    and non-text parts are refused, since the model cannot honour them."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for name in ("tools", "functions", "tool_choice", "function_call", "audio", "prediction"):
        if body.get(name) not in (None, [], "none"):
            raise ApiError(400, f"{name} is not supported: this server returns text only", param=name)
    response_format = _get(body, "response_format", (dict,), {"type": "text"}, "an object")
    if response_format.get("type") != "text":
        raise ApiError(400, "response_format must be {\"type\": \"text\"}: structured output is not supported",
                       param="response_format")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {\"role\": ..., \"content\": ...} objects",
                       param="messages")
    for i, message in enumerate(messages):  # whatever the template makes of them, the model knows no tools
        if isinstance(message, dict) and message.get("tool_calls") not in (None, []):
            raise ApiError(400, f"messages[{i}].tool_calls is not supported: this server has no tools, so send "
                                "the conversation as text", param="messages")
    top = _get(body, "top_logprobs", (int,), 0, "a whole number")
    _in_range("top_logprobs", top, 0, MAX_TOP_LOGPROBS)
    wants = _get(body, "logprobs", (bool,), False, "true or false")
    if top and not wants:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    settings = _settings(body, defaults, context_length, vocab_size, name, context_length)
    # logprobs: the chosen token's (at least one candidate is computed for it)
    return _request(body, [messages], settings, logprobs=max(top, 1) if wants else 0, top_logprobs=top)


def _settings(body: dict, defaults: GenerationSettings, context_length: int, vocab_size: int, max_name: str,
              max_default: int) -> GenerationSettings:
    """The generation settings both endpoints take, checked the OpenAI API's way."""
    for name in ("n", "best_of"):
        if _get(body, name, (int,), 1, "a whole number") != 1:
            raise ApiError(400, f"{name} must be 1: this server returns one completion per prompt", param=name)
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise ApiError(400, f"{name} is not supported: use repetition_penalty (gptedge's, > 0; 1 is none)",
                           param=name)
    if body.get("logit_bias") not in (None, {}):
        raise ApiError(400, "logit_bias is not supported: leave it out (tokens are sampled as the model weighs them)",
                       param="logit_bias")
    max_tokens = _get(body, max_name, (int,), max_default, "a whole number")
    if not 0 <= max_tokens <= context_length:
        raise ApiError(400, f"{max_name} must be between 0 and the context length, {context_length}; got {max_tokens}",
                       param=max_name)
    temperature = float(_get(body, "temperature", (int, float), 1.0, "a number"))
    _in_range("temperature", temperature, 0, 2)
    top_p = float(_get(body, "top_p", (int, float), 1.0, "a number"))
    if not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be above 0 and at most 1, not {top_p}", param="top_p")
    top_k = _get(body, "top_k", (int,), 0, "a whole number (0: no limit)")
    _in_range("top_k", top_k, 0, vocab_size)
    penalty = float(_get(body, "repetition_penalty", (int, float), 1.0, "a number"))
    if penalty <= 0:
        raise ApiError(400, f"repetition_penalty must be above 0 (1 is none), not {penalty}", param="repetition_penalty")
    seed = _get(body, "seed", (int,), None, "a whole number")
    if seed is not None and seed < 0:
        raise ApiError(400, f"seed must be 0 or more, not {seed}", param="seed")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
        raise ApiError(400, f"stop must be a non-empty string or a list of at most {MAX_STOP} of them", param="stop")
    ignore_eos = _get(body, "ignore_eos", (bool,), False, "true or false")  # gptedge's: exactly max_tokens
    return defaults.replace(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                            repetition_penalty=penalty, seed=seed, stop=tuple(stops), ignore_eos=ignore_eos)


def _request(body: dict, prompts: list, settings: GenerationSettings, **fields: Any) -> CompletionRequest:
    options = _get(body, "stream_options", (dict,), {}, "an object")
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise ApiError(400, f"stream_options.include_usage must be true or false, not {type(include_usage).__name__}",
                       param="stream_options")
    return CompletionRequest(
        prompts=prompts, settings=settings, stream=bool(_get(body, "stream", (bool,), False, "true or false")),
        include_usage=bool(include_usage), model=_get(body, "model", (str,), None, "a string"), **fields,
    )


# -- responses -----------------------------------------------------------------------------------

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


def new_id(prefix: str = "cmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def completion(cid: str, model: str, choices: list[dict], usage: dict | None) -> dict:
    body = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_completion(cid: str, model: str, text: str, finish_reason: str, logprobs: dict | None, usage: dict) -> dict:
    message = {"role": "assistant", "content": text, "refusal": None}
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}],
            "usage": usage}


def chat_chunk(cid: str, model: str, delta: dict | None, finish_reason: str | None = None,
               logprobs: dict | None = None, usage: dict | None = None) -> dict:
    """A stream chunk: a ``delta`` of the answer, or (``delta`` None) the closing usage chunk."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": logprobs,
                                         "finish_reason": finish_reason}]
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def chat_logprob(token: str, data: bytes, logprob: float, top: list[tuple[str, bytes, float]]) -> dict:
    """One entry of a chat answer's ``logprobs.content``: the token, its bytes and its candidates."""
    return {"token": token, "logprob": logprob, "bytes": list(data),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for t, b, lp in top]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Logprobs:
    """The legacy completions ``logprobs`` object, built token by token."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []
        self.offset = 0

    def add(self, text: str, logprob: float | None, top: dict[str, float] | None) -> None:
        self.tokens.append(text)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)
        self.text_offset.append(self.offset)
        self.offset += len(text)

    def since(self, start: int) -> dict:
        """The entries from ``start`` on (a stream chunk's share), as the API's object."""
        return {"tokens": self.tokens[start:], "token_logprobs": self.token_logprobs[start:],
                "top_logprobs": self.top_logprobs[start:], "text_offset": self.text_offset[start:]}
