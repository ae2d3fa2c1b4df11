"""The GPT: token + position embeddings, pre-LayerNorm transformer blocks, a tied output head.

One ``forward`` serves training, prefill and cached decoding, and it is exactly what the ONNX
export traces, so nothing is patched for export. Shapes: B batch, T new tokens, P past tokens,
nh heads, hs head size, C = nh * hs embedding size, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptedge.train.config import GPTConfig

# One (key, value) pair per layer, each (B, nh, P, hs).
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
        weights: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """With ``weights``, attention is computed step by step and its probabilities returned,
        (B, nh, T, P + T): the same arithmetic as the fused kernel, for looking inside the model."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nh, P + T, hs)
            v = torch.cat([past[1], v], dim=2)
        # The mask is explicit (never is_causal=True): with a past, the causal diagonal is offset by P.
        att = None
        if weights:  # softmax(q k^T / sqrt(hs) + mask): how much each query pours from each value
            att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]) + mask, dim=-1)  # (B, nh, T, P + T)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), (k, v), att


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh" if cfg.gelu == "tanh" else "none")
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, mask, past, weights: bool = False):
        a, present, att = self.attn(self.ln_1(x), mask, past, weights)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present, att


def attention_bias(attention_mask: torch.Tensor, past_length: int | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, T, P + T): 0 where query i may see key j, a large negative elsewhere.

    Query i sits at absolute index P + i, so it sees keys j <= P + i that are not padding.
    A fully padded query row stays finite (uniform attention over nothing useful) instead of NaN.
    """
    total = attention_mask.shape[1]
    key_index = torch.arange(total, device=attention_mask.device)  # (P + T,)
    query_index = key_index[past_length:]  # (T,)
    causal = key_index[None, :] <= query_index[:, None]  # (T, P + T)
    allowed = causal[None, None, :, :] & attention_mask[:, None, None, :].bool()  # (B, 1, T, P + T)
    return torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.context_length, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix for reading and writing tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied matrix once); non_embedding drops the position table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """input_ids (B, T); attention_mask (B, P + T) with 1 for real tokens, 0 for padding;
        position_ids (B, T); past_key_values per layer (key, value) each (B, nh, P, hs).
        Returns logits (B, T, V) and the present cache per layer, each (B, nh, P + T, hs)."""
        logits, presents, _ = self._run(input_ids, position_ids, attention_mask, past_key_values, inside=False)
        return logits, presents

    def look_inside(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache, "Internals"]:
        """``forward``, and what happened inside it (``Internals``)."""
        return self._run(input_ids, position_ids, attention_mask, past_key_values, inside=True)

    def _run(self, input_ids, position_ids, attention_mask, past_key_values, inside: bool):
        B, T = input_ids.shape
        P = past_key_values[0][0].shape[2] if past_key_values else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, P + T, dtype=torch.long, device=input_ids.device)
        if position_ids is None:  # count real tokens so left padding does not shift positions
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, P:]
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        mask = attention_bias(attention_mask, P, x.dtype)
        presents: KVCache = []
        attentions, hidden_states = [], [x]
        for i, block in enumerate(self.h):
            x, present, att = block(x, mask, past_key_values[i] if past_key_values else None, weights=inside)
            presents.append(present)
            attentions.append(att)
            hidden_states.append(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if not inside:
            return logits, presents, None
        # The logit lens: the final LayerNorm and the head on each layer's residual stream, at the
        # last position: what the model would predict if it stopped after that layer.
        lens = torch.stack([self.lm_head(self.ln_f(h[:, -1])) for h in hidden_states[1:]], dim=1)  # (B, L, V)
        return logits, presents, Internals(attentions, hidden_states, lens)


@dataclass
class Internals:
    """What ``GPT.look_inside`` saw: per layer the attention probabilities (B, nh, T, P + T), the
    residual stream (B, T, C) after the embeddings and after each block (L + 1 of them), and the
    logit lens at the last position (B, L, V)."""

    attentions: list[torch.Tensor]
    hidden_states: list[torch.Tensor]
    lens_logits: torch.Tensor
