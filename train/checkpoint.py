"""A checkpoint is a folder that a kill at any moment leaves loadable.

    config.json                    model shape, training settings, step, metrics, file names
    tokenizer.json                 the tokenizer the model was trained with
    model-<step>.safetensors       weights (the tied embedding / output matrix stored once)
    trainer-<step>.pt              optimizer, scheduler and RNG state, for --resume

Weights and trainer state are written under new names first; rewriting ``config.json`` (atomic
rename) is the commit point; only then are the previous step's files removed. ``config.json`` is
plain JSON, readable without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptedge import atomic
from gptedge.errors import UserError
from gptedge.train.config import GPTConfig, TrainConfig
from gptedge.train.model import GPT

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "gptedge-checkpoint"
FORMAT_VERSION = 1
TIED_KEY = "lm_head.weight"  # same tensor as wte.weight: not stored


@dataclass
class Checkpoint:
    path: Path
    model: GPT
    config: GPTConfig
    train: TrainConfig
    step: int
    metrics: dict[str, Any]
    info: dict[str, Any]  # the whole config.json
    trainer_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE


def read_config(path: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a checkpoint folder with clear errors (no torch needed)."""
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not path.is_dir():
        raise UserError(f"checkpoint folder {path} does not exist: train one with gptedge train or gptedge import")
    if not cfg_path.is_file() and (path / "checkpoint" / CONFIG_FILE).is_file():
        raise UserError(f"{path} is a training run folder: pass its checkpoint, {path / 'checkpoint'}")
    if not cfg_path.is_file():
        raise UserError(f"{path} is not a gptedge checkpoint (no {CONFIG_FILE}): point at a checkpoint folder")
    try:
        info = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e}): the checkpoint is damaged") from None
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{cfg_path} is not a gptedge checkpoint config (format {info.get('format')!r}, "
                        f"version {info.get('format_version')!r}): re-create the checkpoint")
    for key in ("model", "weights"):
        if key not in info:
            raise UserError(f"{cfg_path} lacks '{key}': the checkpoint is damaged; re-create it")
    return info


def save_checkpoint(
    path: str | Path,
    model: GPT,
    train: TrainConfig,
    step: int,
    metrics: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights (and trainer state) for ``step``, then commit by replacing ``config.json``.

    The tokenizer must already be in the folder (written once, when training starts)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / TOKENIZER_FILE).is_file():
        raise UserError(f"{path} has no {TOKENIZER_FILE}: write the tokenizer before the first checkpoint")
    old = read_config(path) if (path / CONFIG_FILE).is_file() else None
    weights = f"model-{step:07d}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != TIED_KEY}
    with atomic.temporary_path(path / weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    trainer_file = None
    if trainer_state is not None:
        trainer_file = f"trainer-{step:07d}.pt"
        with atomic.temporary_path(path / trainer_file) as tmp:
            torch.save(trainer_state, tmp)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "train": train.to_dict(),
        "step": step,
        "metrics": metrics or {},
        "weights": weights,
        "trainer_state": trainer_file,
        **(extra or {}),
    }
    atomic.write_text(path / CONFIG_FILE, json.dumps(info, indent=2) + "\n")
    if old is not None:  # the new step is committed: the previous files may go
        for name in (old.get("weights"), old.get("trainer_state")):
            if name and name not in (weights, trainer_file):
                (path / name).unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, with_trainer_state: bool = False) -> Checkpoint:
    """Load a checkpoint folder; every way it can be wrong is a one-line UserError."""
    path = Path(path)
    info = read_config(path)
    config = GPTConfig.from_dict(info["model"])
    weights = path / info["weights"]
    if not weights.is_file():
        raise UserError(f"checkpoint {path} is missing its weights file {info['weights']}: re-create it")
    if not (path / TOKENIZER_FILE).is_file():
        raise UserError(f"checkpoint {path} is missing {TOKENIZER_FILE}: re-create it")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {weights} ({e}): the checkpoint is damaged") from None
    model = GPT(config)
    expected = {k: v.shape for k, v in model.state_dict().items() if k != TIED_KEY}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"weights in {weights.name} do not fit config.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): the weights and config are from different models"
        )
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise UserError(
                f"weights in {weights.name} do not fit config.json: {k} has shape {tuple(state[k].shape)}, "
                f"the config needs {tuple(shape)}"
            )
    model.load_state_dict(state, strict=False)  # lm_head.weight is tied to wte.weight
    model.eval()
    trainer_state = None
    if with_trainer_state:
        if not info.get("trainer_state") or not (path / info["trainer_state"]).is_file():
            raise UserError(f"checkpoint {path} has no optimizer state to resume from: train without --resume")
        try:
            trainer_state = torch.load(path / info["trainer_state"], map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a damaged pickle
            raise UserError(f"cannot read {info['trainer_state']} ({type(e).__name__}): the optimizer state is "
                            f"damaged; start over with --overwrite (the weights can still be exported)") from None
    return Checkpoint(
        path=path,
        model=model,
        config=config,
        train=TrainConfig.from_dict(info.get("train", {})),
        step=int(info.get("step", 0)),
        metrics=info.get("metrics", {}),
        info=info,
        trainer_state=trainer_state,
    )
