"""``gptedge package --for genai``, checked by onnxruntime-genai itself: for every variant it runs on
the CPU, genai's own tokenizer and generation loop give the same prompt ids, the same 16 greedy
tokens and the same prefill logits (within 1e-4) as ``gptedge.runtime``, for both cache layouts
(the exported graph with ``past_present_share_buffer: false``, the optimized one with ``true``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gptedge.runtime
from fixtures_export import chat_copy
from gptedge.runtime import contract
from gptedge.cli import main
from gptedge.runtime.next_token import _logits

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is in the dev extra")

PROMPT = "The for statement"
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def genai_packages(tmp_path_factory, quantized_bundle, optimized_bundle):
    out = tmp_path_factory.mktemp("genai")
    for name, bundle in (("exported", quantized_bundle), ("optimized", optimized_bundle)):
        assert main(["package", str(bundle), str(out / name), "--for", "genai", "--quiet"]) == 0
    return out, {"exported": quantized_bundle, "optimized": optimized_bundle}


def genai_greedy(folder) -> tuple[list[int], list[int], np.ndarray]:
    """Prompt ids, new ids and the last prompt position's logits, all from onnxruntime-genai."""
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ids = list(tokenizer.encode(PROMPT))
    params = og.GeneratorParams(model)
    total = len(ids) + NEW_TOKENS
    params.set_search_options(max_length=total, min_length=total, do_sample=False)  # past end-of-text
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    prefill = np.array(generator.get_output("logits"))  # (1, T, V): the prompt's logits
    while not generator.is_done():
        generator.generate_next_token()
    return ids, list(generator.get_sequence(0))[len(ids):], prefill.reshape(-1, prefill.shape[-1])[-1]


@pytest.mark.parametrize("layout,variant", [("exported", "fp32"), ("exported", "int8"), ("exported", "int4"),
                                            ("exported", "int8-static"), ("optimized", "fp32")])
def test_genai_generates_what_gptedge_generates(genai_packages, layout, variant):
    out, bundles = genai_packages
    folder = out / layout / variant
    config = json.loads((folder / "genai_config.json").read_text())
    model = gptedge.runtime.load(bundles[layout], variant=variant)
    assert config["search"]["past_present_share_buffer"] == (model.decoder.cache_layout == "shared")
    ids, new_ids, prefill = genai_greedy(folder)
    assert ids == model.encode(PROMPT)
    expected = model.generate(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    assert new_ids == expected.token_ids
    reference = _logits(model.decoder, ids)[-1]
    assert np.abs(prefill.astype(np.float64) - reference).max() <= 1e-4


@pytest.mark.parametrize("layout", ["exported", "optimized"])
def test_a_genai_batch_of_unequal_prompts_equals_each_prompt_alone(genai_packages, layout):
    """genai left-pads a batch (its tokenizer's ``encode_batch``); both layouts mask that padding, so
    each row generates what the prompt generates alone (the shared layout through its padding
    bias: onnxruntime-genai's own builder graphs leave it out, and there the shorter row differs)."""
    out, bundles = genai_packages
    model = og.Model(str(out / layout / "fp32"))
    tokenizer = og.Tokenizer(model)
    prompts = [PROMPT + " in Python is", "The"]  # unequal token counts
    batch = tokenizer.encode_batch(prompts)
    params = og.GeneratorParams(model)
    total = max(len(tokenizer.encode(p)) for p in prompts) + NEW_TOKENS  # the padded width + new
    params.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=len(prompts))
    generator = og.Generator(model, params)
    generator.append_tokens(batch)
    while not generator.is_done():
        generator.generate_next_token()
    ours = gptedge.runtime.load(bundles[layout], variant="fp32")
    lengths = {len(ours.encode(p)) for p in prompts}
    assert len(lengths) == 2, lengths
    for row, prompt in enumerate(prompts):
        alone = ours.generate(prompt, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True).token_ids
        assert list(generator.get_sequence(row))[-NEW_TOKENS:] == alone, (layout, prompt)


def test_every_genai_folder_is_a_bundle_with_one_variant(genai_packages):
    out, bundles = genai_packages
    for folder in (out / "exported").iterdir():
        if folder.is_dir():
            manifest = contract.read_bundle(folder, verify=True)
            assert list(manifest.variants) == [folder.name]
    assert "fp16" in {f.name for f in (out / "exported").iterdir()}  # a CUDA variant is packaged too
    fp16 = json.loads((out / "exported" / "fp16" / "genai_config.json").read_text())
    assert fp16["model"]["decoder"]["session_options"]["provider_options"] == [{"cuda": {}}]


# Whitespace controlled with "-" in the template itself: onnxruntime-genai 0.18 renders templates
# without transformers' trim_blocks and lstrip_blocks (the README says so), and agrees on these.
CHAT_TEMPLATE = ("{%- for m in messages %}\n{{- '<|' + m['role'] + '|>\\n' + m['content'] + eos_token }}\n"
                 "{%- endfor %}\n{%- if add_generation_prompt %}<|assistant|>\n{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a for loop? naïve"}]


def test_genai_lays_out_chat_messages_as_the_runtime(tmp_path, optimized_bundle):
    """A chat bundle's template travels in tokenizer_config.json, where genai's tokenizer reads it."""
    bundle = chat_copy(optimized_bundle, tmp_path, CHAT_TEMPLATE)
    assert main(["package", str(bundle), str(tmp_path / "genai"), "--for", "genai", "--quiet"]) == 0
    tokenizer = og.Tokenizer(og.Model(str(tmp_path / "genai" / "fp32")))
    theirs = tokenizer.apply_chat_template(json.dumps(MESSAGES), add_generation_prompt=True)
    ours = gptedge.runtime.load(bundle, variant="fp32").chat_prompt(MESSAGES)
    assert ours == "<|system|>\nBe brief.<|endoftext|><|user|>\nWhat is a for loop? naïve<|endoftext|><|assistant|>\n"
    assert theirs == ours
