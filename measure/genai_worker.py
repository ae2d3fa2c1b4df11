"""What runs in onnxruntime-genai's Python, for ``gptedge bench --genai`` and ``--genai-builder``.

Run by path, ``python measure/genai_worker.py COMMAND ...``, it imports nothing of gptedge (only
``machine.py`` beside it), so the side venv of the builder comparison (made from
``genai_requirements.txt``, without gptedge) runs it as well as gptedge's own venv does. Each
command prints one JSON object on its last line:

    time FOLDER                    a genai package timed with genai's own C++ loop: greedy, batch 1,
                                   a random prompt; the median of WORKER_RUNS generations after a warm-up
    llama CONFIG TOKENIZER OUT     a random-weight Hugging Face Llama (CONFIG: LlamaConfig's fields as
                                   JSON) with TOKENIZER (a tokenizer.json) beside it, for genai's builder
    describe FOLDER                what the builder made: its quantized MatMuls' settings, the
                                   embedding table's type, the graph's size on disk (with its data)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

try:
    from gptedge.measure.machine import peak_rss_mb
except ImportError:  # the side venv, which has no gptedge: run by path, machine.py is beside this file
    from machine import peak_rss_mb  # type: ignore[no-redef]

WORKER_RUNS = 3  # timed generations per worker (median): one alone still pays for first allocations


def time_genai(folder: str, threads: int, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    """Time to first token, decode tokens/s and peak memory of one genai package, in this process."""
    import numpy as np
    import onnxruntime_genai as og

    settings = json.loads((Path(folder) / "genai_config.json").read_text())
    config = og.Config(folder)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    config.clear_providers()
    model = og.Model(config)
    _tokenizer = og.Tokenizer(model)  # held, as gptedge's process holds its own: serving text needs one
    prompt = np.random.default_rng(0).integers(0, settings["model"]["vocab_size"], prompt_tokens).tolist()

    def generate(n_new: int) -> tuple[float, float]:
        params = og.GeneratorParams(model)
        total = prompt_tokens + n_new
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(prompt)  # the prefill
        generator.generate_next_token()  # the first token: "time to first token" counts both
        first = time.perf_counter()
        while not generator.is_done():
            generator.generate_next_token()
        return first - start, (n_new - 1) / (time.perf_counter() - first)

    generate(8)  # warm-up, as gptedge's worker does
    runs = [generate(new_tokens) for _ in range(WORKER_RUNS)]
    return {"engine": "onnxruntime-genai", "version": og.__version__,
            "ttft_ms": statistics.median(1000 * t for t, _ in runs),
            "decode_tokens_per_s": statistics.median(s for _, s in runs), "peak_rss_mb": peak_rss_mb()}


def write_llama(config: dict[str, Any], tokenizer_file: str, out: str) -> dict[str, Any]:
    """A Llama with random weights (seeded), saved as the builder reads it; nothing downloaded."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    model.save_pretrained(out)
    transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer_file).save_pretrained(out)
    return {"parameters": sum(p.numel() for p in model.parameters()), "transformers": transformers.__version__,
            "torch": torch.__version__}


def describe(folder: str) -> dict[str, Any]:
    """The builder's choices as its graph shows them (the defaults it applied are not in its
    config): the quantized MatMuls' settings, and the embedding lookup's table, traced back
    through Reshape or Transpose to its initializer, and whether the output layer reads it too."""
    import collections

    import onnx

    decoder = json.loads((Path(folder) / "genai_config.json").read_text())["model"]["decoder"]
    graph = onnx.load(str(Path(folder) / decoder["filename"]), load_external_data=False).graph
    weights = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name for i in graph.initializer}
    made_by = {out: node for node in graph.node for out in node.output}

    def attrs(node: Any) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    matmuls: collections.Counter = collections.Counter()
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            a = attrs(node)
            matmuls[(a.get("bits", 4), a.get("block_size"), a.get("accuracy_level", 0))] += 1
    lookup = next(n for n in graph.node if decoder["inputs"]["input_ids"] in n.input)
    table = lookup.input[0]
    while table not in weights and table in made_by and made_by[table].op_type in ("Reshape", "Transpose"):
        table = made_by[table].input[0]
    shared = any(table in n.input for n in graph.node if n.op_type.startswith("MatMul"))
    kind = f"{attrs(lookup).get('bits', 4)}-bit blocks" if lookup.op_type == "GatherBlockQuantized" else weights.get(table, "?")
    return {"matmul_nbits": [{"bits": b, "block_size": s, "accuracy_level": a, "count": n}
                             for (b, s, a), n in matmuls.items()],
            "embedding": f"{lookup.op_type} of {kind}, "
                         + ("shared with the output layer" if shared else "a table of its own"),
            "size_mb": sum(f.stat().st_size for f in Path(folder).glob(decoder["filename"] + "*")) / 1e6}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python measure/genai_worker.py", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    t = commands.add_parser("time")
    t.add_argument("folder")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--prompt-tokens", type=int, default=64)
    t.add_argument("--new-tokens", type=int, default=128)
    llama = commands.add_parser("llama")
    llama.add_argument("config")
    llama.add_argument("tokenizer")
    llama.add_argument("out")
    commands.add_parser("describe").add_argument("folder")
    a = p.parse_args(argv)
    if a.command == "time":
        result = time_genai(a.folder, a.threads, a.prompt_tokens, a.new_tokens)
    elif a.command == "llama":
        result = write_llama(json.loads(a.config), a.tokenizer, a.out)
    else:
        result = describe(a.folder)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
