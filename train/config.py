"""Model shape and training settings as dataclasses, with named presets.

Both are saved into every checkpoint's ``config.json`` so a checkpoint says what it is, and can be
read without torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from gptedge import schema
from gptedge.errors import UserError


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    context_length: int = 256  # the longest sequence the position table covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    gelu: str = "exact"  # "exact" or "tanh" (GPT-2's approximation, needed for imported weights)
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_types(self, lambda name: f"model setting {name}")
        positive = ("vocab_size", "context_length", "n_layer", "n_head", "n_embd")
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise UserError(f"model setting {name}={value!r} is invalid: use a positive whole number")
        if self.n_embd % self.n_head:
            raise UserError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: pick n_embd a multiple of n_head"
            )
        if self.gelu not in ("exact", "tanh"):
            raise UserError(f"gelu={self.gelu!r} is unknown: use 'exact' or 'tanh'")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout={self.dropout} is out of range: use a value in [0, 1)")
        if not 0.0 < self.layer_norm_eps < 1.0:
            raise UserError(f"layer_norm_eps={self.layer_norm_eps} is out of range: use a small positive value such as 1e-5")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 16  # sequences per optimizer step, per process (before accumulation)
    grad_accum: int = 1
    seq_len: int = 128  # training window; <= context_length
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_batches: int = 8
    checkpoint_interval: int = 250
    vocab_size: int = 4096  # tokenizer size; the model's vocab_size follows it
    holdout_fraction: float = 0.1
    seed: int = 1337
    ignores_unknown_fields: ClassVar[bool] = True  # in config.json: a newer gptedge may record more

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each rule names the setting as the CLI spells it, so the message says what to change."""
        _check_types(self, _flag)
        at_least_one = ("steps", "batch_size", "grad_accum", "seq_len", "eval_interval", "eval_batches",
                        "checkpoint_interval", "vocab_size")
        for name in at_least_one:
            value = getattr(self, name)
            if value < 1:
                raise UserError(f"{_flag(name)} {value!r} is out of range: use a whole number of 1 or more")
        for name in ("warmup_steps", "seed"):
            value = getattr(self, name)
            if value < 0:
                raise UserError(f"{_flag(name)} {value!r} is out of range: use a whole number of 0 or more")
        for f in dataclasses.fields(self):
            if f.type == "float" and not math.isfinite(getattr(self, f.name)):
                raise UserError(f"{_flag(f.name)} {getattr(self, f.name)!r} is not a finite number: use a finite value")
        if not self.lr > 0:
            raise UserError(f"--lr {self.lr!r} is out of range: use a positive learning rate such as 1e-3")
        if not 0 <= self.min_lr <= self.lr:
            raise UserError(f"--min-lr {self.min_lr!r} is out of range: use a value between 0 and --lr ({self.lr})")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{_flag(name)} {getattr(self, name)!r} is out of range: use 0 (off) or more")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"{_flag(name)} {getattr(self, name)!r} is out of range: use a value in [0, 1)")
        if not 0 < self.holdout_fraction < 1:
            raise UserError(
                f"--holdout-fraction {self.holdout_fraction!r} is out of range: use a value between 0 and 1"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_types(obj: Any, label: Callable[[str], str]) -> None:
    """Every field of ``obj`` holds its hinted type, by ``gptedge.schema``'s rules. Settings arrive
    from JSON, ``--set KEY=VALUE`` and Python callers, where a string or a list can stand where a
    number belongs: one line instead of a TypeError deep in the model. ``label(name)`` says how
    the user spells the setting."""
    try:
        schema.check(obj)
    except schema.SchemaError as e:
        raise UserError(f"{label(e.field)} {e.problem}") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class Preset:
    model: GPTConfig
    train: TrainConfig = field(default_factory=TrainConfig)


# tiny: trains to readable English in about 2.5 minutes on 2 idle CPU cores (~4,100 tokens/s). Tuned
#   on the default corpus (~103 K training tokens at vocabulary 4096): 600 steps of 8 x 128 tokens
#   (~6 passes) at lr 1e-3. The held-out loss still falls at the end (it bottoms out near 4.3 after
#   ~15 passes, while the training loss goes on down: memorising), so no dropout: 0.1 cost 0.08 nats
#   at 450 steps; lr 2e-3 and 6e-4 ended 0.3 and 0.1 nats worse there.
#   The context equals the training window: positions never trained on would make the model
#   worse, not longer-sighted (generation slides its window instead).
# small: a laptop-sized model that wants a GPU or patience.
# gpt2: the 124M GPT-2 shape (for imported weights and for benchmarks with random weights).
PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        GPTConfig(vocab_size=4096, context_length=128, n_layer=4, n_head=4, n_embd=256),
        TrainConfig(steps=600, batch_size=8, seq_len=128, lr=1e-3, min_lr=1e-4, warmup_steps=30,
                    eval_interval=75, checkpoint_interval=150),
    ),
    "small": Preset(
        GPTConfig(vocab_size=8192, context_length=256, n_layer=6, n_head=6, n_embd=384),
        TrainConfig(vocab_size=8192, seq_len=256, lr=6e-4, min_lr=6e-5, steps=3000),
    ),
    "gpt2": Preset(
        GPTConfig(vocab_size=50257, context_length=1024, n_layer=12, n_head=12, n_embd=768, gelu="tanh"),
        TrainConfig(vocab_size=50257, seq_len=512, lr=6e-4, min_lr=6e-5, steps=5000, batch_size=8),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    return Preset(dataclasses.replace(p.model), dataclasses.replace(p.train))
