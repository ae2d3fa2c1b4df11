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

from gptedge.package import hf, older
from gptedge.package.folder import Folder, Plan, Source, json_text

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
        graph = source.file(v.file)
        if older.runs_on(v.min_onnxruntime, ONNXRUNTIME):
            folder.variants[name] = dataclasses.replace(v, file=file)
            folder.links[file] = graph
        elif needs := older.older_form(graph, ONNXRUNTIME):
            folder.variants[name] = dataclasses.replace(v, file=file, min_onnxruntime=needs)
            folder.makers[file] = lambda path, graph=graph: older.write_older_form(graph, path)
            folder.notes.append(older.note(name, needs))
        else:
            folder.notes.append(f"{name} left out: it needs onnxruntime >= {v.min_onnxruntime}, transformers.js "
                                f"runs {ONNXRUNTIME}")
            continue
        taken[file] = name
    if not folder.variants:
        return Plan("transformersjs", TITLE, [], notes=folder.notes)
    dtypes = [DTYPES[v.precision][0] for v in folder.variants.values()]
    usage = USAGE.replace("DTYPES", ", ".join(f"`{d}`" for d in dtypes)).replace("DTYPE", dtypes[0])
    return Plan("transformersjs", TITLE, [folder], usage=usage)


USAGE = """```javascript
import {{ pipeline, env }} from "@huggingface/transformers";

env.allowRemoteModels = false;
env.localModelPath = "{parent}";  // model ids are folders in this one
const generate = await pipeline("text-generation", "{name}", {{ dtype: "DTYPE", device: "cpu" }});
console.log((await generate("Once upon a time", {{ max_new_tokens: 32 }}))[0].generated_text);
```
dtypes here: DTYPES. In a browser, `device: "webgpu"` or `"wasm"`."""
