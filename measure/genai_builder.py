"""``gptedge bench BUNDLE --genai-builder``: each variant beside what onnxruntime-genai's own model
builder makes of a model of the same size at the same precision, the model a genai user gets.

The builder cannot build GPT-2, so genai's model is a Llama of the bundle's size
(``llama_config``): the same layers, width, heads (keys and values not grouped), vocabulary and
context, the embedding tied to the output as GPT-2's is, and an MLP of three matrices with the
parameter count of GPT-2's two (``mlp_width``). Llama's rotary positions and RMSNorm stand where
GPT-2 has learned positions and LayerNorm: that difference is part of what either user gets.
Weights are random and seeded (speed does not depend on them); nothing is downloaded.

The builder and genai run in a virtual environment of their own (--genai-venv, default
./.venv-genai), at the versions pinned in genai_requirements.txt, so the comparison does not
depend on what gptedge's environment holds. When the folder is absent this command makes it
(torch's CPU wheel first, then the pinned file): the one step that downloads, announced on
stderr. In it, per precision: ``genai_worker.py llama`` writes the Hugging Face model, the builder
(``-p PRECISION -e cpu`` and no --extra_options: its defaults for a CPU user) builds it, and
``genai_worker.py describe`` records what the defaults made (quantized MatMuls' bits, block size
and accuracy level, the embedding's type). Both are cached under VENV/models/, keyed by the Llama's
config, so a rerun only times. The timing is ``genai_bench``'s interleaved rounds, with the genai
worker in the side venv's Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from gptedge import atomic
from gptedge.errors import UserError
from gptedge.measure.bench import token_counts
from gptedge.measure.genai_bench import WORKER, genai_worker, gptedge_worker, interleave, worker_flags, write
from gptedge.measure.pytorch import subprocess_json, subprocess_output
from gptedge.runtime import contract

PRECISIONS = ("int4", "int8", "fp32")  # what the builder makes for the CPU that a bundle also has
TORCH = "torch==2.13.0"  # installed first: the CPU wheel on this project's machines (README: set up)
REQUIREMENTS = Path(__file__).with_name("genai_requirements.txt")
VERSIONS_OF = ("onnxruntime-genai", "onnxruntime", "transformers", "torch")
BLOCK = 32  # the builder's default int4/int8 block size


def mlp_width(n_embd: int) -> int:
    """Llama's MLP has three n_embd x I matrices where GPT-2's has two n_embd x 4 n_embd: the same
    count is I = 8 n_embd / 3, rounded to a multiple of the quantization block so blocks tile it."""
    return max(BLOCK, round(8 * n_embd / 3 / BLOCK) * BLOCK)


def llama_config(manifest: contract.Manifest) -> dict[str, Any]:
    """LlamaConfig's fields for a model of the bundle's size."""
    m = manifest.model
    return {"hidden_size": m.n_embd, "num_hidden_layers": m.n_layer, "num_attention_heads": m.n_head,
            "num_key_value_heads": m.n_head, "intermediate_size": mlp_width(m.n_embd), "vocab_size": m.vocab_size,
            "max_position_embeddings": m.context_length, "tie_word_embeddings": True,
            "bos_token_id": manifest.eos_token_id, "eos_token_id": manifest.eos_token_id,
            "pad_token_id": manifest.pad_token_id}


def pick_variants(manifest: contract.Manifest, names: list[str] | None) -> dict[str, str]:
    """{variant: precision}: the named variants (each int4, int8 or fp32), or else one CPU variant
    per precision, the one named after it first."""
    if names:
        for n in names:
            if manifest.variants[n].precision not in PRECISIONS:
                raise UserError(f"variant {n!r} is {manifest.variants[n].precision}: genai's builder is compared at "
                                f"{', '.join(PRECISIONS)}; pick --variants of those precisions")
        return {n: manifest.variants[n].precision for n in names}
    cpu = {n: v.precision for n, v in manifest.for_generation().items() if "cpu" in v.providers}
    picked = {}
    for p in PRECISIONS:
        same = sorted((n for n, q in cpu.items() if q == p), key=lambda n: n != p)
        if same:
            picked[same[0]] = p
    if not picked:
        raise UserError("the bundle has no int4, int8 or fp32 variant for the CPU: run gptedge quantize on it first")
    return picked


def side_python(venv: Path) -> tuple[Path, dict[str, str]]:
    """The side venv's Python and its packages' versions; the venv is made first when absent."""
    python = venv / "bin" / "python"
    if not venv.exists():
        make_venv(venv)
    elif not python.exists():
        raise UserError(f"--genai-venv {venv} is not a virtual environment (no bin/python): pass another folder")
    probe = f"import json, importlib.metadata as m; print(json.dumps({{p: m.version(p) for p in {VERSIONS_OF!r}}}))"
    try:
        return python, subprocess_json([str(python), "-c", probe], "reading the side venv's versions")
    except UserError:
        raise UserError(f"the side venv {venv} lacks onnxruntime-genai or its builder's packages: remove the folder "
                        f"and run again, or install {REQUIREMENTS} into it") from None


def make_venv(venv: Path) -> None:
    """``python -m venv``, torch's CPU wheel, then the pinned requirements. A failed install keeps
    the folder, so the command in the error can be rerun to see why; a half-made venv then fails
    ``side_python``'s probe, which says to remove it."""
    print(f"making {venv} for onnxruntime-genai's builder: pip install {TORCH}, then -r {REQUIREMENTS} "
          "(downloads; minutes) ...", file=sys.stderr, flush=True)
    subprocess_output([sys.executable, "-m", "venv", str(venv)], f"making the virtual environment {venv}")
    for packages in ([TORCH], ["-r", str(REQUIREMENTS)]):
        subprocess_output([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
                          f"pip install {' '.join(packages)} into {venv}")


def side_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # nothing from a hub


def write_llama(python: Path, venv: Path, config: dict[str, Any], tokenizer: Path) -> tuple[Path, dict[str, Any]]:
    """The Hugging Face Llama of ``config`` (cached under VENV/models/): its folder, and what
    ``genai_worker.py llama`` said of it (parameters, versions)."""
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    hf = venv / "models" / f"llama-{config['num_hidden_layers']}x{config['hidden_size']}-{key}" / "hf"
    if not (hf / "llama.json").exists():
        print(f"writing a random-weight Llama of the bundle's size into {hf} ...", file=sys.stderr, flush=True)
        with atomic.staged_dir(hf, replace=True) as stage:
            made = subprocess_json([str(python), str(WORKER), "llama", json.dumps(config), str(tokenizer), str(stage)],
                                   "writing the Llama for genai's builder", side_env())
            atomic.write_text(stage / "llama.json", json.dumps(made) + "\n")
    return hf, json.loads((hf / "llama.json").read_text())


def build(python: Path, hf: Path, precision: str) -> tuple[Path, dict[str, Any]]:
    """genai's model of the Llama in ``hf`` at ``precision`` (cached beside it): its folder, and
    the builder's options with what they made."""
    folder = hf.parent / precision
    if not (folder / "build.json").exists():
        print(f"building genai's {precision} model with its builder ...", file=sys.stderr, flush=True)
        with atomic.staged_dir(folder, replace=True) as stage, tempfile.TemporaryDirectory() as cache:
            options = ["-p", precision, "-e", "cpu"]
            subprocess_output([str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(stage),
                               *options, "-c", cache], f"genai's builder at {precision}", side_env())
            made = subprocess_json([str(python), str(WORKER), "describe", str(stage)], "reading the builder's model")
            record = {"builder_options": options, "extra_options": [], **made}
            atomic.write_text(stage / "build.json", json.dumps(record, indent=2) + "\n")
    return folder, json.loads((folder / "build.json").read_text())


def run_builder_bench(args: argparse.Namespace, manifest: contract.Manifest) -> int:
    picked = pick_variants(manifest, args.variants)
    venv = Path(args.genai_venv)
    python, versions = side_python(venv)
    config = llama_config(manifest)
    hf, llama = write_llama(python, venv, config, Path(args.bundle) / "tokenizer.json")
    builds = {p: build(python, hf, p) for p in dict.fromkeys(picked.values())}
    prompt_tokens, new_tokens = token_counts(args, manifest.model.context_length)
    flags = worker_flags(args.threads, prompt_tokens, new_tokens)
    results, notes = [], []
    for variant, precision in picked.items():
        folder, made = builds[precision]
        figures = interleave(variant, args.repeat, gptedge_worker(args.bundle, variant, flags),
                             genai_worker(python, folder, flags))
        results.append({**figures, "precision": precision, "genai_model": made})
        matmuls = "; ".join(f"{m['count']} MatMulNBits of {m['bits']} bits, block {m['block_size']}, accuracy level "
                            f"{m['accuracy_level']}" for m in made["matmul_nbits"]) or "no quantized MatMul"
        notes.append(f"{variant}: gptedge {manifest.variants[variant].total_bytes / 1e6:.1f} MB; genai "
                     f"`builder {' '.join(made['builder_options'])}`: {matmuls}, embedding {made['embedding']}, "
                     f"{made['size_mb']:.1f} MB")
    write(args, "bench_genai_builder", prompt_tokens, new_tokens, results, notes=notes,
          llama={**config, "parameters": llama["parameters"]}, side_venv={"path": str(venv.resolve()), **versions},
          compared="genai: its builder's Llama of the same size and precision, random weights",
          title="gptedge's bundle and genai's builder model, same size")
    return 0
