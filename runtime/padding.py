"""The one left-padding rule, owned by the runtime and used by everyone who batches rows.

Rows of different lengths are padded on the left, so every row's last token sits in the last
column. The attention mask is 0 over a row's padding and 1 after it; positions count the row's
real tokens from 0 (padding sits at position 0, masked), so a padded row computes exactly what it
computes alone. The export's parity gate, optimize's parity check and the generation loop all
build their batches here, so they test the very rule the runtime uses.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, slots: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids (B, T), attention_mask (B, S) and position_ids (B, S) for ``rows`` padded on the
    left to T = the longest row. S = ``slots`` (default T): the generation loop asks for all C
    slots of the cache at once, so a decode step only slices them."""
    T = max(len(r) for r in rows)
    S = T if slots is None else slots
    pad = np.array([T - len(r) for r in rows], dtype=np.int64)[:, None]  # (B, 1)
    index = np.arange(S, dtype=np.int64)[None, :]  # (1, S)
    mask = (index >= pad).astype(np.int64)  # (B, S)
    positions = np.maximum(index - pad, 0)  # (B, S)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    for b, row in enumerate(rows):
        ids[b, pad[b, 0]:] = row
    return ids, mask, positions
