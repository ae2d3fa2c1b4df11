"""The static site ``gptedge web`` writes: everything a browser needs to run one variant alone.

    index.html, src/*.js     the page (web/js, as written)
    ort/                     onnxruntime-web's module and WebAssembly files (its npm package)
    model.onnx               the variant's graph (without GroupQueryAttention's 17th input when
                             onnxruntime-web would refuse it: ``package.older``)
    tokenizer.json, web.json the tokenizer, and the manifest fields the page reads
    manifest.json            the folder is also a gptedge bundle (the package writer's rule)

Nothing in it names another host: the page fetches only relative URLs, and onnxruntime-web is told
to load its WebAssembly from ``ort/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gptedge.errors import UserError
from gptedge.package import older
from gptedge.package.folder import Folder, Plan, Source, json_text
from gptedge.runtime import contract

JS_DIR = Path(__file__).resolve().parent / "js"
ORT_DIST = JS_DIR / "node_modules" / "onnxruntime-web" / "dist"
# What the page imports from onnxruntime-web: the WebAssembly build always; the WebGPU build (and
# its WebAssembly) only for a variant that suits WebGPU, tried when the browser offers an adapter.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEBGPU_FILES = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
ONNXRUNTIME = "1.30"  # the pinned onnxruntime-web (web/js/package.json)
MODEL_FILE = "model.onnx"
CONFIG_FILE = "web.json"
# Precisions whose operators onnxruntime-web's WebGPU provider has kernels for (int8-dynamic's
# MatMulInteger and the QDQ graph run on WASM only).
WEBGPU_PRECISIONS = ("fp32", "fp16", "int4")
# --variant auto: onnxruntime-web's WebAssembly kernels for int8 (MatMulInteger) are faster than its
# 4-bit MatMulNBits on the machines measured (README), and the file is small. An int8 variant made as
# 8-bit MatMulNBits blocks (``quantize --int8-format blocks``) runs the slow kernel too, so it comes
# after int4, the smaller file of the two.
PREFERENCE = ("int8", "int4", "int8 blocks", "fp32")


def _kind(manifest: contract.Manifest, name: str) -> str:
    """The variant's precision, or "int8 blocks" for an int8 variant stored as MatMulNBits blocks
    (its quantization record has a block size; a per-channel one has none)."""
    v = manifest.variants[name]
    records = manifest.provenance.quantization if manifest.provenance else {}
    record = records.get(name)
    return "int8 blocks" if v.precision == "int8" and record and record.block_size else v.precision


def choose(source: Source, variant: str) -> str:
    runnable = {n: v for n, v in source.manifest.for_generation().items() if "cpu" in v.providers}
    if variant != "auto":
        if variant not in source.manifest.variants:
            raise UserError(f"bundle has no variant {variant!r}: available are {', '.join(runnable)}")
        if variant not in runnable:
            raise UserError(f"variant {variant!r} does not run on onnxruntime-web's WASM provider: pick one of "
                            f"{', '.join(runnable)}")
        return variant
    for kind in PREFERENCE:
        for name in runnable:
            if _kind(source.manifest, name) == kind:
                return name
    raise UserError(f"no variant of {source.path} runs in a browser: export one for the CPU")


def plan(source: Source, variant: str) -> Plan:
    if not ORT_DIST.is_dir():
        raise UserError(f"onnxruntime-web is not installed in {JS_DIR}: run npm ci --prefix {JS_DIR}")
    name = choose(source, variant)
    v = source.manifest.variants[name]
    folder = Folder("", links={source.tokenizer.name: source.tokenizer})
    graph = source.file(v.file)
    if v.data_file:
        raise UserError(f"variant {name!r} keeps its weights in external data (over 2 GB), too big for a browser page")
    if older.runs_on(v.min_onnxruntime, ONNXRUNTIME):
        folder.variants[name] = dataclasses.replace(v, file=MODEL_FILE)
        folder.links[MODEL_FILE] = graph
    elif needs := older.older_form(graph, ONNXRUNTIME):
        folder.variants[name] = dataclasses.replace(v, file=MODEL_FILE, min_onnxruntime=needs)
        folder.makers[MODEL_FILE] = lambda path: older.write_older_form(graph, path)
        folder.notes.append(older.note(name, needs))
    else:
        raise UserError(f"variant {name!r} needs onnxruntime >= {v.min_onnxruntime}; the page's onnxruntime-web is "
                        f"{ONNXRUNTIME}: pick another --variant")
    for path in [JS_DIR / "index.html", *sorted((JS_DIR / "src").glob("*.js"))]:  # copies: a user may edit them
        folder.texts[str(path.relative_to(JS_DIR))] = path.read_text(encoding="utf-8")
    webgpu = v.precision in WEBGPU_PRECISIONS
    for file in ORT_FILES + (ORT_WEBGPU_FILES if webgpu else ()):
        folder.links[f"ort/{file}"] = ORT_DIST / file
    folder.texts[CONFIG_FILE] = json_text(config(source, name, v, webgpu))
    return Plan("web", "the model in the browser (onnxruntime-web)", [folder])


def config(source: Source, name: str, v: contract.Variant, webgpu: bool) -> dict:
    m, s = source.manifest, source.manifest.sampling
    shape = m.model
    return {
        "model": {"file": MODEL_FILE, "n_layer": shape.n_layer, "n_head": shape.n_head, "head_dim": shape.head_dim,
                  "vocab_size": shape.vocab_size, "context_length": shape.context_length,
                  "eos_token_id": m.eos_token_id, "pad_token_id": m.pad_token_id},
        "variant": name,
        "precision": v.precision,
        "webgpu": webgpu,
        "sampling": {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_k": s.top_k,
                     "top_p": s.top_p, "repetition_penalty": s.repetition_penalty},
    }
