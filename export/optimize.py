"""``gptedge optimize``: fuse a bundle's fp32 graph for onnxruntime, prove it computes the same, swap it in.

What runs, and why this and not something else (the measured figures are in the README):

- **Fusions**: onnxscript's onnxruntime fusions (``onnxscript.rewriter.ort_fusions.optimize_for_ort``):
  LayerNorm + residual -> SkipLayerNormalization, bias + exact GELU -> BiasGelu, and each layer's
  cache Concat + attention -> MultiHeadAttention with past/present (see ``fuse_attention``).
  ``onnxruntime.transformers.optimizer`` (the successor of onnxruntime-tools) finds only the norms
  and GELUs on this graph, never the attention (its GPT-2 patterns are those of Hugging Face's
  Conv1D graph), fuses a tanh GELU into the exact BiasGelu, and from opt_level 1 on stores the tied
  matrix twice; its output decodes no faster than the exported graph, so it is not used.
- **Attention**: after the fusions, each layer's MultiHeadAttention becomes GroupQueryAttention
  over a preallocated cache that past and present share (``shared_cache``; the manifest marks the
  variant's ``cache_layout`` "shared"). With ``gptedge bench`` at the gpt2 shape, the exported
  graph's time per token grows with the cache (every step copies it), MultiHeadAttention's
  concatenated cache grows less, and the shared cache stays about flat, with less peak memory.
  GroupQueryAttention and the opset-23 Attention op written into the concatenating contract
  measured the same as MultiHeadAttention: the gain is the shared buffer, not the op.
- **No offline onnxruntime optimisation is saved**: onnxruntime optimises the graph again every time
  it loads it, on the machine that runs it. A graph saved at ORT_ENABLE_ALL holds layout choices for
  this CPU's instruction set; saved at BASIC or EXTENDED it holds a second, transposed copy of the
  token matrix (constant folding of the head's Transpose, about a third more file at gpt2) and only the
  fusions onnxruntime also does at load time.
- **Known traps, each checked on the result**: the GELU keeps its form (tanh stays tanh: a tanh GELU
  fused as exact is a real logit error that random-weight parity barely sees); the tied token
  matrix stays stored once (the head keeps the exported ``MatMul(h, Transpose(table))`` form, which
  is also what the quantizers' ``tied_embedding`` recognises); the graph's inputs and outputs stay
  the contract's; exporter metadata is dropped (the manifest is the source of truth).
- **Parity**: the original and the fused graph run side by side in onnxruntime on a left-padded
  batch from a zero-length past, a multi-token chunk on a past, and single-token decode steps; the
  largest logit difference at real (non-padding) positions must be <= ``TOLERANCE``.
- **Atomic**: the fused graph is written under a new name the manifest does not mention
  (``model.opt.onnx``), checked, and only then does a new manifest (``contract.write_manifest``,
  itself atomic) point the fp32 variant at it: the manifest is the commit point. Before it, a
  failure or a kill leaves the bundle as it was (at most an unlisted file, which the next command
  that writes the bundle deletes: ``writing``); after it, the old graph is deleted. The bundle's
  lock is held throughout, so a concurrent quantize waits instead of losing its variant.
- **Idempotent**: the manifest's ``provenance.optimized`` record names the sha256 of the graph
  it produced; a bundle whose fp32 graph still has that hash is already optimised.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from gptedge.errors import UserError
from gptedge.export import fuse_attention, shared_cache
from gptedge.export.compat import oldest_onnxruntime
from gptedge.export.writing import Transaction, graph_file_fields, optimized_name, save_graph, tool_versions
from gptedge.runtime import Decoder, contract, left_pad, records

TOLERANCE = 1e-4  # max |logit difference| between the original and the fused graph
VARIANT = "fp32"
SIZE_SLACK = 1.02  # the fused file may grow by graph bytes (new nodes), never by a weight copy
TOOLS = ("onnxscript", "onnxruntime", "onnx")


@dataclass
class OptimizeResult:
    bundle: Path
    changed: bool  # False: the bundle was already optimised, nothing written
    record: records.OptimizeRecord


# ---------------------------------------------------------------------------------------------
# Looking at graphs


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type; contrib ops are prefixed with their domain (com.microsoft.X)."""
    counts = collections.Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node
    )
    return dict(sorted(counts.items()))


def gelu_forms(model: onnx.ModelProto) -> set[str]:
    """The GELU forms the graph computes: "tanh" (GPT-2's approximation) and/or "exact" (erf)."""
    forms = set()
    for n in model.graph.node:
        if n.op_type == "Gelu" and n.domain in ("", "ai.onnx"):
            approximate = next((a.s.decode() for a in n.attribute if a.name == "approximate"), "none")
            forms.add("tanh" if approximate == "tanh" else "exact")
        elif n.domain == "com.microsoft" and n.op_type in ("Gelu", "BiasGelu"):
            forms.add("exact")
        elif n.domain == "com.microsoft" and n.op_type == "FastGelu":
            forms.add("tanh")
    return forms


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def _io(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [v.name for v in model.graph.input], [v.name for v in model.graph.output]


# ---------------------------------------------------------------------------------------------
# Fusing


def keep_head_as_exported(model: onnx.ModelProto) -> int:
    """Turn ``FusedMatMul(h, table, transB=1)`` over a Gather's table back into the exported
    ``MatMul(h, Transpose(table))``; returns how many.

    Both read the one stored table. onnxruntime fuses the transpose again when it loads the graph
    (same speed and memory, measured), and the quantizers' tied-matrix handling
    (``export.tied_embedding``) recognises only the exported form."""
    tables = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    initializers = {t.name for t in model.graph.initializer}
    changed = 0
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        plain_transposed_b = attrs.get("transB") == 1 and not attrs.get("transA") and attrs.get("alpha", 1.0) == 1.0
        if n.op_type == "FusedMatMul" and n.domain == "com.microsoft" and plain_transposed_b and len(n.input) == 2 \
                and n.input[1] in tables and n.input[1] in initializers:
            h, table = n.input
            transposed = f"{table}_transposed"
            nodes.append(
                onnx.helper.make_node("Transpose", [table], [transposed], name=f"{n.name}_transpose", perm=[1, 0])
            )
            nodes.append(onnx.helper.make_node("MatMul", [h, transposed], list(n.output), name=n.name))
            changed += 1
        else:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return changed


def fuse(model: onnx.ModelProto, shape: contract.ModelShape) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The fused graph and the fusions applied (name -> count). Raises UserError if the result
    breaks one of the checks in the module docstring."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    before_io, before_gelu, before_weights = _io(model), gelu_forms(model), weight_bytes(model)
    fuse_attention.prepare(model, shape)
    fused_ir, counts = optimize_for_ort(ir.from_proto(model), clear_metadata=True)
    fused = ir.to_proto(fused_ir)
    del fused_ir
    fusions = {name: n for name, n in counts.items() if n}
    if n := keep_head_as_exported(fused):
        fusions["head_kept_as_matmul"] = n
    if fuse_attention.fused_layers(fused, shape) == shape.n_layer:  # all or nothing: one cache layout
        fusions["group_query_attention_shared_cache"] = shared_cache.to_group_query_attention(fused, shape)
    del fused.metadata_props[:]
    fused.doc_string = ""

    problem = None
    if _io(fused) != before_io:
        problem = "changed the graph's inputs or outputs"
    elif gelu_forms(fused) != before_gelu:
        problem = f"changed the GELU from {'/'.join(sorted(before_gelu))} to {'/'.join(sorted(gelu_forms(fused)))}"
    elif weight_bytes(fused) > before_weights * SIZE_SLACK:
        problem = (f"grew the weights from {before_weights / 1e6:.1f} to {weight_bytes(fused) / 1e6:.1f} MB "
                   f"(a matrix stored twice)")
    if problem:
        raise UserError(f"the fusions {problem}; the bundle is left unchanged: this is a gptedge bug, please report it")
    return fused, fusions


def describe_attention(model: onnx.ModelProto, shape: contract.ModelShape) -> tuple[str, str]:
    """What the fused graph's attention is, in words, and its cache layout."""
    shared = fuse_attention.fused_layers(model, shape, "GroupQueryAttention")
    if shared == shape.n_layer:
        return f"com.microsoft.GroupQueryAttention over a preallocated shared cache in {shared} of {shared} layers", "shared"
    fused = fuse_attention.fused_layers(model, shape)
    return (f"com.microsoft.MultiHeadAttention in {fused} of {shape.n_layer} layers, the cache concatenated "
            f"per step (a shared cache needs every layer fused)", "concat")


# ---------------------------------------------------------------------------------------------
# Parity


def parity(original: Decoder, fused: Decoder, seed: int = 0) -> records.FusedParity:
    """Largest |logit difference| at real positions between two graphs, over: a left-padded batch
    of two prompts from a zero-length past, a 3-token chunk on that past, then 4 decode steps."""
    shape = original.shape
    rng = np.random.default_rng(seed)
    long = max(2, min(12, shape.context_length // 2))
    short = max(1, long // 3)
    chunk, steps = 3, 4
    if long + chunk + steps > shape.context_length:
        chunk, steps = 1, max(1, shape.context_length - long - 1)
    prompts = [rng.integers(0, shape.vocab_size, n) for n in (long, short)]
    ids, mask, positions = left_pad(prompts, pad_id=0)
    feeds = [(ids, mask, positions)]
    for n in [chunk] + [1] * steps:
        mask = np.concatenate([mask, np.ones((2, n), dtype=np.int64)], axis=1)
        positions = positions[:, -1:] + 1 + np.arange(n)
        feeds.append((rng.integers(0, shape.vocab_size, (2, n)), mask, positions))

    worst = 0.0
    cache_a, cache_b = original.empty_cache(2), fused.empty_cache(2)
    for ids, mask, positions in feeds:
        logits_a = cache_a.run(ids, mask, positions)
        logits_b = cache_b.run(ids, mask, positions)
        real = mask[:, -ids.shape[1]:].astype(bool)  # (B, T): padding rows carry no meaning
        worst = max(worst, float(np.abs(logits_a - logits_b)[real].max()))
    tokens = [int(f[0].shape[1]) for f in feeds]
    return records.FusedParity(worst, TOLERANCE, batch=2, left_padding=long - short, tokens_per_step=tokens)


# ---------------------------------------------------------------------------------------------
# The command


def is_optimized(manifest: contract.Manifest) -> bool:
    """Whether the fp32 variant is still the graph ``optimize`` wrote (its record names its hash)."""
    record = manifest.provenance.optimized if manifest.provenance else None
    return record is not None and VARIANT in manifest.variants and record.sha256 == manifest.variants[VARIANT].sha256


def optimize_bundle(bundle_dir: str | Path, quiet: bool = False) -> OptimizeResult:
    """Fuse, check and swap in the bundle's fp32 graph; a no-op if it is already optimised."""
    with Transaction(bundle_dir, "optimize", steps=4, quiet=quiet) as t:
        manifest = t.manifest
        path = contract.verify_variant(t.bundle, manifest, VARIANT)  # missing or tampered: refused here
        if is_optimized(manifest):
            return OptimizeResult(t.bundle, False, manifest.records().optimized)
        variant = manifest.variants[VARIANT]
        t.step("load")
        model = onnx.load(str(path))
        ops_before = op_counts(model)

        t.step("fuse")
        model, fusions = fuse(model, manifest.model)
        attention, cache_layout = describe_attention(model, manifest.model)

        t.step("write")
        written = save_graph(model, t.new_file(optimized_name(variant.file)), external_data=bool(variant.data_file) or None)
        ops_after, gelu, needs = op_counts(model), "/".join(sorted(gelu_forms(model))), oldest_onnxruntime(model)
        del model

        t.step("parity")
        figures = parity(Decoder(path, manifest), Decoder(written[0], manifest))
        if not figures.max_abs_logit_diff <= TOLERANCE:  # NaN fails too
            raise UserError(
                f"the optimised graph's logits differ from the original's by {figures.max_abs_logit_diff:.2e} "
                f"> {TOLERANCE:.0e}; the bundle is left unchanged: this is a gptedge bug, please report it"
            )
        new_variant = dataclasses.replace(
            variant, cache_layout=cache_layout, min_onnxruntime=needs,
            providers=["cpu"] if cache_layout == "shared" else variant.providers,  # see providers.suits
            **graph_file_fields(t.bundle, written),
        )
        record = records.OptimizeRecord(
            variant=VARIANT,
            file=new_variant.file,
            sha256=new_variant.sha256,
            from_file=variant.file,
            from_sha256=variant.sha256,
            size_bytes_before=variant.total_bytes,
            size_bytes_after=new_variant.total_bytes,
            fusions=fusions,
            attention=attention,
            gelu=gelu,
            ops_before=ops_before,
            ops_after=ops_after,
            parity=figures,
            tools=tool_versions(*TOOLS),
        )
        manifest.variants[VARIANT] = new_variant
        manifest.records().optimized = record
        t.commit()
        t.retire(variant.file, variant.data_file)  # the old graph, once no variant lists it
    return OptimizeResult(t.bundle, True, record)


def report(result: OptimizeResult) -> str:
    """What the CLI prints: op counts before and after, the fusions, the parity and sizes."""
    r = result.record
    if not result.changed:
        return f"{result.bundle}: the fp32 graph ({r.file}) is already optimised ({r.attention}); nothing to do"
    before, after = r.ops_before, r.ops_after
    names = sorted(set(before) | set(after), key=lambda op: (-max(before.get(op, 0), after.get(op, 0)), op))
    width = max(len(op) for op in names)
    lines = [f"{'op type':{width}}  before  after"]
    lines += [f"{op:{width}}  {before.get(op, 0):6d}  {after.get(op, 0):5d}" for op in names]
    lines.append(f"{'total':{width}}  {sum(before.values()):6d}  {sum(after.values()):5d}")
    fusions = ", ".join(f"{name} x{n}" for name, n in r.fusions.items())
    lines += [
        f"fusions: {fusions}",
        f"attention: {r.attention}",
        f"gelu: {r.gelu} (unchanged)",
        f"parity vs the original graph: max |logit diff| {r.parity.max_abs_logit_diff:.1e} "
        f"<= {r.parity.tolerance:.0e} (left-padded batch, zero-length past, chunk, decode steps)",
        f"size: {r.size_bytes_before / 1e6:.2f} MB -> {r.size_bytes_after / 1e6:.2f} MB",
        f"wrote {result.bundle / r.file} (fp32 variant; {r.from_file} removed)",
    ]
    return "\n".join(lines)
