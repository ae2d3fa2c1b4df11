"""Chat messages to the prompt a chat model was trained on, with the bundle's chat template.

A chat-tuned model continues a prompt laid out in its own way (turn markers, role names, where the
answer starts); a bundle declares that layout as ``manifest.chat_template``, a Jinja template in the
form Hugging Face's ``tokenizer_config.json`` uses, taken over by ``gptedge import`` or set with
``gptedge export --chat-template``. It is rendered the way transformers and transformers.js render
it (a sandbox, ``trim_blocks`` and ``lstrip_blocks``, loop controls, ``raise_exception``,
``tojson``, ``strftime_now``; the variables ``messages``, ``add_generation_prompt``, ``bos_token``
and ``eos_token``), so the same messages give the same prompt in all three. Templates are code from
whoever made the model: the sandbox keeps them from reaching Python.

jinja2 is the one extra a chat bundle needs (``pip install 'gptedge[chat]'``); base models need none.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from gptedge.errors import UserError, check_text
from gptedge.runtime.contract import MAX_CHAT_TEMPLATE

ROLES = ("system", "developer", "user", "assistant")


def check_messages(messages: Any) -> list[dict[str, str]]:
    """``messages`` as a list of {"role", "content"} with text content, or a UserError naming the
    first problem. Content may be a string or a list of text parts ({"type": "text", "text": ...}),
    as the OpenAI API allows; other parts (images, audio) and tool calls are refused: the model
    reads text only."""
    if not isinstance(messages, list) or not messages:
        raise UserError("messages must be a non-empty list of {\"role\": ..., \"content\": ...} objects")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise UserError(f"{where} must be an object with role and content, not {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise UserError(f"{where}.role must be one of {', '.join(ROLES)}, not {role!r} (tools are not supported)")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise UserError(f"{where}.content holds a part that is not text: this model reads text only")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise UserError(f"{where}.content must be a string or a list of text parts, not {type(content).__name__}")
        out.append({"role": role, "content": check_text(content, f"{where}.content")})
    return out


def render(template: str, messages: Any, bos_token: str, eos_token: str) -> str:
    """The prompt for ``messages``, ending where the assistant's answer starts."""
    messages = check_messages(messages)
    jinja2 = _jinja2()
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=True, bos_token=bos_token,
                                         eos_token=eos_token)
    except jinja2.TemplateError as e:  # raise_exception in the template, or a template that fails
        raise UserError(f"the chat template refused these messages: {e}") from None


def check_template(template: str) -> None:
    """A UserError unless ``template`` is one a manifest can hold and it compiles (for a writer: a
    bad template fails before it is stored)."""
    if not template.strip():
        raise UserError(f"the chat template is empty: give a Jinja template of 1 to {MAX_CHAT_TEMPLATE} characters")
    if len(template) > MAX_CHAT_TEMPLATE:
        raise UserError(f"the chat template has {len(template)} characters: give a Jinja template of 1 to "
                        f"{MAX_CHAT_TEMPLATE} characters")
    _compile(template)


def _jinja2() -> Any:
    try:
        import jinja2
    except ImportError:
        raise UserError("this bundle declares a chat template, which needs jinja2: "
                        "pip install 'gptedge[chat]'") from None
    return jinja2


@lru_cache(maxsize=4)
def _compile(template: str) -> Any:
    jinja2 = _jinja2()
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:  # Jinja's own escapes HTML characters; transformers' does not
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"the chat template is not valid Jinja (line {e.lineno}: {e.message}): "
                        f"fix the template") from None
