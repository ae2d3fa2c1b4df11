"""Chat templates (``runtime.chat``): the prompt is the one transformers' ``apply_chat_template``
renders for the same template and messages; bad messages and bad templates are one-line errors;
the manifest records a template at format version 3 and stays at 2 without one."""

from __future__ import annotations

import json
import sys

import pytest

from gptedge.errors import UserError
from gptedge.runtime import chat, contract

EOS = "<|endoftext|>"
TEMPLATES = {
    # ChatML, as Qwen and many fine-tunes use it
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
              "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    # Zephyr's: eos_token after each turn, trim_blocks and lstrip_blocks at work on the line breaks
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content']"
              " + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + "
              "eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + "
              "eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n"
              "{% endif %}\n{% endfor %}",
    # loop controls, a namespace, tojson and raise_exception for a rule the model was trained with
    "rules": "{% set ns = namespace(system='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
             "{% set ns.system = m['content'] %}{% continue %}{% endif %}{% if m['role'] == 'assistant' and "
             "loop.first %}{{ raise_exception('the first turn must be the user\\'s') }}{% endif %}"
             "[{{ m['role'] }}] {{ m['content'] | tojson }}{{ eos_token }}{% endfor %}"
             "{% if ns.system %}(system: {{ ns.system }}){% endif %}{% if add_generation_prompt %}[assistant]{% endif %}",
}
MESSAGES = [
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "What is a for loop? «naïve» 🙂"},
    {"role": "assistant", "content": "It repeats a block."},
    {"role": "user", "content": "And while?"},
]


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_prompt_is_what_transformers_renders(name, tokenizer_file):
    transformers = pytest.importorskip("transformers", reason="transformers is in the dev extra")
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token=EOS, bos_token=EOS)
    theirs.chat_template = TEMPLATES[name]
    expected = theirs.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert chat.render(TEMPLATES[name], MESSAGES, bos_token=EOS, eos_token=EOS) == expected
    # content given as text parts (the OpenAI API's other form) is the same text
    parts = [{**m, "content": [{"type": "text", "text": m["content"][:5]}, {"type": "text", "text": m["content"][5:]}]}
             for m in MESSAGES]
    assert chat.render(TEMPLATES[name], parts, bos_token=EOS, eos_token=EOS) == expected


@pytest.mark.parametrize("messages,words", [
    ([], "messages must be a non-empty list"),
    ("hello", "messages must be a non-empty list"),
    ([["user", "hi"]], "messages[0] must be an object"),
    ([{"role": "tool", "content": "42"}], "messages[0].role must be one of system, developer, user, assistant"),
    ([{"role": "user"}], "messages[0].content must be a string or a list of text parts, not NoneType"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "reads text only"),
    ([{"role": "user", "content": "bad \udcff byte"}], "messages[0].content is not valid UTF-8"),
])
def test_bad_messages_are_one_line_errors(messages, words):
    with pytest.raises(UserError, match=None) as e:
        chat.render(TEMPLATES["chatml"], messages, EOS, EOS)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_template_errors_are_one_line(monkeypatch):
    with pytest.raises(UserError, match=r"not valid Jinja \(line 1: .*\): fix the template"):
        chat.check_template("{% for m in messages %}{{ m }}")
    for blank in ("", "  \n"):
        with pytest.raises(UserError, match="give a Jinja template of 1 to 65536 characters"):
            chat.check_template(blank)
    with pytest.raises(UserError, match="the chat template refused these messages: the first turn must be the user's"):
        chat.render(TEMPLATES["rules"], [{"role": "assistant", "content": "hi"}], EOS, EOS)
    with pytest.raises(UserError, match="refused these messages: .*unsafe|refused these messages: .*attribute"):
        chat.render("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", MESSAGES, EOS, EOS)
    # jinja2 is an extra: without it, a chat bundle says which one
    chat._compile.cache_clear()
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(UserError, match=r"needs jinja2: pip install 'gptedge\[chat\]'"):
        chat.render(TEMPLATES["chatml"], MESSAGES, EOS, EOS)
    chat._compile.cache_clear()


def test_manifest_holds_a_template_at_version_3_and_stays_at_2_without(tmp_path):
    shape = contract.ModelShape(n_layer=1, n_head=1, n_embd=4, vocab_size=8, context_length=8)
    (tmp_path / contract.TOKENIZER_FILE).write_text("{}")
    variant = contract.Variant(file="model.onnx", precision="fp32", size_bytes=0, sha256="0" * 64)
    manifest = contract.Manifest(model=shape, eos_token_id=0, pad_token_id=0, variants={"fp32": variant})
    contract.write_manifest(tmp_path, manifest)
    written = json.loads((tmp_path / contract.MANIFEST_FILE).read_text())
    assert written["format_version"] == 2 and "chat_template" not in written  # an older gptedge reads it
    manifest.chat_template = TEMPLATES["chatml"]
    contract.write_manifest(tmp_path, manifest)
    written = json.loads((tmp_path / contract.MANIFEST_FILE).read_text())
    assert written["format_version"] == 3 and written["chat_template"] == TEMPLATES["chatml"]
    assert contract.read_manifest(tmp_path).chat_template == TEMPLATES["chatml"]
