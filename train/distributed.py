"""One process, or many under ``torchrun``: the few collective operations training needs.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a world of one and every
operation is a no-op, so the training loop reads the same either way. Rank 0 alone decides (reads
the corpus, trains the tokenizer, checks the output folder) and alone writes files; the others
receive its decision, including a user error, so a bad input stops every process with one message
instead of leaving the others waiting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from gptedge.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available to this torch: use --device cpu")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise UserError(f"--device {name!r} is unknown: use auto, cpu or cuda")
    return torch.device("cpu")


def start(device: str = "auto") -> World:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(0, 1, pick_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), dev)


def finished(world: World) -> None:
    """After a run that succeeded on every rank: wait for each other before leaving, since a rank
    that tears gloo down while rank 0 still writes its checkpoint has been seen to abort
    ("terminate called without an active exception"). Not on an error path, where a rank may
    never arrive."""
    if world.distributed and dist.is_initialized():
        dist.barrier()


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def decide_on_main(world: World, decide: Callable[[], T]) -> T:
    """Run ``decide`` on rank 0 and give every rank its result, or its UserError."""
    if not world.distributed:
        return decide()
    box: list[Any] = [None]
    if world.is_main:
        try:
            box[0] = ("ok", decide())
        except UserError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise UserError(value)
    return value


def sum_across(world: World, values: list[float]) -> list[float]:
    """Element-wise sum of a few numbers over all ranks."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()
