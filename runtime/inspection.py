"""Looking inside the model: what the inspection variant's extra outputs say about one text.

For each layer and head, attention is the softmax of each token's query against the keys of
itself and every earlier token: row i of ``attentions[layer, head]`` says how much of each earlier
token's value token i pours into its own mix (rows sum to 1; the masked future is exactly 0). The
residual stream is what each position carries between layers; the logit lens reads it with the
final LayerNorm and the output head, as if the model stopped after that layer, so the last
layer's guesses are the model's own next-token probabilities.

    model = gptedge.runtime.load("bundle/", variant="inspect")   # made by gptedge inspect --make
    seen = model.inspect("The for statement")
    seen.attentions[0, 1]          # layer 0, head 1: (T, T)
    seen.lens[-1]                  # the top guesses for the next token, after the last layer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from gptedge.errors import UserError
from gptedge.runtime import contract
from gptedge.runtime.decoder import Decoder
from gptedge.runtime.next_token import Candidate, log_softmax, top_tokens
from gptedge.runtime.text import check_token_ids

if TYPE_CHECKING:
    from gptedge.runtime.model import Model


@dataclass
class Inspection:
    token_ids: list[int]
    tokens: list[str]  # each token's text on its own (a piece of a character shows as "\ufffd")
    attentions: np.ndarray  # (L, nh, T, T) attention probabilities
    hidden_states: np.ndarray  # (L + 1, T, C): after the embeddings, then after each layer
    lens: list[list[Candidate]]  # per layer, the most likely next tokens if the model stopped there
    cut: int = 0  # tokens dropped from the front to fit the context


def inspect(model: "Model", text: str | Sequence[int], k: int = 5) -> Inspection:
    """Run ``text`` (or token ids) through the model's inspection variant (its last context_length
    tokens); k guesses per layer."""
    entry = model.manifest.variants[model.variant]
    if entry.inspection is None:
        names = [n for n, v in model.manifest.variants.items() if v.inspection is not None]
        raise UserError(f"variant {model.variant!r} has no inspection outputs: load the bundle with variant="
                        + (f"{names[0]!r}" if names else "'inspect' after gptedge inspect --make BUNDLE"))
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"k={k!r} is invalid: ask for at least 1 guess per layer")
    V = model.manifest.model.vocab_size
    ids = model.encode(text) if isinstance(text, str) else check_token_ids(text, V, "the token ids to look at")
    if not ids:
        raise UserError("the text is empty: give at least one token to look at")
    C = model.context_length
    cut, ids = max(0, len(ids) - C), ids[-C:]
    T = len(ids)
    out = run_inspection(model.decoder, np.asarray([ids], np.int64), np.ones((1, T), np.int64),
                  np.arange(T, dtype=np.int64)[None, :])
    L = model.manifest.model.n_layer
    logp = log_softmax(out[contract.LENS_LOGITS][0].astype(np.float64))  # (L, V)
    decode = lambda t: model.tokenizer.decode([t], skip_special_tokens=False)  # noqa: E731
    lens = [[Candidate(t, decode(t), float(np.exp(lp))) for t, lp in top_tokens(logp[layer], min(k, logp.shape[1]))]
            for layer in range(L)]
    return Inspection(
        token_ids=ids,
        tokens=[decode(t) for t in ids],
        attentions=np.stack([out[contract.attentions_name(i)][0] for i in range(L)]),
        hidden_states=np.stack([out[contract.hidden_states_name(i)][0] for i in range(L + 1)]),
        lens=lens,
        cut=cut,
    )


def run_inspection(decoder: Decoder, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of an inspection graph, by name, for a (left-padded) batch with no past:
    ids and positions (B, T), mask (B, T)."""
    shape = decoder.shape
    empty = np.zeros((ids.shape[0], shape.n_head, 0, shape.head_dim), decoder.cache_dtype)
    feed = {contract.INPUT_IDS: ids, contract.ATTENTION_MASK: mask, contract.POSITION_IDS: positions,
            **{name: empty for name in decoder.past_names}}
    names = [o.name for o in decoder.session.get_outputs()]
    return dict(zip(names, decoder.session.run(names, feed)))
