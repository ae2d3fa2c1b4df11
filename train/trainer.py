"""Training: from a corpus (or the embedded default) to a checkpoint folder, a log and a loss curve.

    train(source, out_dir) -> out_dir/checkpoint

A run folder holds::

    checkpoint/    the checkpoint (see checkpoint.py), rewritten every checkpoint_interval steps
    log.jsonl      one line per step (loss, lr) and per evaluation (held-out loss, perplexity)
    loss.png       training and held-out loss against the step

Rank 0 makes every decision before anything is written (configuration, corpus, tokenizer, the state
of the output folder), so a bad input fails with one line and touches nothing. Data order, dropout
and the learning rate are pure functions of (seed, step, rank): a resumed run, given the optimizer
state from the checkpoint, continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from gptedge import atomic
from gptedge.errors import UserError, write_error
from gptedge.paths import CHECKPOINT_DIR, DEFAULT_PRESET, run_dir
from gptedge.train import distributed
from gptedge.train.checkpoint import STEP_FILE, load_checkpoint, save_checkpoint
from gptedge.train.checkpoint_config import CONFIG_FILE, TOKENIZER_FILE, CorpusRecord, Metrics, read_config
from gptedge.train.config import GPTConfig, TrainConfig, get_preset
from gptedge.train.corpus import DEFAULT_CORPUS_NAME, Document, load_documents, split_documents
from gptedge.train.data import TokenSplits, heldout_windows, training_batch, unigram_perplexity
from gptedge.train.model import GPT
from gptedge.train.optim import lr_at, make_optimizer, set_lr
from gptedge.train.runlog import RunLog, plot_losses
from gptedge.train.sample import generate
from gptedge.train.tokenizer import encode_documents, special_ids, train_tokenizer

LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
RUN_FILES = (LOG_FILE, PLOT_FILE)  # what a run writes beside its checkpoint
SAMPLE_PROMPT = "The"
SAMPLE_TOKENS = 80


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def plot(self) -> Path:
        return self.root / PLOT_FILE

    def has_checkpoint(self) -> bool:
        return (self.checkpoint / CONFIG_FILE).is_file()

    def unfinished_start(self) -> bool:
        """A checkpoint folder from a run killed before its first checkpoint was committed: only the
        tokenizer, step files and temporary files, safe to replace."""
        return self.checkpoint.is_dir() and all(
            p.name == TOKENIZER_FILE or STEP_FILE.match(p.name) or _temporary(p.name) for p in self.checkpoint.iterdir()
        )


def _temporary(entry: str, of: tuple[str, ...] | None = None) -> bool:
    """Whether ``entry`` is named like a temporary file of gptedge.atomic (``.<name>.<random>.tmp``),
    on the way to one of the names ``of`` (any name when None)."""
    return entry.startswith(".") and entry.endswith(".tmp") and (of is None or any(
        entry.startswith(f".{name}.") for name in of))


@dataclass
class Plan:
    """Everything rank 0 decides before training; sent to every rank."""

    preset: str
    model: GPTConfig
    train: TrainConfig
    tokenizer_json: str
    tokens: TokenSplits
    corpus: CorpusRecord
    resume: bool
    start_step: int = 0
    metrics: Metrics = field(default_factory=Metrics)  # of the checkpoint resumed from


def train(
    source: str | None = None,
    out_dir: str | Path | None = None,
    preset: str | None = None,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    quiet: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    threads: int | None = None,
) -> Path:
    """Train a GPT and return its checkpoint folder (``out_dir/checkpoint``).

    source: a text file, a folder of .txt/.md files or a glob; None for the embedded default corpus.
    out_dir: the run folder (default runs/<preset>). preset: tiny, small or gpt2 (default tiny, or the
    checkpoint's on resume). overrides: TrainConfig or GPTConfig fields by name (vocab_size sets the
    tokenizer size, which the model follows). resume: continue the checkpoint in out_dir at its step;
    only ``steps`` may change (to train longer). overwrite: discard a finished run in out_dir.
    threads: CPU threads for torch during this call (default: torch's choice, one per core).
    Under torchrun every process calls this; rank 0 alone writes.
    """
    run = RunFolder(Path(out_dir) if out_dir is not None else run_dir(preset or DEFAULT_PRESET))
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads} is out of range: use 1 or more")
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    world = distributed.start(device)
    try:
        with _writers_lock(run, world):
            plan = distributed.decide_on_main(
                world, lambda: make_plan(source, run, preset, steps, dict(overrides or {}), resume, overwrite)
            )
            trainer = _Trainer(plan, run, world, quiet=quiet or not world.is_main)
            try:
                trainer.fit()
                distributed.finished(world)
            except OSError as e:  # a full disk, a folder made read-only while training
                again = "train again" + (" with --resume (the last checkpoint is intact)" if run.has_checkpoint() else "")
                raise write_error(e, run.root, again) from None
    finally:
        distributed.stop(world)
        torch.set_num_threads(saved_threads)
    return run.checkpoint


def _writers_lock(run: RunFolder, world: distributed.World) -> contextlib.AbstractContextManager:
    """Two runs on one folder wait for each other (the second then plans from the first's
    checkpoint). Where the parent folder is missing or not writable nobody else can be writing
    there: no lock, so a bad input creates nothing and the plan says what cannot be written."""
    parent = run.root.parent
    if not world.is_main or not parent.is_dir() or not os.access(parent, os.W_OK):
        return contextlib.nullcontext()
    return atomic.locked(run.root, waiting=lambda message: print(f"gptedge: {message} ...", file=sys.stderr))


# ---------------------------------------------------------------------------------------------------
# Deciding: settings, output folder, corpus and tokenizer. Reads only; raises UserError.


def make_plan(
    source: str | None,
    run: RunFolder,
    preset: str | None,
    steps: int | None,
    overrides: dict[str, Any],
    resume: bool,
    overwrite: bool,
) -> Plan:
    if (run.root / CONFIG_FILE).is_file():
        raise UserError(
            f"--out {run.root} is a checkpoint folder itself: pass the run folder that holds it, "
            f"--out {run.root.parent}"
        )
    _check_writable(run.root)
    if resume:
        return _plan_resume(source, run, preset, steps, overrides)
    _check_fresh_folder(run, overwrite)
    name, model_cfg, train_cfg = resolve_settings(preset or DEFAULT_PRESET, steps, overrides)
    docs = load_documents(source)
    train_docs, held_docs = split_documents(docs, train_cfg.holdout_fraction, train_cfg.seed)
    tok = train_tokenizer((d.text for d in train_docs), train_cfg.vocab_size)
    model_cfg.vocab_size = tok.get_vocab_size()
    tokens = _encode(tok, train_docs, held_docs, train_cfg.seq_len)
    return Plan(name, model_cfg, train_cfg, tok.to_str(), tokens, _describe(source, docs, tokens), resume=False)


def resolve_settings(preset: str, steps: int | None, overrides: dict[str, Any]) -> tuple[str, GPTConfig, TrainConfig]:
    p = get_preset(preset)
    model, train = p.model.to_dict(), p.train.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "vocab_size":  # the tokenizer's size; the model's embedding follows it
            model[key] = train[key] = value
        elif key in train:
            train[key] = value
        elif key in model:
            model[key] = value
        else:
            raise UserError(f"unknown setting {key!r}: use a field of TrainConfig or GPTConfig")
    if steps is not None:
        train["steps"] = steps
    model_cfg, train_cfg = GPTConfig(**model), TrainConfig(**train)
    if train_cfg.seq_len > model_cfg.context_length:
        raise UserError(
            f"--seq-len {train_cfg.seq_len} exceeds the model's context length {model_cfg.context_length}: "
            f"use --seq-len {model_cfg.context_length} or less"
        )
    return preset, model_cfg, train_cfg


def _check_writable(root: Path) -> None:
    """Refuse a read-only --out before minutes of tokenizer training, not at the first write."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to --out {root} ({existing} is read-only): choose a folder you can write to")


def _check_fresh_folder(run: RunFolder, overwrite: bool) -> None:
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"--out {run.root} is a file: choose a folder for the run")
    if run.has_checkpoint():
        if not overwrite:
            step = read_config(run.checkpoint).step
            raise UserError(
                f"{run.root} already holds a run (checkpoint at step {step}): pass --resume to continue it, "
                f"--overwrite to start over, or another --out"
            )
        return
    ours = {LOG_FILE, PLOT_FILE} | ({CHECKPOINT_DIR} if run.unfinished_start() else set())
    foreign = sorted(p.name for p in run.root.iterdir() if p.name not in ours and not _temporary(p.name, RUN_FILES)
                     ) if run.root.is_dir() else []
    if foreign:
        raise UserError(
            f"--out {run.root} already holds other files ({', '.join(foreign[:3])}): "
            f"choose a new or empty folder for the run"
        )


def _plan_resume(
    source: str | None, run: RunFolder, preset: str | None, steps: int | None, overrides: dict[str, Any]
) -> Plan:
    if not run.has_checkpoint():
        raise UserError(f"there is no checkpoint in {run.checkpoint} to resume: run without --resume or fix --out")
    ckpt = load_checkpoint(run.checkpoint, with_trainer_state=True)  # validates weights and trainer state
    info = ckpt.info
    if preset is not None and preset != info.preset:
        raise UserError(
            f"the checkpoint in {run.root} was trained with preset {info.preset!r}, not {preset!r}: "
            f"drop --preset to resume, or start a new run with another --out"
        )
    model, train = ckpt.config.to_dict(), ckpt.train.to_dict()
    for key, value in overrides.items():
        stored = train.get(key, model.get(key))
        if value is not None and key not in ("steps",) and value != stored:
            flag = "--" + key.replace("_", "-")
            raise UserError(
                f"the checkpoint in {run.root} was trained with {flag} {stored}, not {value}: "
                f"drop {flag} to resume, or start a new run with another --out"
            )
    steps = steps if steps is not None else overrides.get("steps")
    if steps is not None:
        train["steps"] = steps
    train_cfg = TrainConfig(**train)
    if ckpt.step >= train_cfg.steps:
        raise UserError(
            f"the run in {run.root} already reached step {ckpt.step} of {train_cfg.steps}: "
            f"pass --steps N with N > {ckpt.step} to train longer"
        )
    try:
        tok = Tokenizer.from_file(str(ckpt.tokenizer_path))
    except Exception as e:  # tokenizers raises a plain Exception for a damaged file
        raise UserError(f"cannot read {ckpt.tokenizer_path} ({e}): the checkpoint is damaged") from None
    docs = load_documents(source)
    corpus_hash = _fingerprint(docs)
    trained_on = info.corpus
    if trained_on is None or trained_on.sha256 != corpus_hash:
        raise UserError(
            f"the checkpoint in {run.root} was trained on {trained_on.name if trained_on else 'another corpus'}, "
            f"and this corpus differs: pass the same corpus to resume, or start a new run with another --out"
        )
    train_docs, held_docs = split_documents(docs, train_cfg.holdout_fraction, train_cfg.seed)
    tokens = _encode(tok, train_docs, held_docs, train_cfg.seq_len)
    return Plan(
        info.preset or "custom", ckpt.config, train_cfg, tok.to_str(), tokens, trained_on,
        resume=True, start_step=ckpt.step, metrics=dataclasses.replace(ckpt.metrics),
    )


def _encode(tok: Tokenizer, train_docs: list[Document], held_docs: list[Document], seq_len: int) -> TokenSplits:
    tokens = TokenSplits(
        encode_documents(tok, [d.text for d in train_docs]), encode_documents(tok, [d.text for d in held_docs])
    )
    tokens.check_fits(seq_len)
    return tokens


def _fingerprint(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _describe(source: str | None, docs: list[Document], tokens: TokenSplits) -> CorpusRecord:
    return CorpusRecord(
        name=DEFAULT_CORPUS_NAME if source is None else str(source),
        documents=len(docs),
        characters=sum(len(d.text) for d in docs),
        train_tokens=int(len(tokens.train)),
        heldout_tokens=int(len(tokens.heldout)),
        sha256=_fingerprint(docs),
    )


# ---------------------------------------------------------------------------------------------------
# Training.


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The dropout seed of one update: resumable and different on every rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


class _Trainer:
    def __init__(self, plan: Plan, run: RunFolder, world: distributed.World, quiet: bool) -> None:
        self.plan, self.run, self.world, self.quiet = plan, run, world, quiet
        self.cfg = plan.train
        self.device = world.device
        self.log = RunLog(run.log)
        torch.manual_seed(self.cfg.seed)  # the same initial weights on every rank
        if plan.resume:
            ckpt = load_checkpoint(run.checkpoint, with_trainer_state=True)
            self.model, state = ckpt.model, ckpt.trainer_state
        else:
            self.model, state = GPT(plan.model), None
        self.model.to(self.device).train()
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.train_seconds, self.tokens_seen = 0.0, 0
        if state is not None:
            unfit = UserError(f"the optimizer state in {run.checkpoint} does not fit the model: start over with "
                              f"--overwrite (the weights can still be exported)")
            optimizer = state.get("optimizer") if isinstance(state, dict) else None
            if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
                    and isinstance(optimizer.get("param_groups"), list)
                    and isinstance(state.get("train_seconds"), float) and isinstance(state.get("tokens_seen"), int)):
                raise unfit  # torch would fail on it with an AttributeError, or not at all
            try:
                self.optimizer.load_state_dict(optimizer)
            except (KeyError, ValueError, TypeError):
                raise unfit from None
            self.train_seconds, self.tokens_seen = state["train_seconds"], state["tokens_seen"]
        self.net = self.model
        if world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        max_windows = self.cfg.eval_batches * self.cfg.batch_size
        self.windows = heldout_windows(plan.tokens.heldout, self.cfg.seq_len, max_windows)  # (N, seq_len + 1)
        self.unigram_ppl = unigram_perplexity(plan.tokens.train, self.windows[:, 1:], plan.model.vocab_size)
        self.metrics = dataclasses.replace(plan.metrics, unigram_ppl=self.unigram_ppl, processes=world.size)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len * self.cfg.grad_accum * self.world.size

    def fit(self) -> None:
        cfg, plan = self.cfg, self.plan
        if self.world.is_main:
            self._prepare_folder()
        self._announce()
        if not plan.resume:
            self._evaluate(0)
        bar = tqdm(total=cfg.steps, initial=plan.start_step, disable=self.quiet, unit="step", dynamic_ncols=True)
        run_tokens, run_seconds, loss = 0, 0.0, float("nan")
        try:
            for i in range(plan.start_step, cfg.steps):
                step = i + 1  # updates done once this one is
                lr = lr_at(i, cfg)
                t0 = time.perf_counter()
                loss = self._update(i, lr)
                if not math.isfinite(loss):  # diverged: every later step would be nan too
                    raise UserError(
                        f"the training loss became {loss} at step {step}: lower --lr (it is {cfg.lr:g}) or raise "
                        f"--warmup-steps, and train again"
                    )
                dt = time.perf_counter() - t0
                run_tokens += self.tokens_per_step
                run_seconds += dt
                self.tokens_seen += self.tokens_per_step
                self.train_seconds += dt
                if self.world.is_main:
                    self.log.write(step=step, loss=round(loss, 5), lr=lr, tokens_per_s=round(self.tokens_per_step / dt))
                if step % cfg.eval_interval == 0 or step == cfg.steps:
                    self._evaluate(step)
                bar.set_postfix_str(
                    f"loss {loss:.3f}  {run_tokens / run_seconds:,.0f} tok/s"
                    + (f"  held-out {self.metrics.val_loss:.3f}" if self.metrics.val_loss is not None else ""),
                    refresh=False,
                )
                bar.update(1)
                if step % cfg.checkpoint_interval == 0 or step == cfg.steps:
                    self.metrics = dataclasses.replace(
                        self.metrics, train_loss=loss, tokens_per_s=run_tokens / run_seconds,
                        tokens_seen=self.tokens_seen, train_seconds=self.train_seconds)
                    if step == cfg.steps and self.world.is_main:
                        self.metrics.sample = self._sample()
                    self._save(step, lr)
        finally:
            bar.close()
            self.log.close()
        self._finish()

    def _prepare_folder(self) -> None:
        run = self.run
        for name in RUN_FILES:  # temporary files of a run killed while writing them
            atomic.remove_leftovers(run.root, name)
        if self.plan.resume:
            atomic.remove_leftovers(run.checkpoint)  # left by a kill in the middle of a save
            self.log.truncate_after(self.plan.start_step)
            return
        shutil.rmtree(run.checkpoint, ignore_errors=True)  # only an unfinished start, or --overwrite
        run.log.unlink(missing_ok=True)
        run.plot.unlink(missing_ok=True)
        atomic.write_text(run.checkpoint / TOKENIZER_FILE, self.plan.tokenizer_json)

    def _update(self, i: int, lr: float) -> float:
        """One optimizer update over grad_accum micro-batches; returns the mean loss over all ranks."""
        cfg = self.cfg
        set_lr(self.optimizer, lr)
        torch.manual_seed(_step_seed(cfg.seed, i, self.world.rank))
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            x, y = training_batch(
                self.plan.tokens.train, cfg.batch_size, cfg.seq_len, cfg.seed, i, micro, self.world.rank
            )  # (B, T) each
            x, y = x.to(self.device), y.to(self.device)
            last = micro == cfg.grad_accum - 1
            # Gradients are averaged across ranks only on the last micro-batch.
            sync = contextlib.nullcontext() if last or not self.world.distributed else self.net.no_sync()
            with sync:
                with self.autocast:
                    logits, _ = self.net(x)  # (B, T, V)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) / cfg.grad_accum
                loss.backward()
            total += loss.item()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return distributed.sum_across(self.world, [total])[0] / self.world.size

    @torch.no_grad()
    def _evaluate(self, step: int) -> None:
        """Held-out loss over the fixed windows, shared out across ranks."""
        self.model.eval()
        mine = self.windows[self.world.rank :: self.world.size]
        total, count = 0.0, 0
        for start in range(0, len(mine), self.cfg.batch_size):
            w = torch.from_numpy(mine[start : start + self.cfg.batch_size]).to(self.device)  # (B, T + 1)
            with self.autocast:
                logits, _ = self.model(w[:, :-1])
            total += F.cross_entropy(logits.float().flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
            count += w[:, 1:].numel()
        self.model.train()
        total, count = distributed.sum_across(self.world, [total, count])
        val_loss = total / count
        self.metrics.val_loss, self.metrics.val_ppl = val_loss, math.exp(val_loss)
        if self.metrics.start_val_loss is None:
            self.metrics.start_val_loss = val_loss
        if self.world.is_main:
            row = dict(step=step, val_loss=round(val_loss, 5), val_ppl=round(math.exp(val_loss), 3))
            if step == 0:
                row["unigram_loss"] = round(math.log(self.unigram_ppl), 5)
            self.log.write(**row)
            if step > 0:  # the curve changes shape only with a new held-out point
                title = f"{self.plan.preset}: {self.model.num_params() / 1e6:.2f}M parameters"
                plot_losses(self.log.read(), self.run.plot, title)

    def _save(self, step: int, lr: float) -> None:
        if not self.world.is_main:
            return
        state = {
            "step": step,
            "lr": lr,  # the last update's; the schedule is lr_at(step) from here
            "optimizer": self.optimizer.state_dict(),
            "train_seconds": self.train_seconds,
            "tokens_seen": self.tokens_seen,
        }
        save_checkpoint(
            self.run.checkpoint, self.model, self.cfg, step, metrics=dataclasses.replace(self.metrics),
            trainer_state=state, preset=self.plan.preset, corpus=self.plan.corpus,
        )

    def _announce(self) -> None:
        if self.quiet:
            return
        c, p = self.plan.corpus, self.plan
        print(
            f"corpus: {c.name}: {c.documents} documents, {len(p.tokens.train):,} training and "
            f"{len(p.tokens.heldout):,} held-out tokens (vocabulary {p.model.vocab_size:,})\n"
            f"model: {p.preset}, {self.model.num_params() / 1e6:.2f}M parameters, {p.model.n_layer} layers, "
            f"{p.model.n_embd} wide; {self.tokens_per_step:,} tokens per step on {self.world.size} x {self.device}\n"
            + (f"resuming at step {p.start_step} of {self.cfg.steps}" if p.resume
               else f"training {self.cfg.steps} steps")
            + f" into {self.run.root}",
            flush=True,
        )

    def _sample(self) -> str:
        """A short continuation of SAMPLE_PROMPT as the start of a document: after the end-of-text
        token, which is what the model saw before every document's first words in training."""
        tok = Tokenizer.from_str(self.plan.tokenizer_json)
        eos, _ = special_ids(tok)
        prompt = [eos] + tok.encode(SAMPLE_PROMPT).ids
        new = min(SAMPLE_TOKENS, self.plan.model.context_length - len(prompt))
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        ids = generate(self.model, prompt, new, temperature=0.8, top_k=40, eos_id=eos, generator=gen)
        return tok.decode(prompt + ids)  # special tokens (the leading and a final end-of-text) left out

    def _finish(self) -> None:
        if self.quiet:
            return
        m = self.metrics
        print(
            f"\ntraining speed: {m.tokens_per_s:,.0f} tokens/s ({self.world.size} x {self.device})\n"
            f"held-out loss {m.val_loss:.3f}, perplexity {m.val_ppl:.1f} "
            f"(unigram baseline of the same tokenizer: perplexity {m.unigram_ppl:.1f})\n"
            f"checkpoint: {self.run.checkpoint}\nloss curve: {self.run.plot}\n"
            f"sample (temperature 0.8, top-k 40):\n{m.sample}",
            flush=True,
        )
