"""The inspection variant: the same model with what happens inside it as extra outputs.

``gptedge inspect --make BUNDLE`` traces the checkpoint's ``GPT.look_inside`` (attention computed
step by step, so its probabilities exist as tensors) into ``model.inspect.onnx``: the graph
outputs of every variant, then each layer's attention probabilities (B, nh, T, P + T), the
residual stream after the embeddings and after each layer (B, T, C), and the logit lens at the
last position (B, L, V). The figures the page and ``gptedge inspect`` draw are then the exported
model's own, computed by onnxruntime, not a re-implementation.

Before it is committed the variant is checked on a left-padded batch of held-out text: attention
and hidden states against the PyTorch model's (``TOLERANCE``), and its logits against the fp32
variant's. It is an fp32 graph with the exported (concat) cache, recorded like any variant but
marked by its ``inspection`` record, so ``load(variant="auto")`` never picks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptedge import atomic
from gptedge.errors import UserError
from gptedge.export import graph
from gptedge.export.bundle import check_exported_from
from gptedge.export.compat import oldest_onnxruntime
from gptedge.export.heldout import Split, heldout_text
from gptedge.export.writing import INSPECTION_FILE, Transaction, graph_file_fields, save_graph
from gptedge.runtime import Decoder, contract, left_pad, read_tokenizer, records, run_inspection
from gptedge.train.checkpoint import load_checkpoint

VARIANT = "inspect"
TOLERANCE = 1e-5  # vs PyTorch's internals and the fp32 variant's logits (relative to each one's size)
SAMPLE_LENGTHS = (24, 15)  # two held-out prompts, the second left-padded


@dataclass
class InspectResult:
    bundle: Path
    variant: contract.Variant


def make_inspection_variant(bundle_dir: str | Path, checkpoint_dir: str | Path, quiet: bool = False) -> InspectResult:
    """Add (or replace) the bundle's inspection variant, traced from the checkpoint it came from."""
    ckpt = load_checkpoint(checkpoint_dir)
    with Transaction(bundle_dir, "inspect --make", steps=3, quiet=quiet) as t:
        manifest = t.manifest
        check_exported_from(t.bundle, manifest, checkpoint_dir, ckpt.weights_path)
        t.step("trace")
        proto = graph.trace(ckpt.model, inside=True)
        needs = oldest_onnxruntime(proto)
        path = t.new_file(INSPECTION_FILE)
        with atomic.temporary_path(path) as tmp:
            save_graph(proto, tmp, external_data=False)
        del proto
        t.step("check")
        tokens = heldout_text(Split.of_checkpoint(ckpt.info), read_tokenizer(t.bundle, manifest)).tokens
        figures = check(path, manifest, t.bundle, ckpt.model, tokens)
        t.step("commit")
        manifest.variants.pop(VARIANT, None)
        variant = contract.Variant(precision="fp32", min_onnxruntime=needs, inspection=figures,
                                   **graph_file_fields(t.bundle, [path]))
        manifest.variants[VARIANT] = variant
        t.commit()
    return InspectResult(Path(bundle_dir), variant)


def check(path: Path, manifest: contract.Manifest, bundle: Path, model: torch.nn.Module,
          tokens: np.ndarray) -> records.InspectionParity:
    """Run the new graph and PyTorch on a left-padded batch; fail if any figure differs."""
    rows = [tokens[: SAMPLE_LENGTHS[0]].tolist(), tokens[SAMPLE_LENGTHS[0] : sum(SAMPLE_LENGTHS)].tolist()]
    ids, mask, positions = left_pad(rows, manifest.pad_token_id)
    ours = run_inspection(Decoder(path, manifest), ids, mask, positions)
    with torch.no_grad():
        logits, _, inside = model.eval().look_inside(torch.from_numpy(ids), torch.from_numpy(positions),
                                                     torch.from_numpy(mask))
    diff = lambda a, b: float(np.abs(a - b.numpy()).max())  # noqa: E731
    fp32 = Decoder(bundle / manifest.variants["fp32"].file, manifest)
    reference = fp32.empty_cache(len(rows)).run(ids, mask, positions)
    real = mask.astype(bool)  # padding positions' logits are never read, and layouts may differ there
    figures = records.InspectionParity(
        max_attention_diff=max(diff(ours[contract.attentions_name(i)], a) for i, a in enumerate(inside.attentions)),
        max_hidden_diff=max(diff(ours[contract.hidden_states_name(i)], h) for i, h in enumerate(inside.hidden_states)),
        max_lens_diff=diff(ours[contract.LENS_LOGITS], inside.lens_logits),
        max_logit_diff_vs_fp32=float(np.abs(ours[contract.LOGITS][real] - reference[real]).max()),
        tolerance=TOLERANCE, batch=len(rows), left_padding=SAMPLE_LENGTHS[0] - SAMPLE_LENGTHS[1],
    )
    # Probabilities are at most 1; the other figures are held to TOLERANCE of their own size.
    scale = lambda tensors: max(1.0, max(float(t.abs().max()) for t in tensors))  # noqa: E731
    limits = {"max_attention_diff": TOLERANCE, "max_hidden_diff": TOLERANCE * scale(inside.hidden_states),
              "max_lens_diff": TOLERANCE * scale([inside.lens_logits]),
              "max_logit_diff_vs_fp32": TOLERANCE * scale([logits])}
    for name, limit in limits.items():
        if getattr(figures, name) > limit:
            raise UserError(f"the inspection graph's {name} is {getattr(figures, name):.2e}, over {limit:.2e}: "
                            "this is a bug, please report it")
    return figures
