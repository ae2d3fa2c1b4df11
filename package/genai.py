"""The ``genai`` target: one folder per variant that onnxruntime-genai loads (``og.Model(folder)``).

onnxruntime-genai reads one model per folder from ``genai_config.json``. Its ``decoder`` type
takes our graph as it is: it feeds ``input_ids``, ``attention_mask`` and ``position_ids``, and the
cache names are declared in the config. ``past_present_share_buffer`` follows the variant's cache
layout: the exported graph returns a cache one position longer each step (concat: ``false``);
the optimized graph's GroupQueryAttention writes into a cache of ``max_length`` slots, which genai
can bind as past and present at once (shared: ``true``). The same folder is what genai's Android
and iOS packages load.
"""

from __future__ import annotations

from gptedge.package import hf
from gptedge.package.folder import Folder, Plan, Source, json_text
from gptedge.runtime import contract

TITLE = "onnxruntime-genai (Python, C, C#, Java; Android and iOS packages)"
CONFIG_FILE = "genai_config.json"
# genai's provider_options key per provider kind a variant is meant for (CPU needs no entry).
PROVIDER_OPTIONS = {"cuda": "cuda", "directml": "dml", "webgpu": "webgpu", "qnn": "qnn"}


def genai_config(source: Source, variant: contract.Variant) -> dict:
    m = source.manifest
    shape, s = m.model, m.sampling
    accelerators = [PROVIDER_OPTIONS[p] for p in variant.providers if p in PROVIDER_OPTIONS]
    cpu = "cpu" in variant.providers
    return {
        "model": {
            "type": "decoder",  # genai's "gpt2" type means the old stacked past_%d cache
            "bos_token_id": m.eos_token_id,
            "eos_token_id": m.eos_token_id,
            "pad_token_id": m.pad_token_id,
            "vocab_size": shape.vocab_size,
            "context_length": shape.context_length,
            "decoder": {
                "filename": variant.file,
                "session_options": {
                    "log_id": "onnxruntime-genai",
                    "provider_options": [] if cpu or not accelerators else [{accelerators[0]: {}}],
                },
                "head_size": shape.head_dim,
                "hidden_size": shape.n_embd,
                "num_attention_heads": shape.n_head,
                "num_key_value_heads": shape.n_head,
                "num_hidden_layers": shape.n_layer,
                "inputs": {
                    "input_ids": contract.INPUT_IDS,
                    "attention_mask": contract.ATTENTION_MASK,
                    "position_ids": contract.POSITION_IDS,
                    "past_key_names": contract.past_names("%d")[0],
                    "past_value_names": contract.past_names("%d")[1],
                },
                "outputs": {
                    "logits": contract.LOGITS,
                    "present_key_names": contract.present_names("%d")[0],
                    "present_value_names": contract.present_names("%d")[1],
                },
            },
        },
        "search": {
            "do_sample": s.temperature > 0,
            "temperature": s.temperature if s.temperature > 0 else 1.0,
            "top_k": s.top_k if s.top_k > 0 else shape.vocab_size,  # ours: 0 is "no limit"
            "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty,
            "max_length": shape.context_length,  # prompt and new tokens together, as genai counts
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": variant.cache_layout == "shared",
            "early_stopping": True,
            "length_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "diversity_penalty": 0.0,
        },
    }


def plan(source: Source) -> Plan:
    """A folder per variant: genai reads one model per folder."""
    folders = []
    side = hf.tokenizer_files(source)
    for name in source.variants:
        v = source.manifest.variants[name]
        folder = Folder(name, variants={name: v}, texts={CONFIG_FILE: json_text(genai_config(source, v)), **side},
                        links={**hf.tokenizer_link(source), **hf.bundle_links(source, v)})
        where = ", ".join(v.providers)
        folder.notes.append(f"runs on {where}; needs onnxruntime >= {v.min_onnxruntime}")
        folders.append(folder)
    first = source.variants[0]
    return Plan("genai", TITLE, folders, notes=[
        "one folder per variant: genai reads one model per folder",
        "genai's Android and iOS packages ship their own onnxruntime: check it is as new as a folder needs"],
                usage=USAGE.replace("VARIANT", first))


USAGE = """```python
import onnxruntime_genai as og

model = og.Model("{folder}/VARIANT")
tokenizer = og.Tokenizer(model)
params = og.GeneratorParams(model)
params.set_search_options(max_length=64)
generator = og.Generator(model, params)
generator.append_tokens(tokenizer.encode("Once upon a time"))
while not generator.is_done():
    generator.generate_next_token()
print(tokenizer.decode(generator.get_sequence(0)))
```
Kotlin (Android, `com.microsoft.onnxruntime:onnxruntime-genai`): `val model = Model("$dir/VARIANT")`;
Swift (iOS, `onnxruntime-genai` package): `let model = try OGAModel(configPath: dir + "/VARIANT")`."""
