"""The trained test model: one short real training run per test session, shared by every stage.

It goes through the public ``train()`` exactly as ``gptedge train`` does (default corpus, real
tokenizer, real loop, real checkpoint), sized to take about 10-20 seconds on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures_model import TEST_MODEL

# Enough steps for the held-out loss to fall far below its start and below the unigram baseline.
TEST_TRAINING = dict(seq_len=64, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=20, eval_interval=100,
                     checkpoint_interval=100)
TEST_STEPS = 300


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """The checkpoint folder (``<run>/checkpoint``); its run folder holds log.jsonl and loss.png."""
    from gptedge.train.trainer import train

    run = tmp_path_factory.mktemp("trained") / "run"
    # One thread: the test model's matrices are too small to gain from two, and a second thread
    # only fights with whatever else the machine runs.
    return train(None, run, steps=TEST_STEPS, overrides={**TEST_MODEL, **TEST_TRAINING}, quiet=True, threads=1)
