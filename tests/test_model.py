import pytest
import torch

from gptedge.errors import UserError
from gptedge.train.config import PRESETS, GPTConfig, get_preset
from gptedge.train.model import GPT


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=300, context_length=64, n_layer=2, n_head=4, n_embd=64)).eval()


def test_cached_decoding_equals_full_forward(model):
    x = torch.randint(0, 300, (2, 20))
    full, _ = model(x)
    # Prefill 7 tokens, then one token at a time through the cache.
    logits, past = model(x[:, :7])
    pieces = [logits]
    for t in range(7, 20):
        step, past = model(x[:, t : t + 1], past_key_values=past)
        pieces.append(step)
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-5
    assert past[0][0].shape == (2, 4, 20, 16)


def test_is_causal_sdpa_would_be_wrong_with_a_past(model):
    """Guards the reason the mask is explicit: top-left causal masking differs once a past exists."""
    x = torch.randint(0, 300, (1, 12))
    _, past = model(x[:, :8])
    q = torch.randn(1, 4, 4, 16)
    k = torch.randn(1, 4, 12, 16)
    v = torch.randn(1, 4, 12, 16)
    top_left = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    from gptedge.train.model import attention_bias

    ours = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attention_bias(torch.ones(1, 12, dtype=torch.long), 8, q.dtype)
    )
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # last 4 queries see all 12 keys
    assert torch.allclose(ours[:, :, -1], full[:, :, -1], atol=1e-6)
    assert not torch.allclose(top_left, ours, atol=1e-3)


def test_left_padding_does_not_change_a_row(model):
    a = torch.randint(0, 300, (1, 9))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), a], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    alone, _ = model(a)
    batched, _ = model(padded, attention_mask=mask)
    assert (batched[:, 3:] - alone).abs().max().item() <= 1e-5


def test_tied_head_and_param_count(model):
    assert model.lm_head.weight is model.wte.weight
    c = model.config
    per_block = 12 * c.n_embd**2 + 13 * c.n_embd
    expected = c.vocab_size * c.n_embd + c.context_length * c.n_embd + c.n_layer * per_block + 2 * c.n_embd
    assert model.num_params() == expected


def test_presets_and_bad_values():
    assert {"tiny", "small", "gpt2"} <= set(PRESETS)
    assert get_preset("gpt2").model.n_embd == 768
    with pytest.raises(UserError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(UserError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(UserError, match="positive"):
        GPTConfig(n_layer=0)
