"""Session-wide building blocks every stage's tests share: one test-sized model shape, one tokenizer,
and a checkpoint with random weights (for tests that need a real model but not a trained one)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small enough that training for seconds moves the loss, big enough to have every moving part.
TEST_MODEL = dict(vocab_size=512, context_length=64, n_layer=2, n_head=2, n_embd=64)


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory) -> Path:
    from gptedge.train.corpus import load_documents, split_documents
    from gptedge.train.tokenizer import train_tokenizer

    train_docs, _ = split_documents(load_documents(), 0.1, seed=1337)
    tok = train_tokenizer((d.text for d in train_docs), TEST_MODEL["vocab_size"])
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory, tokenizer_file) -> Path:
    import shutil

    import torch

    from gptedge.train.checkpoint import save_checkpoint
    from gptedge.train.config import GPTConfig, TrainConfig
    from gptedge.train.model import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(**TEST_MODEL))
    path = tmp_path_factory.mktemp("random") / "checkpoint"
    path.mkdir()
    shutil.copy(tokenizer_file, path / "tokenizer.json")
    save_checkpoint(path, model, TrainConfig(vocab_size=TEST_MODEL["vocab_size"]), step=0)
    return path
