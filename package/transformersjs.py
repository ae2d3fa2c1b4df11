"""The ``transformersjs`` target: a folder transformers.js (npm ``@huggingface/transformers``) loads,
in Node or in a browser.

transformers.js looks for a decoder-only model at ``onnx/model{suffix}.onnx``, the suffix naming
the precision its ``dtype`` option asks for, and reads ``config.json`` (a GPT-2 config: our
graphs have GPT-2's input and output names) and ``tokenizer_config.json``. It runs the onnxruntime
it ships (onnxruntime-node 1.30 in Node, onnxruntime-web 1.31 in browsers): a variant that needs a
newer one is made in the form those run (the optimized graph without GroupQueryAttention's
17th input, the same logits at batch 1), or left out with a note.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import onnx

from gptedge.export import compat
from gptedge.export.shared_cache import without_query_seqlens
from gptedge.package import hf
from gptedge.package.folder import Folder, Plan, Source, json_text
from gptedge.runtime import contract

TITLE = "transformers.js (Node and browsers)"
ONNXRUNTIME = "1.30"  # what transformers.js 4.x runs in Node (onnxruntime-node); browsers have 1.31
# transformers.js's dtype option -> file suffix, per gptedge precision.
DTYPES = {"fp32": ("fp32", ""), "fp16": ("fp16", "_fp16"), "int8": ("q8", "_quantized"), "int4": ("q4", "_q4"),
          "int8-static": ("int8", "_int8")}


def model_file(precision: str) -> str:
    return f"onnx/model{DTYPES[precision][1]}.onnx"


def plan(source: Source) -> Plan:
    folder = Folder("", texts={"config.json": json_text(hf.config(source)),
                               "generation_config.json": json_text(hf.generation_config(source)),
                               **hf.tokenizer_files(source)},
                    links=hf.tokenizer_link(source))
    taken: dict[str, str] = {}  # file -> variant
    for name in source.variants:
        v = source.manifest.variants[name]
        file = model_file(v.precision)
        if file in taken:
            folder.notes.append(f"{name} left out: transformers.js has one file per precision, and "
                                f"{file} holds {taken[file]}")
            continue
        if v.data_file:
            folder.notes.append(f"{name} left out: its weights are in an external data file (over 2 GB), "
                                "which this package does not lay out for transformers.js yet")
            continue
        made = _for_older_onnxruntime(source, v)
        if made is None and contract.version_tuple(v.min_onnxruntime) > contract.version_tuple(ONNXRUNTIME):
            folder.notes.append(f"{name} left out: it needs onnxruntime >= {v.min_onnxruntime}, transformers.js "
                                f"runs {ONNXRUNTIME}")
            continue
        taken[file] = name
        if made is None:
            folder.variants[name] = dataclasses.replace(v, file=file)
            folder.links[file] = source.file(v.file)
        else:
            folder.variants[name] = dataclasses.replace(v, file=file, min_onnxruntime=made[0])
            folder.makers[file] = made[1]
            folder.notes.append(f"{name}: GroupQueryAttention's 17th input dropped so that onnxruntime "
                                f"{made[0]}+ runs it (same logits at batch 1)")
    if not folder.variants:
        return Plan("transformersjs", TITLE, [], notes=folder.notes)
    dtypes = [DTYPES[v.precision][0] for v in folder.variants.values()]
    usage = USAGE.replace("DTYPES", ", ".join(f"`{d}`" for d in dtypes)).replace("DTYPE", dtypes[0])
    return Plan("transformersjs", TITLE, [folder], usage=usage)


def _for_older_onnxruntime(source: Source, v: contract.Variant) -> tuple[str, Callable[[Path], None]] | None:
    """(oldest onnxruntime, maker) for a variant that only needs GroupQueryAttention's last input
    dropped to run on transformers.js's onnxruntime; None for one that runs as it is, or cannot."""
    if contract.version_tuple(v.min_onnxruntime) <= contract.version_tuple(ONNXRUNTIME):
        return None
    needs = compat.oldest_onnxruntime(without_query_seqlens(onnx.load(str(source.file(v.file)))))
    if contract.version_tuple(needs) > contract.version_tuple(ONNXRUNTIME):
        return None

    def make(path: Path) -> None:  # loaded again here, so that no graph waits in memory to be written
        onnx.save_model(without_query_seqlens(onnx.load(str(source.file(v.file)))), str(path))

    return needs, make


USAGE = """```javascript
import {{ pipeline, env }} from "@huggingface/transformers";

env.allowRemoteModels = false;
env.localModelPath = "{parent}";  // model ids are folders in this one
const generate = await pipeline("text-generation", "{name}", {{ dtype: "DTYPE", device: "cpu" }});
console.log((await generate("Once upon a time", {{ max_new_tokens: 32 }}))[0].generated_text);
```
dtypes here: DTYPES. In a browser, `device: "webgpu"` or `"wasm"`."""
