"""A run killed at an arbitrary moment keeps its last checkpoint, and --resume then continues at the
exact step and learning rate: the result equals the uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fixtures_model import TEST_MODEL
from gptedge.train.checkpoint import load_checkpoint, read_config
from gptedge.train.optim import lr_at
from gptedge.train.trainer import train

pytestmark = pytest.mark.slow  # real training runs, killed and resumed

SETTINGS = {**TEST_MODEL, "seq_len": 32, "batch_size": 8, "warmup_steps": 5, "checkpoint_interval": 5,
            "eval_interval": 20, "lr": 2e-3, "dropout": 0.1}  # dropout: its random masks must resume too
STEPS = 60


def log_rows(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_kill_then_resume_equals_uninterrupted(tmp_path):
    whole = train(None, tmp_path / "whole", steps=STEPS, overrides=SETTINGS, quiet=True, threads=1)

    run = tmp_path / "killed"
    code = (f"from gptedge.train.trainer import train; "
            f"train(None, {str(run)!r}, steps={STEPS}, overrides={SETTINGS!r}, quiet=True, threads=1)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})
    config = run / "checkpoint" / "config.json"
    try:
        deadline = time.monotonic() + 60
        while not config.is_file():  # the first checkpoint (step 5) is committed
            assert proc.poll() is None and time.monotonic() < deadline, "training never reached a checkpoint"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up, possibly in the middle of a save
    finally:
        proc.wait()
    killed_at = load_checkpoint(run / "checkpoint").step  # the last good checkpoint loads
    assert 5 <= killed_at < STEPS

    resumed = train(None, run, resume=True, quiet=True, threads=1)
    rows = log_rows(run)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, STEPS + 1))  # no step lost or repeated
    cfg = read_config(resumed).train
    assert [r["lr"] for r in rows if "loss" in r][killed_at] == lr_at(killed_at, cfg)

    a, b = load_checkpoint(whole).model.state_dict(), load_checkpoint(resumed).model.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    losses = {r["step"]: r["loss"] for r in log_rows(tmp_path / "whole") if "loss" in r}
    assert all(abs(losses[r["step"]] - r["loss"]) <= 1e-4 for r in rows if "loss" in r)
    assert not list((run / "checkpoint").glob(".*.tmp"))
    assert torch.equal(a["wte.weight"], a["lm_head.weight"])
