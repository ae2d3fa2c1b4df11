"""The model bundle: the one contract between export, the runtime and the demo.

A bundle is a folder::

    manifest.json    this file's schema (format_version, model shape, IO, variants, figures)
    tokenizer.json   the byte-level BPE tokenizer (Hugging Face tokenizers format)
    model.onnx       the fp32 graph (model.opt.onnx once fused by gptedge optimize); other variants
                     (model.int8.onnx, ...) sit beside it. Always find a variant's file in the manifest.

Graph inputs and outputs are declared here as data, with the names onnxruntime-genai and optimum
use, so the exporter builds them from this list and the runtime binds them from it.
Standard library only: a device reads bundles with nothing but this file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptedge import atomic
from gptedge.errors import UserError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
PRECISIONS = ("fp32", "fp16", "int8", "int4", "int8-static")

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"

# Symbolic dimension names, as onnxruntime-genai names them.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "total_sequence_length"  # past_sequence_length + sequence_length
CACHE_CAPACITY = "max_sequence_length"  # slots of a preallocated cache (the "shared" layout)


def past_names(layer: int) -> tuple[str, str]:
    return f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"


def present_names(layer: int) -> tuple[str, str]:
    return f"present.{layer}.key", f"present.{layer}.value"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "int64", "float32", "float16"
    shape: tuple[str | int, ...]


@dataclass(frozen=True)
class ModelShape:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    context_length: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# How a variant's graph holds the KV cache. Both read the same inputs with the same meaning
# (left padding, attention_mask of width P + T, position_ids); they differ in the cache tensors:
# - "concat": past (B, nh, P, hs) in, present (B, nh, P + T, hs) out, a new tensor every step
#   (the exported graph: standard ONNX ops, runs on every provider);
# - "shared": one preallocated (B, nh, C, hs) buffer per key and value, C the context length,
#   bound by the caller as both past and present; the graph writes the step's T slots after the
#   P in use (GroupQueryAttention, written by gptedge optimize): no copy of the cache per step.
#   Its attention_mask may also be wider than P + T, with zeros after the slots in use (so a
#   caller can keep one (B, C) mask and mark one more slot per step).
CACHE_LAYOUTS = ("concat", "shared")


def graph_inputs(shape: ModelShape, cache_dtype: str = "float32", cache_layout: str = "concat") -> list[TensorSpec]:
    specs = [
        TensorSpec(INPUT_IDS, "int64", (BATCH, SEQUENCE)),
        TensorSpec(ATTENTION_MASK, "int64", (BATCH, TOTAL_SEQUENCE)),
        TensorSpec(POSITION_IDS, "int64", (BATCH, SEQUENCE)),
    ]
    slots = CACHE_CAPACITY if cache_layout == "shared" else PAST_SEQUENCE
    for i in range(shape.n_layer):
        for name in past_names(i):
            specs.append(TensorSpec(name, cache_dtype, (BATCH, shape.n_head, slots, shape.head_dim)))
    return specs


def graph_outputs(
    shape: ModelShape, cache_dtype: str = "float32", logits_dtype: str = "float32", cache_layout: str = "concat"
) -> list[TensorSpec]:
    specs = [TensorSpec(LOGITS, logits_dtype, (BATCH, SEQUENCE, shape.vocab_size))]
    slots = CACHE_CAPACITY if cache_layout == "shared" else TOTAL_SEQUENCE
    for i in range(shape.n_layer):
        for name in present_names(i):
            specs.append(TensorSpec(name, cache_dtype, (BATCH, shape.n_head, slots, shape.head_dim)))
    return specs


@dataclass
class Variant:
    """One ONNX file of the bundle. ``metrics`` holds the eval harness's figures for it.

    A graph whose weights exceed protobuf's 2 GB limit keeps them in ONNX external data, one file
    beside it (``data_file``), hashed like the graph."""

    file: str
    precision: str
    size_bytes: int
    sha256: str
    cache_dtype: str = "float32"
    cache_layout: str = "concat"  # one of CACHE_LAYOUTS
    providers: list[str] = field(default_factory=lambda: ["cpu"])  # provider kinds it is meant for
    metrics: dict[str, Any] = field(default_factory=dict)
    data_file: str | None = None
    data_size_bytes: int = 0
    data_sha256: str = ""


@dataclass
class Manifest:
    model: ModelShape
    eos_token_id: int
    pad_token_id: int
    variants: dict[str, Variant]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)  # default generation settings
    provenance: dict[str, Any] = field(default_factory=dict)  # source checkpoint, tool versions, time
    parity: dict[str, Any] = field(default_factory=dict)  # the export gate's figures
    eval: dict[str, Any] = field(default_factory=dict)  # harness settings shared by all variants
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.inputs:
            self.inputs = [s.name for s in graph_inputs(self.model)]
        if not self.outputs:
            self.outputs = [s.name for s in graph_outputs(self.model)]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> "Manifest":
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(
                f"{where} has format_version {version!r}, this gptedge reads {FORMAT_VERSION}: "
                f"re-export the model with this version of gptedge"
            )
        try:
            model = ModelShape(**d["model"])
            variants = {name: Variant(**v) for name, v in d["variants"].items()}
            rest = {k: d[k] for k in ("inputs", "outputs", "sampling", "provenance", "parity", "eval") if k in d}
            m = cls(model, int(d["eos_token_id"]), int(d["pad_token_id"]), variants, **rest)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where} is malformed ({type(e).__name__}: {e}): re-export the bundle") from None
        m.check_io()
        return m

    def check_io(self) -> None:
        expected_in = [s.name for s in graph_inputs(self.model)]
        expected_out = [s.name for s in graph_outputs(self.model)]
        if self.inputs != expected_in or self.outputs != expected_out:
            raise UserError("manifest IO names do not match the gptedge graph contract: re-export the bundle")
        for name, v in self.variants.items():
            if v.precision not in PRECISIONS:
                raise UserError(f"variant {name!r} has unknown precision {v.precision!r}: expected one of {PRECISIONS}")
            if v.cache_layout not in CACHE_LAYOUTS:
                raise UserError(
                    f"variant {name!r} has unknown cache layout {v.cache_layout!r}: expected one of "
                    f"{CACHE_LAYOUTS}; re-export the bundle with this version of gptedge"
                )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_file(bundle_dir: str | Path, file: str) -> tuple[int, str]:
    """(size in bytes, sha256) of a file in the bundle, for a Variant entry."""
    path = Path(bundle_dir) / file
    return path.stat().st_size, file_sha256(path)


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and validate ``manifest.json`` (not the hashes: see ``verify_variant``)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        raise UserError(f"bundle {bundle_dir} does not exist: export one with gptedge export or gptedge build")
    if not path.is_file():
        raise UserError(f"{bundle_dir} is not a gptedge bundle (no {MANIFEST_FILE}): point at a bundle folder")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): re-export the bundle") from None
    manifest = Manifest.from_dict(d, where=str(path))
    if not (bundle_dir / TOKENIZER_FILE).is_file():
        raise UserError(f"bundle {bundle_dir} has no {TOKENIZER_FILE}: re-export the bundle")
    return manifest


def verify_variant(bundle_dir: str | Path, manifest: Manifest, name: str) -> Path:
    """Check one variant's file (and external data file) exist with the recorded size and sha256;
    return the graph's path."""
    if name not in manifest.variants:
        raise UserError(f"bundle has no variant {name!r}: available are {', '.join(manifest.variants)}")
    v = manifest.variants[name]
    files = [(v.file, v.size_bytes, v.sha256)]
    if v.data_file:
        files.append((v.data_file, v.data_size_bytes, v.data_sha256))
    for file, size_bytes, sha256 in files:
        if not (Path(bundle_dir) / file).is_file():
            raise UserError(f"variant {name!r}: file {file} is missing from {bundle_dir}: re-create the variant")
        size, digest = describe_file(bundle_dir, file)
        if size != size_bytes or digest != sha256:
            raise UserError(
                f"variant {name!r}: {file} does not match its manifest hash (modified or truncated): "
                f"re-create the variant"
            )
    return Path(bundle_dir) / v.file


def read_bundle(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read the manifest and, with ``verify``, check every variant's file against its hash."""
    manifest = read_manifest(bundle_dir)
    if verify:
        for name in manifest.variants:
            verify_variant(bundle_dir, manifest, name)
    return manifest


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> None:
    manifest.check_io()
    atomic.write_text(Path(bundle_dir) / MANIFEST_FILE, manifest.to_json())
