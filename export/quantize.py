"""``gptedge quantize``: add a smaller or faster variant of the fp32 graph to a bundle.

    int8         dynamic int8 matmuls, for CPUs                    (quantize_int8)
    int4         4-bit weight blocks, MatMulNBits, for CPUs        (quantize_int4)
    fp16         half precision, for GPU providers                 (quantize_fp16)
    int8-static  calibrated QDQ graph, the format of NPU providers (quantize_static)

Each precision is one variant of the bundle, named after it, in its own file beside the fp32 graph
(``model.int8.onnx``, ...); the fp32 variant stays, as the reference every figure is measured
against. ``gptedge eval`` measures what each variant costs in quality and gains in size and speed.

Safety: everything is checked before any work (the bundle, the fp32 graph's hash, the calibration
text, a variant already present); the new graph is converted in memory, loaded and run once by
onnxruntime, written under a temporary name and renamed into place, and only then does a new
manifest (``contract.write_manifest``, atomic) list it: the manifest is the commit point. A failure
or a kill before it leaves the bundle as it was, at most with a file the manifest does not name,
which the next command that writes the bundle deletes (``writing.Transaction``, which also holds the bundle's
lock, so two quantize commands on one bundle run one after the other and both variants land).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx

from gptedge import atomic
from gptedge.errors import UserError
from gptedge.export.compat import oldest_onnxruntime
from gptedge.export.writing import Transaction, graph_file_fields, now, tool_versions, variant_file
from gptedge.runtime import contract, records

PRECISIONS = ("int8", "int4", "fp16", "int8-static")
# What each target gets: CPUs the two integer variants (int8 the safer, int4 the smaller and
# faster); GPUs fp16; phones int8 (onnxruntime's mobile packages run its integer ops on the CPU);
# NPUs the calibrated QDQ graph.
TARGETS: dict[str, tuple[str, ...]] = {
    "cpu": ("int8", "int4"),
    "gpu": ("fp16",),
    "mobile": ("int8",),
    "npu": ("int8-static",),
}
# The providers each precision is meant for (runtime.providers short names).
PROVIDERS: dict[str, list[str]] = {
    "int8": ["cpu"],
    "int4": ["cpu"],
    "fp16": ["cuda", "directml", "webgpu"],
    "int8-static": ["qnn", "nnapi", "cpu"],
}
# Manifest order. The runtime's "auto" takes the first variant that suits a CPU-like provider, so
# the order is the recommendation: int8 (the closest to fp32's perplexity, README), then
# int4 (smaller, as fast), then fp32; the QDQ graph is for NPUs and runs no faster than fp32 on a CPU.
ORDER = ("int8", "int4", "fp32", "int8-static", "fp16")
TOOLS = ("onnxruntime", "onnx")


@dataclass(frozen=True)
class Choices:
    """The settings a user may change, each for one precision (None: that precision's default).

    - ``head_bits`` (int4): bits of the output head and the token table it shares, 4 or 8
      (``quantize_int4.HEAD_BITS_CHOICES``);
    - ``int8_format`` (int8): "per-channel" (MatMulInteger, the faster first token) or "blocks"
      (8-bit MatMulNBits, the faster decode on CPUs with AVX-512); see ``quantize_int8``."""

    head_bits: int | None = None
    int8_format: str | None = None

    def check(self, precisions: Sequence[str]) -> None:
        """Refuse a value that is not a choice, or one set for a precision not being made."""
        from gptedge.export.quantize_int4 import HEAD_BITS_CHOICES
        from gptedge.export.quantize_int8 import FORMATS

        for flag, value, precision, choices in (("--head-bits", self.head_bits, "int4", HEAD_BITS_CHOICES),
                                                ("--int8-format", self.int8_format, "int8", FORMATS)):
            if value is None:
                continue
            if value not in choices or isinstance(value, bool):
                raise UserError(f"{flag} {value!r} is not a choice: use {' or '.join(str(c) for c in choices)}")
            if precision not in precisions:
                raise UserError(f"{flag} is for the {precision} variant, and this command makes {', '.join(precisions)}: "
                                f"leave it out, or quantize --to {precision} (or --target cpu)")


def precisions_for(to: str | None, target: str | None) -> list[str]:
    """The precisions to add for ``--to`` or ``--target`` (exactly one of them)."""
    if (to is None) == (target is None):
        raise UserError("give either --to PRECISION or --target TARGET: e.g. --to int8, or --target cpu")
    if to is not None:
        if to not in PRECISIONS:
            raise UserError(f"unknown precision {to!r}: use one of {', '.join(PRECISIONS)}")
        return [to]
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    return list(TARGETS[target])


@dataclass
class QuantizeResult:
    bundle: Path
    name: str  # the variant's name in the manifest (its precision)
    variant: contract.Variant
    settings: dict[str, Any]
    fp32_size_bytes: int


def quantize_bundle(
    bundle_dir: str | Path,
    precisions: Sequence[str],
    text_file: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
    choices: Choices = Choices(),
) -> list[QuantizeResult]:
    """Add one variant per precision, each committed on its own; all checks run before any work.
    ``choices`` changes a precision's defaults (the int4 head's bits, the int8 format).
    The bundle's lock is held throughout: a second quantize (or optimize, eval) waits, then adds
    its own variant to the manifest this one committed."""
    bundle_dir = Path(bundle_dir)
    for precision in precisions:
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    choices.check(precisions)
    if text_file is not None and "int8-static" not in precisions:
        raise UserError("--text is calibration text for int8-static; the other precisions need none: leave it out")
    with Transaction(bundle_dir, "quantize", steps=3 * len(precisions), quiet=quiet) as t:
        for precision in precisions:
            if precision in t.manifest.variants and not force:
                raise UserError(
                    f"{bundle_dir} already has the {precision} variant ({t.manifest.variants[precision].file}): "
                    f"pass --force to quantize it again"
                )
        fp32_path = contract.verify_variant(bundle_dir, t.manifest, "fp32")
        tokens = calibration_tokens(bundle_dir, t.manifest, text_file) if "int8-static" in precisions else None
        return [_add_variant(t, fp32_path, precision, tokens, choices) for precision in precisions]


def calibration_tokens(bundle_dir: Path, manifest: contract.Manifest, text_file: str | Path | None) -> np.ndarray:
    """Held-out text for int8-static: ``text_file``, or the held-out split of the default corpus
    (as ``gptedge export`` recorded the training split in the provenance)."""
    from gptedge.export.heldout import Split, heldout_text
    from gptedge.runtime import read_tokenizer

    if text_file is not None:
        path = Path(text_file)
        if path.is_file() and not path.read_bytes().strip():
            raise UserError(f"calibration text {text_file} is empty: give a file of held-out text, or leave out --text")
    tokenizer = read_tokenizer(bundle_dir, manifest)
    return heldout_text(Split.of_bundle(manifest.provenance), tokenizer, text_file).tokens


def _add_variant(
    t: Transaction, fp32_path: Path, precision: str, tokens: np.ndarray | None, choices: Choices
) -> QuantizeResult:
    """Convert, check and commit one precision (the manifest then lists it; a later one may fail)."""
    manifest = t.manifest
    t.step(f"{precision}: convert")
    model, settings = convert(precision, fp32_path, manifest, tokens, choices)
    meant_for = providers_for(precision, model, settings)
    needs = oldest_onnxruntime(model)

    t.step(f"{precision}: check")
    path = t.new_file(variant_file(precision))
    with atomic.temporary_path(path) as tmp:
        tmp.write_bytes(model.SerializeToString())
        cache_dtype, cache_layout = smoke_test(tmp, manifest)
        if precision in manifest.variants:  # --force: first commit a manifest without the old one
            del manifest.variants[precision]
            t.commit()
    # the new file is in place, under a name the manifest does not list yet

    t.step(f"{precision}: commit")
    variant = contract.Variant(
        precision=precision, cache_dtype=cache_dtype, cache_layout=cache_layout, providers=meant_for,
        min_onnxruntime=needs, **graph_file_fields(t.bundle, [path]),
    )
    manifest.variants[precision] = variant
    manifest.variants = {k: manifest.variants[k] for k in sorted(manifest.variants, key=_order)}
    manifest.records().quantization[precision] = records.QuantizationRecord(
        **settings, tools=tool_versions(*TOOLS), created_at=now(),
    )
    t.commit()
    fp32 = manifest.variants["fp32"]
    return QuantizeResult(t.bundle, precision, variant, settings, fp32.total_bytes)


def providers_for(precision: str, model: onnx.ModelProto, settings: dict[str, Any]) -> list[str]:
    """The providers a new variant is meant for. A QDQ graph made from the optimized graph keeps its
    onnxruntime-only ops (GroupQueryAttention, SkipLayerNormalization): NPU providers take none of
    them, so it is listed for the CPU only, and ``settings`` says why."""
    meant_for = list(PROVIDERS[precision])
    contrib = sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"})
    if precision == "int8-static" and contrib:
        meant_for = ["cpu"]
        settings["npu_note"] = (f"made from the optimized graph, whose {', '.join(contrib)} no NPU provider runs: "
                                f"for an NPU, quantize the exported graph (before gptedge optimize)")
    return meant_for


def _order(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def convert(
    precision: str, fp32_path: Path, manifest: contract.Manifest, tokens: np.ndarray | None,
    choices: Choices = Choices(),
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The converted graph (in memory) and the settings that made it."""
    model = onnx.load(str(fp32_path))  # with its external data, if any
    with _quiet_quantizers():
        if precision == "int8":
            from gptedge.export.quantize_int8 import FORMATS, quantize_int8

            return quantize_int8(model, manifest.model.n_embd, choices.int8_format or FORMATS[0])
        if precision == "int4":
            from gptedge.export.quantize_int4 import HEAD_BITS, quantize_int4

            return quantize_int4(model, manifest.model.n_embd, HEAD_BITS if choices.head_bits is None else choices.head_bits)
        if precision == "fp16":
            from gptedge.export.quantize_fp16 import convert_fp16

            return convert_fp16(model)
        from gptedge.export.quantize_static import quantize_int8_static
        from gptedge.runtime import Decoder

        return quantize_int8_static(model, Decoder(fp32_path, manifest), tokens)


def smoke_test(path: Path, manifest: contract.Manifest) -> tuple[str, str]:
    """Load the new graph in onnxruntime (CPU) and run a two-token prefill and one decode step:
    a graph that fails here is a bug in the conversion, and must never reach the bundle.
    Returns the graph's cache dtype and layout, for its manifest entry."""
    from gptedge.runtime import Decoder

    decoder = Decoder(path, manifest)
    ids = np.array([[manifest.eos_token_id, manifest.eos_token_id]], dtype=np.int64)
    cache = decoder.empty_cache(1)
    cache.run(ids, np.ones((1, 2), np.int64), np.arange(2)[None, :])
    logits = cache.run(ids[:, :1], np.ones((1, 3), np.int64), np.array([[2]]))
    if logits.shape != (1, 1, manifest.model.vocab_size) or not np.isfinite(logits).all():
        raise RuntimeError(f"the converted graph computes logits of shape {logits.shape} with non-finite values")
    return decoder.cache_dtype.name, decoder.cache_layout


@contextlib.contextmanager
def _quiet_quantizers() -> Iterator[None]:
    """onnxruntime's quantizers log every node they skip, and ``matmul_nbits_quantizer`` calls
    ``logging.basicConfig(level=INFO)`` when imported: silence them while they run and put the
    process's logging back as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401  (configures logging on import)

    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def report(results: list[QuantizeResult]) -> str:
    """One line per variant added, with what a user should know about it."""
    lines = []
    for r in results:
        v = r.variant
        line = (f"added {r.name} to {r.bundle}: {v.file}, {v.size_bytes / 1e6:.1f} MB "
                f"({v.size_bytes / r.fp32_size_bytes:.2f} x fp32), for {', '.join(v.providers)}")
        if "reduce_range_reason" in r.settings:
            line += f"; {r.settings['reduce_range_reason']}"
        if "npu_note" in r.settings:
            line += f"; {r.settings['npu_note']}"
        if "block_size" in r.settings:
            line += f"; {r.settings['bits']}-bit blocks of {r.settings['block_size']} (MatMulNBits)"
        if "output_head_bits" in r.settings:
            line += f"; output head and token table at {r.settings['output_head_bits']} bits"
        lines.append(line)
    lines.append(f"measure them with: gptedge eval {results[0].bundle}" if results else "nothing to do")
    return "\n".join(lines)
