"""The Hugging Face side files, and the ``hf`` target: a folder optimum's ``ORTModelForCausalLM`` loads.

Our graphs already have GPT-2's input and output names (``input_ids``, ``attention_mask``,
``position_ids``, ``past_key_values.{i}.key``, ``logits``, ``present.{i}.key``), so a GPT-2
``config.json`` is all optimum (and transformers.js) need to run them; ``tokenizer_config.json``
tells transformers, transformers.js and onnxruntime-genai that ``tokenizer.json`` is a GPT-2
byte-level BPE with our end-of-text token.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from gptedge.package.folder import Folder, Plan, Source, json_text
from gptedge.runtime import contract

TITLE = "Hugging Face optimum (ORTModelForCausalLM)"


def special_tokens(source: Source) -> tuple[str, str]:
    """The end-of-text and padding tokens' texts, as the tokenizer spells them (``<|endoftext|>``)."""
    tokenizer = Tokenizer.from_file(str(source.tokenizer))
    return tuple(tokenizer.id_to_token(i) for i in (source.manifest.eos_token_id, source.manifest.pad_token_id))


def config(source: Source, extra: dict | None = None) -> dict:
    """``config.json``: a GPT-2 configuration with our shape and special tokens."""
    m = source.manifest
    shape = m.model
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": shape.vocab_size,
        "n_positions": shape.context_length,
        "n_ctx": shape.context_length,
        "n_embd": shape.n_embd,
        "n_layer": shape.n_layer,
        "n_head": shape.n_head,
        "bos_token_id": m.eos_token_id,  # GPT-2 starts and ends texts with the same token
        "eos_token_id": m.eos_token_id,
        "pad_token_id": m.pad_token_id,
        "tie_word_embeddings": True,
        "use_cache": True,
        **(extra or {}),
    }


def generation_config(source: Source) -> dict:
    """``generation_config.json``: the manifest's default sampling settings."""
    m = source.manifest
    s = m.sampling
    return {
        "bos_token_id": m.eos_token_id,
        "eos_token_id": m.eos_token_id,
        "pad_token_id": m.pad_token_id,
        "do_sample": s.temperature > 0,
        "temperature": s.temperature if s.temperature > 0 else 1.0,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "repetition_penalty": s.repetition_penalty,
        # the context, prompt included: a length in new tokens runs past the last position on a long
        # prompt (transformers.js then fails reading the position table; it never caps by itself)
        "max_length": m.model.context_length,
    }


def tokenizer_files(source: Source) -> dict[str, str]:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` beside ``tokenizer.json``."""
    eos, pad = special_tokens(source)
    specials = {"bos_token": eos, "eos_token": eos, "unk_token": eos, "pad_token": pad}
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        **specials,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": source.manifest.model.context_length,
    }
    if source.manifest.chat_template is not None:  # what apply_chat_template reads, in Python and in JS
        config["chat_template"] = source.manifest.chat_template
    return {"tokenizer_config.json": json_text(config), "special_tokens_map.json": json_text(specials)}


def tokenizer_link(source: Source) -> dict[str, Path]:
    return {source.tokenizer.name: source.tokenizer}


def bundle_links(source: Source, variant: contract.Variant) -> dict[str, Path]:
    """A variant's graph (and external data) under the names the bundle gives them."""
    return {file: source.file(file) for file, _, _ in variant.files()}


def plan(source: Source) -> Plan:
    """One folder with every chosen variant under its bundle file name (optimum's ``file_name``)."""
    folder = Folder("", texts={
        "config.json": json_text(config(source)),
        "generation_config.json": json_text(generation_config(source)),
        **tokenizer_files(source),
    }, links=tokenizer_link(source))
    for name in source.variants:
        v = source.manifest.variants[name]
        folder.variants[name] = v
        folder.links.update(bundle_links(source, v))
    first = folder.variants[source.variants[0]].file
    return Plan("hf", TITLE, [folder], usage=USAGE.replace("FILE", first), notes=[
        "optimum takes `model.onnx` unless told otherwise: name the variant's file with `file_name=`."])


USAGE = """```python
from optimum.onnxruntime import ORTModelForCausalLM
from transformers import AutoTokenizer

model = ORTModelForCausalLM.from_pretrained("{folder}", file_name="FILE")
tokenizer = AutoTokenizer.from_pretrained("{folder}")
ids = tokenizer("Once upon a time", return_tensors="pt")
print(tokenizer.decode(model.generate(**ids, max_new_tokens=32)[0]))
```"""
