"""The parity gate: proof that an exported graph behaves like the PyTorch model it came from.

Four checks on held-out text, all on onnxruntime's CPU provider:

(a) prefill: the logits of a full context window, onnxruntime vs PyTorch, max |diff| <= TOLERANCE;
(b) greedy: GREEDY_TOKENS tokens generated through the KV cache by the runtime (the same code users
    run) are identical to PyTorch's greedy tokens (``train.sample.greedy``);
(c) cache: in onnxruntime alone, feeding tokens one at a time through the cache, starting from a
    zero-length past, gives the logits of one full pass without a cache;
(d) batch: a left-padded batch of three prompts of different lengths, then a few cached decode
    steps, gives each row the logits that row gets alone (batch 3 vs batch 1).

(a) and (b) need the PyTorch model; (c) and (d) test the graph on its own, so ``gptedge verify``
runs them on any bundle. (c) and (d) also catch a model that is wrong in PyTorch and ONNX alike: a
briefly trained model leans on the current token so much that its greedy tokens survived attention
with a broken cache mask, while (c) saw its logits off by 1.7.

The figures go into the manifest; a failed check is a UserError with all figures on one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gptedge import runtime
from gptedge.errors import UserError
from gptedge.runtime import Decoder, left_pad, records

TOLERANCE = 1e-4  # max |logit difference|; fp32 graphs land near 1e-6
GREEDY_TOKENS = 64
GREEDY_PROMPT_TOKENS = 16
CACHE_TOKENS = 32
BATCH_PROMPT_LENGTHS = (12, 7, 3)  # all different, so rows carry 0, 5 and 9 pads
BATCH_DECODE_STEPS = 4


def _feed(ids: np.ndarray, past: int) -> tuple[np.ndarray, np.ndarray]:
    """attention_mask (B, P + T) of ones and position_ids (B, T) counting on from the past."""
    B, T = ids.shape
    return np.ones((B, past + T), dtype=np.int64), np.tile(np.arange(past, past + T, dtype=np.int64), (B, 1))


def check_cache(decoder: Decoder, tokens: np.ndarray) -> records.TokensChecked:
    """(c): one token at a time through the cache, from a zero-length past, vs one full pass."""
    n = min(CACHE_TOKENS, decoder.shape.context_length, len(tokens))
    ids = tokens[None, :n]  # (1, n)
    full = decoder.empty_cache(1).run(ids, *_feed(ids, 0))  # (1, n, V)
    cache, steps = decoder.empty_cache(1), []
    for t in range(n):  # past t, sequence 1
        step = cache.run(ids[:, t : t + 1], *_feed(ids[:, t : t + 1], t))
        steps.append(step.copy())  # a decode step's logits may be a buffer the next step reuses
    return records.TokensChecked(n, float(np.abs(np.concatenate(steps, axis=1) - full).max()))


def check_batch(decoder: Decoder, tokens: np.ndarray, pad_id: int) -> records.BatchCheck:
    """(d): a left-padded batch of 3 then cached decode steps (the text's next tokens) vs each row alone."""
    lengths = [min(L, decoder.shape.context_length - BATCH_DECODE_STEPS) for L in BATCH_PROMPT_LENGTHS]
    span = max(lengths) + BATCH_DECODE_STEPS
    rows = [tokens[i * span : i * span + L + BATCH_DECODE_STEPS] for i, L in enumerate(lengths)]
    if any(len(r) < L + BATCH_DECODE_STEPS for r, L in zip(rows, lengths)):
        raise UserError(
            f"the parity text has {len(tokens)} tokens, the batch check needs {3 * span}: give a longer --text"
        )

    def run(prompts: list[np.ndarray], continuations: np.ndarray) -> list[np.ndarray]:
        """Logits per step: the prefill's (B, T, V), then (B, 1, V) per decode step."""
        ids, mask, positions = left_pad(prompts, pad_id)
        cache = decoder.empty_cache(len(prompts))
        logits = cache.run(ids, mask, positions)
        out = [logits]
        for s in range(continuations.shape[1]):
            mask = np.concatenate([mask, np.ones((len(prompts), 1), dtype=np.int64)], axis=1)
            positions = positions[:, -1:] + 1
            logits = cache.run(continuations[:, s : s + 1], mask, positions)
            out.append(logits.copy())  # a decode step's logits may be a buffer the next step reuses
        return out

    prompts = [r[:L] for r, L in zip(rows, lengths)]
    continuations = np.stack([r[L:] for r, L in zip(rows, lengths)])  # (3, steps)
    batched = run(prompts, continuations)
    worst = 0.0
    for row, prompt in enumerate(prompts):
        alone = run([prompt], continuations[row : row + 1])
        worst = max(worst, float(np.abs(batched[0][row, -len(prompt):] - alone[0][0]).max()))
        for b, a in zip(batched[1:], alone[1:]):
            worst = max(worst, float(np.abs(b[row] - a[0]).max()))
    return records.BatchCheck(lengths, BATCH_DECODE_STEPS, worst)


def check_prefill(model: Any, decoder: Decoder, tokens: np.ndarray) -> records.TokensChecked:
    """(a): a full context window (or all the text) through both, logits compared."""
    import torch

    n = min(decoder.shape.context_length, len(tokens))
    ids = tokens[None, :n]
    mask, positions = _feed(ids, 0)
    ours = decoder.empty_cache(1).run(ids, mask, positions)
    with torch.inference_mode():
        theirs, _ = model(torch.from_numpy(ids), position_ids=torch.from_numpy(positions),
                          attention_mask=torch.from_numpy(mask))
    return records.TokensChecked(n, float(np.abs(ours - theirs.numpy()).max()))


def check_greedy(model: Any, generator: Any, tokens: np.ndarray) -> records.GreedyCheck:
    """(b): the runtime's greedy generation (``generator`` is ``gptedge.runtime.load(...)``, the code
    users run) vs ``train.sample.greedy``, token for token, past the end-of-text token if it comes."""
    import torch

    from gptedge.train.sample import greedy

    prompt = [int(t) for t in tokens[: min(GREEDY_PROMPT_TOKENS, model.config.context_length // 4)]]
    n = min(GREEDY_TOKENS, model.config.context_length - len(prompt))
    # One thread: a one-token step is too small to share, and with two threads every step waits
    # for the slower one; on a busy 2-core machine that made these steps several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theirs = greedy(model, prompt, n)
    finally:
        torch.set_num_threads(threads)
    ours = generator.generate(prompt, max_new_tokens=n, temperature=0.0, ignore_eos=True).token_ids
    first_diff = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    if first_diff is None and len(ours) != len(theirs):
        first_diff = min(len(ours), len(theirs))
    return records.GreedyCheck(len(prompt), n, first_diff is None, first_diff)


def run_gate(
    bundle_dir: str | Path,
    text_description: str,
    tokens: np.ndarray,
    model: Any | None = None,
) -> records.ParityFigures:
    """Run the checks on the bundle's fp32 variant; return the figures or raise a UserError.

    ``model`` (a GPT in eval mode) enables the checks against PyTorch. Every check runs on the
    onnxruntime session that ``gptedge.runtime.load`` opens (after checking the file's hash), so
    the gate sees the graph exactly as users' generation does."""
    generator = runtime.load(bundle_dir, variant="fp32", provider="cpu")
    decoder = generator.decoder
    figures = records.ParityFigures(
        text=text_description,
        tolerance=TOLERANCE,
        prefill=check_prefill(model, decoder, tokens) if model is not None else None,
        greedy=check_greedy(model, generator, tokens) if model is not None else None,
        cache=check_cache(decoder, tokens),
        batch=check_batch(decoder, tokens, generator.manifest.pad_token_id),
    )
    failures = failed_checks(figures)
    figures.passed = not failures
    if failures:
        raise UserError(f"parity gate failed: {'; '.join(failures)}; all figures: {summary(figures)}")
    return figures


def failed_checks(figures: records.ParityFigures) -> list[str]:
    out = []
    for check in ("prefill", "cache", "batch"):
        diff = getattr(figures, check).max_abs_diff if getattr(figures, check) is not None else 0.0
        if not diff <= TOLERANCE:  # NaN fails too
            out.append(f"{check} max |diff| {diff:.2e} > {TOLERANCE:.0e}")
    greedy = figures.greedy
    if greedy and not greedy.identical:
        out.append(f"greedy tokens differ from PyTorch's at token {greedy.first_difference} of {greedy.new_tokens}")
    return out


def summary(figures: records.ParityFigures) -> str:
    """One line of the figures, for the terminal and for error messages."""
    parts = []
    if figures.prefill is not None:
        parts.append(f"prefill {figures.prefill.tokens} tok max|diff| {figures.prefill.max_abs_diff:.1e}")
    if figures.greedy is not None:
        parts.append(f"greedy {figures.greedy.new_tokens} tok {'identical' if figures.greedy.identical else 'DIFFERENT'}")
    parts.append(f"cache vs full {figures.cache.tokens} tok max|diff| {figures.cache.max_abs_diff:.1e}")
    parts.append(f"batch 3 vs 1 max|diff| {figures.batch.max_abs_diff:.1e}")
    return ", ".join(parts)
