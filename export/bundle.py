"""``gptedge export``: a checkpoint folder in, a verified model bundle folder out.

The bundle (see ``runtime.contract``) is built in a hidden temporary folder beside OUT_DIR, checked
by the parity gate, and only then renamed to OUT_DIR. A failed gate, a full disk or Ctrl-C leaves
no bundle and no temporary folder (a kill -9 leaves one, which the next export to OUT_DIR deletes);
an existing OUT_DIR is replaced only with ``force``, and only if it is a bundle itself. The
bundle's lock is held throughout (``writing``), so an optimize or quantize of the old bundle
finishes before it is replaced.
"""

from __future__ import annotations

import datetime
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer
from tqdm import tqdm

import gptedge
from gptedge import atomic
from gptedge.errors import UserError
from gptedge.export import graph, parity
from gptedge.export.compat import oldest_onnxruntime
from gptedge.export.heldout import Split, corpus_name, heldout_text
from gptedge.export.writing import MODEL_FILE, graph_file_fields, save_graph, tool_versions, writing
from gptedge.runtime import GenerationSettings, chat, contract, read_tokenizer, records
from gptedge.train.checkpoint import Checkpoint, load_checkpoint
from gptedge.train.tokenizer import special_ids

TOOLS = ("torch", "onnx", "onnxscript", "onnxruntime", "tokenizers")



@dataclass
class ExportResult:
    bundle: Path
    manifest: contract.Manifest
    seconds: float


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite anything but an existing bundle, and a bundle only with ``force``."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is a file: choose another output folder")
    if not force:
        raise UserError(f"output folder {out_dir} already exists: pass --force to replace it, or choose another")
    if not (out_dir / contract.MANIFEST_FILE).is_file():
        raise UserError(
            f"{out_dir} exists and is not a gptedge bundle (no {contract.MANIFEST_FILE}): "
            f"--force only replaces bundles; remove it yourself or choose another folder"
        )


def load_tokenizer(path: Path, vocab_size: int) -> Tokenizer:
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a plain Exception for a damaged file
        raise UserError(f"cannot read {path} ({e}): the checkpoint is damaged") from None
    if tok.get_vocab_size() > vocab_size:
        raise UserError(
            f"{path} has {tok.get_vocab_size()} tokens but the model's vocabulary is {vocab_size}: "
            f"the tokenizer and weights are from different models"
        )
    return tok


def provenance(ckpt: Checkpoint) -> records.Provenance:
    weights = ckpt.weights_path
    return records.Provenance(
        checkpoint=ckpt.path.resolve().name,  # the folder name only: no local paths in a bundle
        checkpoint_step=ckpt.step,
        parameters=ckpt.model.num_params(),  # the tied matrix once: fp32 file ~ 4 bytes each
        weights_file=weights.name,
        weights_sha256=contract.file_sha256(weights),
        exporter="torch.onnx.export(dynamo=True)",
        opset=graph.OPSET,
        tools={"gptedge": gptedge.__version__, **tool_versions(*TOOLS)},
        exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        corpus=corpus_name(ckpt.info),
        holdout_fraction=ckpt.train.holdout_fraction,
        split_seed=ckpt.train.seed,
    )


def fp32_variant(bundle_dir: Path, files: list[Path], needs: str) -> contract.Variant:
    """The exported graph's entry (``files``: the graph, and its external data for weights over 2 GB)."""
    return contract.Variant(precision="fp32", min_onnxruntime=needs, **graph_file_fields(bundle_dir, files))


def export_bundle(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    force: bool = False,
    text_file: str | Path | None = None,
    external_data: bool | None = None,
    quiet: bool = False,
    chat_template: str | None = None,
) -> ExportResult:
    """Export, gate and write a bundle. ``external_data`` None: only for weights over 2 GB.
    ``chat_template`` (Jinja) makes it a chat bundle, in place of the checkpoint's own, if any."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    ckpt = load_checkpoint(checkpoint_dir)
    tokenizer = load_tokenizer(ckpt.tokenizer_path, ckpt.config.vocab_size)
    eos_id, pad_id = special_ids(tokenizer)
    text = heldout_text(Split.of_checkpoint(ckpt.info), tokenizer, text_file)  # a bad --text fails before any work
    chat_template = chat_template if chat_template is not None else ckpt.info.chat_template
    if chat_template is not None:
        chat.check_template(chat_template)  # a template that does not compile fails before any work too
    with writing(out_dir, "export"), tqdm(total=3, desc="export", disable=quiet, file=sys.stderr,
                                                 bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]{postfix}") as steps:
        check_output_dir(out_dir, force)  # again, under the lock: another export may have written it meanwhile
        try:
            with atomic.staged_dir(out_dir, replace=force) as stage:
                steps.set_postfix_str("trace")
                model_proto = graph.trace(ckpt.model)
                steps.update()

                steps.set_postfix_str("save")
                files = save_graph(model_proto, stage / MODEL_FILE, external_data)
                needs = oldest_onnxruntime(model_proto)
                del model_proto  # the weights' in-memory copy: free it before the gate loads them again
                shutil.copyfile(ckpt.tokenizer_path, stage / contract.TOKENIZER_FILE)
                manifest = contract.Manifest(
                    model=graph.model_shape(ckpt.model),
                    eos_token_id=eos_id,
                    pad_token_id=pad_id,
                    variants={"fp32": fp32_variant(stage, files, needs)},
                    tokenizer=contract.file_record(stage, contract.TOKENIZER_FILE),
                    sampling=GenerationSettings(),  # the runtime's defaults
                    provenance=provenance(ckpt),
                    chat_template=chat_template,
                )
                contract.write_manifest(stage, manifest)  # the gate loads the bundle as users will
                steps.update()

                steps.set_postfix_str("verify")
                manifest.parity = parity.run_gate(stage, text.description, text.tokens, ckpt.model)
                contract.write_manifest(stage, manifest)
                steps.set_postfix_str("done")
                steps.update()
        except FileExistsError:
            raise UserError(f"{out_dir} appeared while exporting: choose another output folder or pass --force") from None
    return ExportResult(out_dir, manifest, time.perf_counter() - start)


def exported_from(manifest: contract.Manifest, weights: Path) -> bool:
    """Whether the bundle's graph was exported from these weights (its provenance names their hash)."""
    return manifest.provenance is not None and manifest.provenance.weights_sha256 == contract.file_sha256(weights)


def check_exported_from(bundle_dir: str | Path, manifest: contract.Manifest, checkpoint_dir: str | Path,
                        weights: Path) -> None:
    """Refuse a checkpoint the bundle did not come from: its figures would compare two models."""
    if manifest.provenance is not None and not exported_from(manifest, weights):
        raise UserError(f"{bundle_dir} was not exported from {checkpoint_dir} (its weights differ from the "
                        f"bundle's source): pass the checkpoint it came from")


def verify_bundle(
    bundle_dir: str | Path, checkpoint_dir: str | Path | None = None, text_file: str | Path | None = None
) -> records.ParityFigures:
    """Hashes and format (``contract.read_bundle``), then the parity gate: all four checks with a
    checkpoint, the graph's own checks (cache, batch) without one."""
    manifest = contract.read_bundle(bundle_dir)
    tokenizer = read_tokenizer(bundle_dir, manifest)
    if checkpoint_dir is None:
        text = heldout_text(Split.of_bundle(manifest.provenance), tokenizer, text_file)
        return parity.run_gate(bundle_dir, text.description, text.tokens)
    ckpt = load_checkpoint(checkpoint_dir)
    check_exported_from(bundle_dir, manifest, checkpoint_dir, ckpt.weights_path)
    text = heldout_text(Split.of_checkpoint(ckpt.info), tokenizer, text_file)
    return parity.run_gate(bundle_dir, text.description, text.tokens, ckpt.model)
