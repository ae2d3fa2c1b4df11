"""The shared training run (fixtures_train.trained_checkpoint) and the pieces of the loop."""

import json
import math

import numpy as np
import pytest
import torch

from fixtures_model import TEST_MODEL
from fixtures_train import TEST_STEPS
from gptedge.train.checkpoint import load_checkpoint
from gptedge.train.config import GPTConfig, TrainConfig
from gptedge.train.data import heldout_windows, training_batch, unigram_perplexity
from gptedge.train.model import GPT
from gptedge.train.optim import lr_at, make_optimizer


def test_training_learns_beyond_the_unigram_baseline(trained_checkpoint):
    info = json.loads((trained_checkpoint / "config.json").read_text())
    m = info["metrics"]
    assert info["step"] == TEST_STEPS
    assert m["val_loss"] < m["start_val_loss"] - 1.5  # ~6.2 (uniform over 512 tokens) -> ~3.9
    assert m["val_loss"] < math.log(m["unigram_ppl"]) - 0.5  # context helps, not just token counts
    assert m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["tokens_per_s"] > 0 and m["sample"].startswith("The")


def test_run_folder_holds_checkpoint_log_and_plot(trained_checkpoint):
    run = trained_checkpoint.parent
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, TEST_STEPS + 1))
    held = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in held] == [0, 100, 200, 300] and "unigram_loss" in held[0]
    names = sorted(p.name for p in trained_checkpoint.iterdir())
    assert names == ["config.json", f"model-{TEST_STEPS:07d}.safetensors", "tokenizer.json",
                     f"trainer-{TEST_STEPS:07d}.pt"]  # earlier checkpoints were replaced, no temp files
    ckpt = load_checkpoint(trained_checkpoint, with_trainer_state=True)
    assert ckpt.config == GPTConfig(**TEST_MODEL)
    assert ckpt.trainer_state["step"] == TEST_STEPS and "optimizer" in ckpt.trainer_state


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    lrs = [lr_at(i, cfg) for i in range(cfg.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # strictly decreasing after warm-up
    assert lrs[-1] == pytest.approx(1e-4)


def test_weight_decay_only_on_matrices_and_token_embedding():
    model = GPT(GPTConfig(**TEST_MODEL))
    decay, no_decay = make_optimizer(model, TrainConfig()).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "wte.weight" in decayed and "h.0.attn.c_attn.weight" in decayed
    assert not any(n.endswith(".bias") or "ln_" in n or n == "wpe.weight" for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_batches_depend_on_step_and_rank_only():
    tokens = np.arange(1000, dtype=np.int64)
    x, y = training_batch(tokens, 4, 16, seed=1, step=7)
    again, _ = training_batch(tokens, 4, 16, seed=1, step=7)
    other_rank, _ = training_batch(tokens, 4, 16, seed=1, step=7, rank=1)
    assert torch.equal(x, again) and not torch.equal(x, other_rank)
    assert torch.equal(y, x + 1)  # targets are the inputs shifted by one token


def test_heldout_windows_tile_the_stream():
    tokens = np.arange(101, dtype=np.int64)
    w = heldout_windows(tokens, seq_len=10, max_windows=100)
    assert w.shape == (10, 11)
    assert np.array_equal(np.concatenate([row[1:] for row in w]), tokens[1:])  # each target once
    assert heldout_windows(tokens, 10, max_windows=3)[:, 0].tolist() == [0, 40, 90]


def test_unigram_baseline_by_hand():
    train = np.array([0, 0, 0, 1])  # counts 3, 1, 0 over a vocabulary of 3: p = 4/7, 2/7, 1/7
    assert unigram_perplexity(train, np.array([0, 2]), 3) == pytest.approx(math.sqrt(7 / 4 * 7 / 1))
