"""A checkpoint is a folder that a kill at any moment leaves loadable.

    config.json                    model shape, training settings, step, metrics, file names
    tokenizer.json                 the tokenizer the model was trained with
    model-<step>.safetensors       weights (the tied embedding / output matrix stored once)
    trainer-<step>.pt              optimizer, scheduler and RNG state, for --resume

Weights and trainer state are written under new names first; rewriting ``config.json`` (atomic
rename) is the commit point; only then are the previous step's files removed. ``config.json`` is
plain JSON, typed and read in ``checkpoint_config.py`` without torch.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from gptedge import atomic
from gptedge.errors import UserError
from gptedge.train.checkpoint_config import (
    TOKENIZER_FILE, CheckpointConfig, CorpusRecord, ImportRecord, Metrics, read_config, write_config,
)
from gptedge.train.config import GPTConfig, TrainConfig
from gptedge.train.model import GPT

TIED_KEY = "lm_head.weight"  # same tensor as wte.weight: not stored
# The per-step files save_checkpoint writes; only these are removed once a newer step is committed.
STEP_FILE = re.compile(r"^(?:model-\d{7}\.safetensors|trainer-\d{7}\.pt)$")


@dataclass
class Checkpoint:
    path: Path
    model: GPT
    info: CheckpointConfig  # the whole config.json
    trainer_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def config(self) -> GPTConfig:
        return self.info.model

    @property
    def train(self) -> TrainConfig:
        return self.info.train

    @property
    def step(self) -> int:
        return self.info.step

    @property
    def metrics(self) -> Metrics:
        return self.info.metrics

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / self.info.weights


def save_checkpoint(
    path: str | Path,
    model: GPT,
    train: TrainConfig,
    step: int,
    metrics: Metrics | None = None,
    trainer_state: dict[str, Any] | None = None,
    preset: str | None = None,
    corpus: CorpusRecord | None = None,
    imported_from: ImportRecord | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write weights (and trainer state) for ``step``, then commit by replacing ``config.json``.

    The tokenizer must already be in the folder (written once, when training starts). Once the new
    step is committed, every other step's files go: the previous step's, and those of an earlier
    save killed between its commit and this cleanup."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / TOKENIZER_FILE).is_file():
        raise UserError(f"{path} has no {TOKENIZER_FILE}: write the tokenizer before the first checkpoint")
    # Serialized in memory, then written by atomic.write_bytes: safetensors and torch.save report a
    # full disk as their own error types (torch without the cause), a plain write as OSError.
    # A failed save (a full disk) removes this step's files again: a step is saved once, so they
    # are never the committed ones.
    weights = f"model-{step:07d}.safetensors"
    trainer_file = f"trainer-{step:07d}.pt" if trainer_state is not None else None
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != TIED_KEY}
    try:
        atomic.write_bytes(path / weights, safetensors.torch.save(state, metadata={"format": "pt"}))
        if trainer_file is not None:
            buffer = io.BytesIO()
            torch.save(trainer_state, buffer)
            atomic.write_bytes(path / trainer_file, buffer.getvalue())
    except BaseException:
        for name in (weights, trainer_file):
            if name is not None:
                (path / name).unlink(missing_ok=True)
        raise
    info = CheckpointConfig(
        model=model.config, train=train, weights=weights, step=step, trainer_state=trainer_file,
        metrics=metrics or Metrics(), preset=preset, corpus=corpus, imported_from=imported_from,
        chat_template=chat_template,
    )
    write_config(path, info)
    for old in path.iterdir():
        if STEP_FILE.match(old.name) and old.name not in (weights, trainer_file):
            old.unlink(missing_ok=True)
    return path


def load_exact(config: GPTConfig, state: dict[str, torch.Tensor], mismatch: str, fix: str) -> GPT:
    """A GPT of ``config`` in eval mode with ``state`` (our names, the tied head left out) loaded,
    refusing anything that does not fit exactly: one line saying ``mismatch``, what, and ``fix``."""
    model = GPT(config)
    expected = {k: v.shape for k, v in model.state_dict().items() if k != TIED_KEY}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"{mismatch} (missing {missing[:3]}, unexpected {unexpected[:3]}): {fix}")
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise UserError(f"{mismatch}: {k} has shape {tuple(state[k].shape)}, the config needs {tuple(shape)}")
    model.load_state_dict(state, strict=False)  # lm_head.weight is tied to wte.weight
    return model.eval()

def load_checkpoint(path: str | Path, with_trainer_state: bool = False) -> Checkpoint:
    """Load a checkpoint folder; every way it can be wrong is a one-line UserError."""
    path = Path(path)
    info = read_config(path)
    config = info.model
    weights = path / info.weights
    if not weights.is_file():
        raise UserError(f"checkpoint {path} is missing its weights file {info.weights}: re-create it")
    if not (path / TOKENIZER_FILE).is_file():
        raise UserError(f"checkpoint {path} is missing {TOKENIZER_FILE}: re-create it")
    try:
        state = safetensors.torch.load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {weights} ({e}): the checkpoint is damaged") from None
    model = load_exact(config, state, f"weights in {weights.name} do not fit config.json",
                       "the weights and config are from different models")
    trainer_state = None
    if with_trainer_state:
        if info.trainer_state is None or not (path / info.trainer_state).is_file():
            raise UserError(f"checkpoint {path} has no optimizer state to resume from: train without --resume")
        try:
            trainer_state = torch.load(path / info.trainer_state, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a damaged pickle
            raise UserError(f"cannot read {info.trainer_state} ({type(e).__name__}): the optimizer state is "
                            f"damaged; start over with --overwrite (the weights can still be exported)") from None
    return Checkpoint(path=path, model=model, info=info, trainer_state=trainer_state)
