"""A checkpoint's ``config.json``, typed: one reader that checks every field, one writer.

Kept free of torch, so the pipeline and the demo can say what a checkpoint is without loading it.
The file is JSON a user can open and edit, so the reader trusts nothing: a list where an object
belongs, a string where a number belongs, ``n_head: 0`` or a weights file outside the folder each
become one line that names the field and the fix, never a traceback deep in the model.

Format version 1 is what every release so far writes; fields the current writers always add but
an early one may lack (``train``, ``step``, ``metrics``) take their defaults. Unknown keys are
ignored (a newer gptedge may record more) except in ``model``, where they are refused, since they
would change what the weights mean. ``gptedge.schema`` reads and checks it, as it does a bundle's
manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from gptedge import atomic, schema
from gptedge.errors import UserError
from gptedge.train.config import GPTConfig, TrainConfig

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "gptedge-checkpoint"
FORMAT_VERSION = 1
IMPORT_KINDS = ("huggingface-gpt2", "nanogpt")


@dataclass
class Metrics:
    """What the trainer measured; every figure is absent until measured (an imported checkpoint has none)."""

    start_val_loss: float | None = None  # held-out loss before the first update
    val_loss: float | None = None  # at the last evaluation
    val_ppl: float | None = None
    unigram_ppl: float | None = None  # the context-free baseline of the same tokenizer
    train_loss: float | None = None  # of the last update before the checkpoint
    tokens_per_s: float | None = None
    tokens_seen: int | None = None
    train_seconds: float | None = None
    processes: int | None = None
    sample: str | None = None  # a short generation of the final model
    ignores_unknown_fields: ClassVar[bool] = True


@dataclass
class CorpusRecord:
    """The text a model was trained on; ``sha256`` lets --resume refuse a different corpus."""

    name: str
    documents: int
    characters: int
    train_tokens: int
    heldout_tokens: int
    sha256: str
    ignores_unknown_fields: ClassVar[bool] = True

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.not_negative(self, "documents", "characters", "train_tokens", "heldout_tokens")
        yield from schema.sha256(self, "sha256")
        if not self.sha256:
            yield "sha256", "is empty: use the 64 lowercase hex digits of the corpus's sha256"


@dataclass
class ImportRecord:
    """Where ``gptedge import`` took the weights from."""

    kind: str
    path: str
    ignores_unknown_fields: ClassVar[bool] = True

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.one_of(self, "kind", IMPORT_KINDS)


@dataclass(kw_only=True)  # fields in the file's order
class CheckpointConfig:
    """The whole of ``config.json``."""

    model: GPTConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    step: int = 0  # optimizer updates done
    metrics: Metrics = field(default_factory=Metrics)
    weights: str  # model-<step>.safetensors, in the checkpoint folder
    trainer_state: str | None = None  # trainer-<step>.pt, for --resume
    preset: str | None = None  # tiny, small, gpt2, or "imported"
    corpus: CorpusRecord | None = None  # None for imported weights
    imported_from: ImportRecord | None = None
    # How a chat model's turns are laid out (Jinja, as in Hugging Face's tokenizer_config.json):
    # taken over from an imported folder, carried into the bundle by export. None: a base model.
    chat_template: str | None = None
    ignores_unknown_fields: ClassVar[bool] = True

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.not_negative(self, "step")
        for name in ("weights", "trainer_state"):
            file = getattr(self, name)
            if file is not None and (file in ("", ".", "..") or any(c in file for c in "/\\:")):
                yield name, f"{file!r} is not a file name in the checkpoint folder: use a bare file name"

    def to_dict(self) -> dict[str, Any]:
        """config.json's object: absent records and metrics are left out, not written as null."""
        out = {"format": FORMAT, "format_version": FORMAT_VERSION, **schema.to_json(self)}
        out["metrics"] = {k: v for k, v in out["metrics"].items() if v is not None}
        return {k: v for k, v in out.items() if v is not None or k == "trainer_state"}

    @classmethod
    def from_dict(cls, d: Any) -> "CheckpointConfig":
        """Build from parsed JSON; raises UserError naming the first bad field (without the file)."""
        if not isinstance(d, dict):
            raise UserError(f"it holds {type(d).__name__} {schema.describe(d)}, not an object")
        if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            found = f"format {schema.describe(d.get('format'))} version {schema.describe(d.get('format_version'))}"
            raise UserError(f"{found} is not {FORMAT} version {FORMAT_VERSION}")
        try:
            return schema.from_json(cls, d)
        except schema.SchemaError as e:
            raise UserError(str(e)) from None


def find_config(path: str | Path) -> Path:
    """``path/config.json``, or a one-line error saying what ``path`` is instead."""
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if path.is_file():
        raise UserError(f"{path} is a file, not a checkpoint folder: point at the folder gptedge train or import wrote")
    if not path.is_dir():
        raise UserError(f"checkpoint folder {path} does not exist: train one with gptedge train or gptedge import")
    if not cfg_path.is_file() and (path / "checkpoint" / CONFIG_FILE).is_file():
        raise UserError(f"{path} is a training run folder: pass its checkpoint, {path / 'checkpoint'}")
    if not cfg_path.is_file():
        raise UserError(f"{path} is not a gptedge checkpoint (no {CONFIG_FILE}): point at a checkpoint folder")
    return cfg_path


def read_config(path: str | Path) -> CheckpointConfig:
    """Read and check ``config.json`` of the checkpoint folder ``path`` (no torch needed)."""
    cfg_path = find_config(path)
    try:
        data = json.loads(cfg_path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e}): the checkpoint is damaged; re-create it") from None
    except OSError as e:
        raise UserError(f"cannot read {cfg_path} ({e.strerror or e}): check the file and its permissions") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION and data.get("format") == FORMAT:
        raise UserError(f"{cfg_path} has format_version {version}, newer than this gptedge reads "
                        f"({FORMAT_VERSION}): upgrade gptedge")
    try:
        return CheckpointConfig.from_dict(data)
    except UserError as e:
        raise UserError(f"{cfg_path} is not a valid checkpoint config: {e}; re-create the checkpoint with "
                        f"gptedge train or gptedge import") from None


def write_config(path: str | Path, config: CheckpointConfig) -> None:
    """Replace ``path/config.json`` in one rename: the commit point of a checkpoint. The config is
    checked by the reader's rules first: a bug in the trainer fails here, before anything is written."""
    schema.check(config)
    atomic.write_text(Path(path) / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
