"""PyTorch generation with the KV cache (the export's reference) and the eager speed baseline."""


import pytest
import torch
from tokenizers import Tokenizer

from gptedge.errors import UserError
from gptedge.train.checkpoint import load_checkpoint
from gptedge.train.sample import generate, greedy
from gptedge.train.tokenizer import special_ids


@pytest.fixture(scope="module")
def trained(trained_checkpoint):
    ckpt = load_checkpoint(trained_checkpoint)
    return ckpt.model, Tokenizer.from_file(str(ckpt.tokenizer_path))


def test_greedy_with_cache_equals_argmax_without(trained):
    model, tok = trained
    prompt = tok.encode("The built-in function").ids
    ours = greedy(model, prompt, 20)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(20):  # the whole sequence again every step, no cache
            logits, _ = model(torch.tensor([seq]))
            seq.append(int(logits[0, -1].argmax()))
    assert ours == seq[len(prompt):]


def test_sampling_controls(trained):
    model, tok = trained
    prompt = tok.encode("The").ids
    assert generate(model, prompt, 15, temperature=1.0, top_k=1) == greedy(model, prompt, 15)
    a = generate(model, prompt, 15, temperature=0.9, generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, 15, temperature=0.9, generator=torch.Generator().manual_seed(3))
    assert a == b
    eos, _ = special_ids(tok)
    stopped = generate(model, prompt, 60, temperature=1.5, eos_id=eos, generator=torch.Generator().manual_seed(0))
    assert eos not in stopped[:-1]
    with pytest.raises(UserError, match="exceeds the model's context"):
        greedy(model, prompt, model.config.context_length)
