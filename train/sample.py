"""Text generation in PyTorch with the model's KV cache: the reference the ONNX runtime is held to.

The prompt goes through the model once (prefill); after that each new token is fed alone with the
cache of everything before it, exactly as the exported graph is driven, so the export's parity gate
can compare token for token.
"""

from __future__ import annotations

import torch

from gptedge.errors import UserError
from gptedge.train.model import GPT


def _check_length(model: GPT, prompt_ids: list[int], max_new_tokens: int) -> None:
    if not prompt_ids:
        raise UserError("the prompt is empty: give at least one token (e.g. the end-of-text token)")
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens={max_new_tokens} is negative: ask for 0 or more tokens")
    total = len(prompt_ids) + max_new_tokens
    if total > model.config.context_length:
        raise UserError(
            f"prompt ({len(prompt_ids)} tokens) + {max_new_tokens} new tokens exceeds the model's "
            f"context of {model.config.context_length}: shorten the prompt or ask for fewer tokens"
        )


@torch.inference_mode()
def generate(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Return the new token ids (not the prompt). temperature 0 is greedy; top_k keeps the k most
    likely tokens before sampling; generation stops after ``eos_id`` if given."""
    _check_length(model, prompt_ids, max_new_tokens)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    position = torch.arange(len(prompt_ids), device=device)[None, :]  # (1, T)
    past = None
    out: list[int] = []
    try:
        for _ in range(max_new_tokens):
            logits, past = model(x, position_ids=position, past_key_values=past)
            logits = logits[0, -1].float()  # (V,)
            if temperature == 0.0:
                next_id = int(torch.argmax(logits))
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.numel():
                    kth = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                next_id = int(torch.multinomial(probs, 1, generator=generator))
            out.append(next_id)
            if eos_id is not None and next_id == eos_id:
                break
            x = torch.tensor([[next_id]], dtype=torch.long, device=device)  # (1, 1)
            position = position[:, -1:] + 1
    finally:
        model.train(was_training)
    return out


def greedy(model: GPT, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """The ``max_new_tokens`` most likely next tokens (never stops early), prompt excluded.

    Prefill the prompt in one call, then one token per call through the cache: the export's
    parity gate runs the same loop in onnxruntime and expects identical ids."""
    return generate(model, prompt_ids, max_new_tokens, temperature=0.0)
