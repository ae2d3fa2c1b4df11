"""The same command under torchrun: 2 CPU processes (gloo), one checkpoint written by rank 0."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gptedge.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # torchrun


def test_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun if torchrun.exists() else shutil.which("torchrun")), "--standalone", "--nproc_per_node", "2",
           "-m", "gptedge", "train", "--out", str(tmp_path / "run"), "--steps", "12", "--vocab-size", "512",
           "--batch-size", "4", "--seq-len", "32", "--eval-interval", "6", "--checkpoint-interval", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("held-out loss") == 1  # only rank 0 reports

    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert ckpt.step == 12 and ckpt.metrics.processes == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))  # one writer, no duplicates
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 6, 12]
    assert ckpt.metrics.val_loss < ckpt.metrics.start_val_loss


def test_torchrun_bad_input_stops_every_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    (tmp_path / "empty.txt").write_text("")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "gptedge", "train",
           str(tmp_path / "empty.txt"), "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("gptedge train: error: corpus") == 2  # each rank says it once, nobody hangs
    assert not (tmp_path / "run").exists()
