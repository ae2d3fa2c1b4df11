"""A checkpoint's ``config.json``, typed: one reader that checks every field, one writer.

Kept free of torch, so the pipeline and the demo can say what a checkpoint is without loading it.
The file is JSON a user can open and edit, so the reader trusts nothing: a list where an object
belongs, a string where a number belongs, ``n_head: 0`` or a weights file outside the folder each
become one line that names the field and the fix, never a traceback deep in the model.

Format version 1 is what every release so far writes; fields the current writers always add but
an early one may lack (``train``, ``step``, ``metrics``) take their defaults. Unknown keys at the
top, in ``train`` and in ``metrics`` are ignored (a newer gptedge may record more); unknown keys in
``model`` are refused, since they would change what the weights mean.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptedge import atomic
from gptedge.errors import UserError
from gptedge.train.config import GPTConfig, TrainConfig, check_types, short

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

    def __post_init__(self) -> None:
        check_types(self, lambda name, value: f"metrics.{name} {short(value)}")


@dataclass
class CorpusRecord:
    """The text a model was trained on; ``sha256`` lets --resume refuse a different corpus."""

    name: str
    documents: int
    characters: int
    train_tokens: int
    heldout_tokens: int
    sha256: str

    def __post_init__(self) -> None:
        check_types(self, lambda name, value: f"corpus.{name} {short(value)}")
        if min(self.documents, self.characters, self.train_tokens, self.heldout_tokens) < 0:
            raise UserError("corpus counts are negative: use counts of 0 or more")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise UserError(f"corpus.sha256 {short(self.sha256)} is not a sha256: use 64 lower-case hex digits")


@dataclass
class ImportRecord:
    """Where ``gptedge import`` took the weights from."""

    kind: str
    path: str

    def __post_init__(self) -> None:
        check_types(self, lambda name, value: f"imported_from.{name} {short(value)}")
        if self.kind not in IMPORT_KINDS:
            raise UserError(f"imported_from.kind {self.kind!r} is unknown: use one of {', '.join(IMPORT_KINDS)}")


@dataclass
class CheckpointConfig:
    """The whole of ``config.json``."""

    model: GPTConfig
    train: TrainConfig
    weights: str  # model-<step>.safetensors, in the checkpoint folder
    step: int = 0  # optimizer updates done
    trainer_state: str | None = None  # trainer-<step>.pt, for --resume
    metrics: Metrics = field(default_factory=Metrics)
    preset: str | None = None  # tiny, small, gpt2, or "imported"
    corpus: CorpusRecord | None = None  # None for imported weights
    imported_from: ImportRecord | None = None

    def __post_init__(self) -> None:
        check_types(self, lambda name, value: f"{name} {short(value)}")
        if self.step < 0:
            raise UserError(f"step {self.step} is negative: use 0 or more")
        for name in ("weights", "trainer_state"):
            file = getattr(self, name)
            if file is not None and (file in ("", ".", "..") or "/" in file or "\\" in file or ":" in file):
                raise UserError(f"{name} {file!r} is not a file name in the checkpoint folder: use a bare file name")

    def to_dict(self) -> dict[str, Any]:
        """config.json's object: absent records and metrics are left out, not written as null."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "step": self.step,
            "metrics": {k: v for k, v in dataclasses.asdict(self.metrics).items() if v is not None},
            "weights": self.weights,
            "trainer_state": self.trainer_state,
        }
        for name in ("preset", "corpus", "imported_from"):
            value = getattr(self, name)
            if value is not None:
                out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out

    @classmethod
    def from_dict(cls, d: Any) -> "CheckpointConfig":
        """Build from parsed JSON; raises UserError naming the first bad field (without the file)."""
        if not isinstance(d, dict):
            raise UserError(f"it holds {type(d).__name__} {short(d)}, not an object")
        if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise UserError(f"format {short(d.get('format'))} version {short(d.get('format_version'))} is not "
                            f"{FORMAT} version {FORMAT_VERSION}")
        for key in ("model", "weights"):
            if key not in d:
                raise UserError(f"'{key}' is missing")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["model"] = GPTConfig.from_dict(_object(d["model"], "model"))
        values["train"] = TrainConfig.from_dict(_object(d.get("train", {}), "train"))
        metrics = _object(d.get("metrics", {}), "metrics")
        values["metrics"] = Metrics(**{k: v for k, v in metrics.items() if k in _names(Metrics)})
        for name, record in (("corpus", CorpusRecord), ("imported_from", ImportRecord)):
            if d.get(name) is not None:
                fields = _object(d[name], name)
                missing = sorted(_names(record) - set(fields))
                if missing:
                    raise UserError(f"'{name}' lacks {', '.join(missing)}")
                values[name] = record(**{k: v for k, v in fields.items() if k in _names(record)})
        return cls(**values)


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"'{name}' is {short(value)}, not an object")
    return value


def find_config(path: str | Path) -> Path:
    """``path/config.json``, or a one-line error saying what ``path`` is instead."""
    path = Path(path)
    cfg_path = path / CONFIG_FILE
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
    """Replace ``path/config.json`` in one rename: the commit point of a checkpoint."""
    atomic.write_text(Path(path) / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
