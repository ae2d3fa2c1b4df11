"""The model bundle: the one contract between export, the runtime and the demo.

A bundle is a folder::

    manifest.json    the dataclasses below (format_version, model shape, IO, files, variants, figures)
    tokenizer.json   the byte-level BPE tokenizer (Hugging Face tokenizers format), hashed
    model.onnx       the fp32 graph (model.opt.onnx once fused by gptedge optimize); other variants
                     (model.int8.onnx, ...) sit beside it. Always find a variant's file in the manifest.

Graph inputs and outputs are declared here as data, with the names onnxruntime-genai and optimum
use, so the exporter builds them from this list and the runtime binds them from it. Every payload
of the manifest is a dataclass, here or (the stages' records and figures) in ``records``;
``read_manifest`` is the one reader (every field's type and
range checked, one-line errors naming the field) and ``write_manifest`` the one writer. Every file
the runtime reads is listed with its size and sha256, checked when it is first opened.

Versions: a manifest is written with the oldest ``format_version`` that holds it, so that an older
gptedge on a device keeps reading what it can: 3 adds ``chat_template`` and is written only by a
bundle that declares one, 2 otherwise. A version-1 manifest (gptedge 0.1's) is migrated on read: its
payloads had the same fields, it only lacks the tokenizer's hash (filled in the next time a command
writes the bundle) and each variant's oldest onnxruntime (derived from its kind).
Standard library only: a device reads bundles with nothing but this file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from gptedge import atomic, schema
from gptedge.errors import UserError
from gptedge.runtime.records import EvalSettings, InspectionParity, ParityFigures, Provenance, VariantMetrics
from gptedge.runtime.settings import GenerationSettings

FORMAT_VERSION = 3  # the newest this gptedge reads and writes
READS_VERSIONS = (1, 2, 3)  # 1 is migrated on read
MAX_CHAT_TEMPLATE = 64 * 1024  # characters (Hugging Face's longest templates are a few thousand)
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


def past_names(layer: int | str) -> tuple[str, str]:
    """Layer ``layer``'s cache inputs; ``past_names("%d")`` is the pattern onnxruntime-genai's config takes."""
    return f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"


def present_names(layer: int | str) -> tuple[str, str]:
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

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.positive(self, "n_layer", "n_head", "n_embd", "vocab_size", "context_length")
        if self.n_head > 0 and self.n_embd % self.n_head:
            yield "n_embd", f"({self.n_embd}) must be divisible by n_head ({self.n_head})"


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


def attentions_name(layer: int) -> str:
    return f"attentions.{layer}"


def hidden_states_name(index: int) -> str:
    return f"hidden_states.{index}"


LENS_LOGITS = "lens_logits"


def inspection_outputs(shape: ModelShape) -> list[TensorSpec]:
    """What an inspection variant returns beyond ``graph_outputs``: each layer's attention
    probabilities, the residual stream after the embeddings and after each layer, and the logit
    lens (the final LayerNorm and the head on each layer's stream) at the last position."""
    specs = [TensorSpec(attentions_name(i), "float32", (BATCH, shape.n_head, SEQUENCE, TOTAL_SEQUENCE))
             for i in range(shape.n_layer)]
    specs += [TensorSpec(hidden_states_name(i), "float32", (BATCH, SEQUENCE, shape.n_embd))
              for i in range(shape.n_layer + 1)]
    return specs + [TensorSpec(LENS_LOGITS, "float32", (BATCH, shape.n_layer, shape.vocab_size))]


# ---------------------------------------------------------------------------------------------
# Files and variants


@dataclass
class FileRecord:
    """A file of the bundle the runtime reads, besides the graphs (the tokenizer)."""

    file: str
    size_bytes: int
    sha256: str

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.file_name(self, "file")
        yield from schema.not_negative(self, "size_bytes")
        yield from schema.sha256(self, "sha256")


def version_tuple(version: str) -> tuple[int, ...]:
    """"1.32.0" -> (1, 32, 0); a suffix such as "1.24.0.dev2" or "+cu12" is ignored."""
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


# The oldest onnxruntime that runs each kind of graph gptedge writes (measured; the README's table).
# A variant records its own when it is made (``export.compat``); for a version-1 manifest, which
# does not, the rule by layout and precision: GroupQueryAttention's 17th input needs 1.32, the
# int4 graph's token table (its `bits` attribute) 1.23, the rest (IR version 10) 1.18.
def oldest_onnxruntime(precision: str, cache_layout: str) -> str:
    if cache_layout == "shared":
        return "1.32"
    return "1.23" if precision == "int4" else "1.18"


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
    min_onnxruntime: str = "1.18"  # the oldest onnxruntime that runs it (export.compat)
    metrics: VariantMetrics | None = None
    data_file: str | None = None
    data_size_bytes: int = 0
    data_sha256: str = ""
    # Set for an inspection variant (``inspection_outputs`` too; ``gptedge inspect --make``):
    # its check at creation. Never picked by "auto".
    inspection: InspectionParity | None = None

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.file_name(self, "file", "data_file")
        yield from schema.one_of(self, "precision", PRECISIONS)
        yield from schema.one_of(self, "cache_layout", CACHE_LAYOUTS)
        yield from schema.one_of(self, "cache_dtype", CACHE_DTYPES)
        yield from schema.not_negative(self, "size_bytes", "data_size_bytes")
        yield from schema.sha256(self, "sha256", "data_sha256")
        if len(version_tuple(self.min_onnxruntime)) < 2:
            yield "min_onnxruntime", f"must be a version such as \"1.20\", not {self.min_onnxruntime!r}"

    @property
    def total_bytes(self) -> int:
        """The graph and its external data: what the variant weighs on disk."""
        return self.size_bytes + self.data_size_bytes

    def files(self) -> list[tuple[str, int, str]]:
        """(file, size, sha256) of the graph and its external data, if any."""
        out = [(self.file, self.size_bytes, self.sha256)]
        if self.data_file:
            out.append((self.data_file, self.data_size_bytes, self.data_sha256))
        return out


CACHE_DTYPES = ("float32", "float16")


@dataclass
class Manifest:
    model: ModelShape
    eos_token_id: int
    pad_token_id: int
    variants: dict[str, Variant]
    tokenizer: FileRecord | None = None  # None only in a migrated version-1 manifest
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    sampling: GenerationSettings = field(default_factory=GenerationSettings)  # default generation settings
    provenance: Provenance | None = None  # source checkpoint, tool versions, each stage's record
    parity: ParityFigures | None = None  # the export gate's figures
    eval: EvalSettings | None = None  # harness settings shared by all variants
    # How a chat model's messages become its prompt: a Jinja template, as in Hugging Face's
    # tokenizer_config.json (``runtime.chat``). None for a base model, which continues text.
    chat_template: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.inputs:
            self.inputs = [s.name for s in graph_inputs(self.model)]
        if not self.outputs:
            self.outputs = [s.name for s in graph_outputs(self.model)]

    def problems(self) -> Iterator[tuple[str, str]]:
        V = self.model.vocab_size
        for name in ("eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, name) < V:
                yield name, f"must be a token id in 0..{V - 1}, not {getattr(self, name)!r}"
        if not self.variants:
            yield "variants", "is empty: a bundle needs at least its fp32 variant"
        if self.inputs != [s.name for s in graph_inputs(self.model)]:
            yield "inputs", "do not match the gptedge graph contract for this model shape"
        if self.outputs != [s.name for s in graph_outputs(self.model)]:
            yield "outputs", "do not match the gptedge graph contract for this model shape"
        if self.format_version != FORMAT_VERSION:
            yield "format_version", f"must be {FORMAT_VERSION} once read"
        if self.chat_template is not None and not 0 < len(self.chat_template.strip()) <= MAX_CHAT_TEMPLATE:
            yield "chat_template", f"must be a Jinja template of 1 to {MAX_CHAT_TEMPLATE} characters, or absent"

    def for_generation(self) -> dict[str, "Variant"]:
        """The variants that generate text: all but the inspection variant (which only looks inside)."""
        return {name: v for name, v in self.variants.items() if v.inspection is None}

    def records(self) -> Provenance:
        """The provenance, where a stage adds its record: every exported bundle has one."""
        if self.provenance is None:
            raise UserError("the bundle's manifest has no provenance (it was not written by gptedge export): re-export it")
        return self.provenance

    def to_json(self) -> str:
        """The file's text, at the oldest format version that holds it (see the module's docstring)."""
        d = schema.to_json(self)
        if self.chat_template is None:
            del d["chat_template"]
            d["format_version"] = 2
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any, where: str = "manifest") -> "Manifest":
        """Check and convert a parsed ``manifest.json`` (version 1 is migrated)."""
        if not isinstance(d, dict):
            raise UserError(f"{where} must hold a JSON object, not {type(d).__name__}: restore it or re-export the bundle")
        version = d.get("format_version")
        if isinstance(version, bool) or version not in READS_VERSIONS:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
            known = ", ".join(map(str, READS_VERSIONS[:-1])) + f" and {READS_VERSIONS[-1]}"
            raise UserError(
                f"{where} has format_version {version!r}, this gptedge reads {known}: "
                + ("upgrade gptedge (pip install -U gptedge)" if newer else "re-export the model with this version of gptedge")
            )
        # Each version adds to the one before, so an older one reads as the newest (1 is migrated).
        d = _migrate_v1(d) if version == 1 else {**d, "format_version": FORMAT_VERSION}
        try:
            manifest = schema.from_json(cls, d)
        except schema.SchemaError as e:
            raise UserError(f"{where}: {e}: restore the file or re-export the bundle") from None
        if version >= 2 and manifest.tokenizer is None:
            raise UserError(f"{where}: tokenizer is missing (its file, size and sha256): restore the file or re-export the bundle")
        return manifest


def _migrate_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest as version 2: the same payloads, each variant's oldest onnxruntime
    derived from its cache layout, empty payload dicts as absent, no tokenizer record yet."""
    d = {**d, "format_version": FORMAT_VERSION}
    for key in ("provenance", "parity", "eval", "sampling"):
        if d.get(key) == {}:
            del d[key]
    if isinstance(d.get("variants"), dict):
        variants = {}
        for name, v in d["variants"].items():
            if isinstance(v, dict):
                v = {**v}
                if v.get("metrics") == {}:
                    del v["metrics"]
                v.setdefault("min_onnxruntime", oldest_onnxruntime(str(v.get("precision")), str(v.get("cache_layout"))))
            variants[name] = v
        d["variants"] = variants
    return d


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


def file_record(bundle_dir: str | Path, file: str) -> FileRecord:
    return FileRecord(file, *describe_file(bundle_dir, file))


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and validate ``manifest.json`` (not the hashes: see ``verify_variant``)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        if bundle_dir.exists():
            raise UserError(f"{bundle_dir} is a file, not a bundle folder: point at the folder gptedge export wrote")
        raise UserError(f"bundle {bundle_dir} does not exist: export one with gptedge export or gptedge build")
    if not path.is_file():
        raise UserError(f"{bundle_dir} is not a gptedge bundle (no {MANIFEST_FILE}): point at a bundle folder")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): restore it or re-export the bundle") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}): check the file and its permissions") from None
    manifest = Manifest.from_dict(d, where=str(path))
    if not (bundle_dir / TOKENIZER_FILE).is_file():
        raise UserError(f"bundle {bundle_dir} has no {TOKENIZER_FILE}: re-export the bundle")
    return manifest


def _check_file(bundle_dir: Path, what: str, file: str, size_bytes: int, sha256: str) -> None:
    path = bundle_dir / file
    if not path.is_file():
        raise UserError(f"{what}: file {file} is missing from {bundle_dir}: re-create it (gptedge export, optimize or quantize)")
    try:
        size, digest = describe_file(bundle_dir, file)
    except OSError as e:
        raise UserError(f"{what}: cannot read {path} ({e.strerror or e}): check the file and its permissions") from None
    if size != size_bytes or digest != sha256:
        raise UserError(f"{what}: {file} does not match its manifest hash (modified or truncated): re-create it")


def verify_variant(bundle_dir: str | Path, manifest: Manifest, name: str) -> Path:
    """Check one variant's file (and external data file) exist with the recorded size and sha256;
    return the graph's path."""
    if name not in manifest.variants:
        raise UserError(f"bundle has no variant {name!r}: available are {', '.join(manifest.variants)}")
    v = manifest.variants[name]
    for file, size_bytes, sha256 in v.files():
        _check_file(Path(bundle_dir), f"variant {name!r}", file, size_bytes, sha256)
    return Path(bundle_dir) / v.file


def verify_tokenizer(bundle_dir: str | Path, manifest: Manifest) -> Path:
    """Check ``tokenizer.json`` against its hash (a version-1 manifest has none yet); return its path.
    A tokenizer swapped for another model's would otherwise turn ids into the wrong text."""
    t = manifest.tokenizer
    if t is not None:
        _check_file(Path(bundle_dir), "tokenizer", t.file, t.size_bytes, t.sha256)
        return Path(bundle_dir) / t.file
    return Path(bundle_dir) / TOKENIZER_FILE


def read_bundle(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read the manifest and, with ``verify``, check every file (tokenizer, variants) against its hash."""
    manifest = read_manifest(bundle_dir)
    if verify:
        verify_tokenizer(bundle_dir, manifest)
        for name in manifest.variants:
            verify_variant(bundle_dir, manifest, name)
    return manifest


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> None:
    """The one writer: the manifest is checked by the reader's rules, the tokenizer hashed if it
    is not yet (a migrated version-1 bundle), and the file replaced atomically."""
    if manifest.tokenizer is None:
        manifest.tokenizer = file_record(bundle_dir, TOKENIZER_FILE)
    manifest.format_version = FORMAT_VERSION
    schema.check(manifest)  # a bug in a stage fails here, before anything is written
    atomic.write_text(Path(bundle_dir) / MANIFEST_FILE, manifest.to_json())
