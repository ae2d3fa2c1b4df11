"""``gptedge train`` and ``gptedge import``. torch is imported only when one of them runs."""

from __future__ import annotations

import argparse

from gptedge.arguments import require, thread_count
from gptedge.train.config import PRESETS

# CLI flags that override a TrainConfig / GPTConfig field of the same name (None = preset's value).
OVERRIDES = ("vocab_size", "batch_size", "grad_accum", "seq_len", "lr", "min_lr", "warmup_steps", "dropout",
             "seed", "eval_interval", "checkpoint_interval")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a GPT and its tokenizer on a corpus (default: Python's built-in documentation)",
        description="Train a byte-level BPE tokenizer and a GPT on CORPUS and write a checkpoint "
        "folder, a log and a loss curve into the run folder. Runs under torchrun for several "
        "processes (DistributedDataParallel). Flags left out take the preset's value.",
    )
    p.add_argument("corpus", nargs="?", metavar="CORPUS",
                   help="a text file, a folder of .txt/.md files or a quoted glob (default: Python's "
                   "built-in pydoc documentation, no download)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="model size and training settings (default: tiny; on --resume, the checkpoint's)")
    p.add_argument("--steps", type=int, help="optimizer steps in total (on --resume: train on to this step)")
    p.add_argument("--out", metavar="DIR",
                   help="run folder (default: runs/PRESET); the checkpoint goes to DIR/checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the run in --out at its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over, discarding the run already in --out")
    p.add_argument("--vocab-size", type=int, help="tokenizer vocabulary size")
    p.add_argument("--batch-size", type=int, help="sequences per step and process")
    p.add_argument("--grad-accum", type=int, help="micro-batches accumulated per step")
    p.add_argument("--seq-len", type=int, help="training window in tokens (at most the model's context)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    p.add_argument("--warmup-steps", type=int, help="steps of linear warm-up")
    p.add_argument("--dropout", type=float, help="dropout probability")
    p.add_argument("--seed", type=int, help="seed for the split, initial weights, batches and dropout")
    p.add_argument("--eval-interval", type=int, help="steps between held-out evaluations")
    p.add_argument("--checkpoint-interval", type=int, help="steps between checkpoints")
    p.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu or cuda")
    p.add_argument("--threads", type=thread_count, help="CPU threads for torch (default: one per core; fewer on a busy machine)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run_train)

    i = subparsers.add_parser(
        "import",
        help="turn existing GPT-2 weights (Hugging Face or nanoGPT) into a checkpoint",
        description="Convert a local Hugging Face GPT-2 folder (config.json + model.safetensors, with "
        "tokenizer.json or vocab.json + merges.txt) or a nanoGPT ckpt.pt into a gptedge checkpoint "
        "folder with identical outputs. Nothing is downloaded.",
    )
    i.add_argument("source", metavar="SOURCE", help="a Hugging Face GPT-2 folder, or a nanoGPT ckpt.pt (or its folder)")
    i.add_argument("--out", required=True, metavar="DIR", help="the checkpoint folder to create")
    i.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json, or a folder with vocab.json + merges.txt "
                   "(required for nanoGPT, which saves none)")
    i.set_defaults(func=run_import)


def run_train(args: argparse.Namespace) -> int:
    require("torch", "train")
    from gptedge.train.trainer import train

    overrides = {name: getattr(args, name) for name in OVERRIDES}
    train(args.corpus, args.out, preset=args.preset, steps=args.steps, overrides=overrides, resume=args.resume,
          quiet=args.quiet, device=args.device, overwrite=args.overwrite, threads=args.threads)
    return 0


def run_import(args: argparse.Namespace) -> int:
    require("torch", "train")
    from gptedge.train.checkpoint_config import read_config
    from gptedge.train.importers import import_weights

    out = import_weights(args.source, args.out, args.tokenizer)
    m = read_config(out).model
    print(f"wrote checkpoint {out}: {m.n_layer} layers, {m.n_embd} wide, {m.n_head} heads, "
          f"vocabulary {m.vocab_size}, context {m.context_length}")
    return 0
