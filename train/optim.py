"""AdamW with weight-decay groups, and the learning-rate schedule (a pure function of the step).

Weight decay pulls weights toward zero; it belongs on the matrices that mix features (every Linear
weight, and the token embedding, which is also the output head's matrix), not on biases or LayerNorm
gains (decaying a gain toward 0 would switch the layer off), and not on the position table: it is a
lookup table whose rows beyond the training window never get a gradient, so decay would only erode
positions the model may later use, with no regularising benefit.
"""

from __future__ import annotations

import math

import torch

from gptedge.train.config import TrainConfig
from gptedge.train.model import GPT


def make_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # the tied lm_head.weight appears once, as wte.weight
        if p.dim() >= 2 and name != "wpe.weight":
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def lr_at(i: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``i`` (0-based): linear warmup to lr, then cosine decay to min_lr at
    the last update."""
    if i < cfg.warmup_steps:
        return cfg.lr * (i + 1) / cfg.warmup_steps
    progress = (i - cfg.warmup_steps) / max(1, cfg.steps - 1 - cfg.warmup_steps)
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
