"""int8-static: the QDQ format that NPU providers (QNN, NNAPI) take.

Static quantization fixes every activation's int8 range ahead of time, from calibration text run
through the fp32 graph, and writes the graph as float ops wrapped in QuantizeLinear/DequantizeLinear
pairs (QDQ): an NPU provider fuses each pair into an integer op; onnxruntime's CPU provider runs it
too. Weights are int8 per channel, activations uint8.

Two things decide whether the result is usable or garbage:

- **What the calibration sees.** The runtime drives the graph two ways, a prefill from an empty
  cache and decode steps on a cache, so the reader feeds both, with the real cache tensors the fp32
  graph produced for the same text (``CacheCalibrationReader``).
- **The attention mask.** Masked scores are filled with float32's lowest value (-3.4e38) before the
  softmax. Calibrated as an activation, that value stretches the scores' uint8 range until every
  real score rounds to the same step, and the variant's predictions stop agreeing with fp32's (the
  README has the figures). The mask additions and the softmax therefore stay float
  (``attention_score_nodes``), which keeps the variant's perplexity close to fp32's.

The tied token matrix is stored once: the head's per-token int8 weights, which the embedding's
DequantizeLinear reads transposed (``tied_embedding.retie_qdq``).

Limits, honestly: NPUs also want fixed input shapes, and this graph keeps the contract's dynamic
ones; a fixed-shape graph for a given NPU is a separate step.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from gptedge.export import tied_embedding
from gptedge.runtime import Cache, Decoder, contract

# Windows of held-out text; each gives one prefill and one decode feed. The calibrator keeps every
# activation of every feed in memory until the end (its chunking option drops data in onnxruntime
# 1.32), so windows are capped in length: 16 x 256 tokens is about 1 GB at the GPT-2 shape.
CALIBRATION_WINDOWS = 16
CALIBRATION_TOKENS = 256
# Ops the additive mask passes through on its way to the scores (Add is where it ends).
MASK_OPS = ("Add", "Cast", "Concat", "Expand", "Reshape", "Slice", "Squeeze", "Tile", "Transpose", "Unsqueeze")


def calibration_windows(tokens: np.ndarray, context_length: int, count: int = CALIBRATION_WINDOWS) -> list[np.ndarray]:
    """Up to ``count`` windows of ``context_length`` tokens spread evenly over the text (fewer, or
    one shorter window, when the text is short)."""
    starts = range(0, max(1, len(tokens) - context_length + 1), context_length)
    windows = [tokens[s : s + context_length] for s in starts]
    pick = np.linspace(0, len(windows) - 1, num=min(count, len(windows))).round().astype(int)
    return [windows[i] for i in sorted(set(pick))]


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class CacheCalibrationReader(CalibrationDataReader):
        """Per window of W tokens: a prefill of the first W - 1 from an empty cache, then one
        decode step of the last token on the cache the fp32 graph made for the prefill."""

        def __init__(self, fp32: Decoder, windows: list[np.ndarray]) -> None:
            self.feeds: list[dict[str, np.ndarray]] = []
            for w in windows:
                ids = w[None, :].astype(np.int64)  # (1, W)
                W = ids.shape[1]
                prefill = self._feed(fp32, ids[:, : W - 1], 0, fp32.empty_cache(1))
                cache = fp32.empty_cache(1)
                cache.run(*(prefill[n] for n in (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.POSITION_IDS)))
                self.feeds += [prefill, self._feed(fp32, ids[:, W - 1 :], W - 1, cache)]
            self._iter = iter(self.feeds)

        @staticmethod
        def _feed(fp32: Decoder, ids: np.ndarray, past: int, cache: Cache) -> dict[str, np.ndarray]:
            T = ids.shape[1]
            return {
                contract.INPUT_IDS: ids,
                contract.ATTENTION_MASK: np.ones((1, past + T), dtype=np.int64),
                contract.POSITION_IDS: np.arange(past, past + T, dtype=np.int64)[None, :],
                **dict(zip(fp32.past_names, cache.host())),
            }

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

        def rewind(self) -> None:
            self._iter = iter(self.feeds)

    return CacheCalibrationReader


def attention_score_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes that carry the masked attention scores: the mask's ``Where``, the reshaping ops
    after it, the ``Add`` that puts it on the scores, and every softmax. (A fused attention op
    takes the mask itself and is never quantized, so the walk stops there.)"""
    consumers = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    found = {n.name for n in model.graph.node if n.op_type in ("Where", "Softmax")}
    frontier = [out for n in model.graph.node if n.op_type == "Where" for out in n.output]
    while frontier:
        for node in consumers[frontier.pop()]:
            if node.name in found or node.op_type not in MASK_OPS:
                continue
            found.add(node.name)
            if node.op_type != "Add":  # the Add onto the scores is the end of the mask's path
                frontier.extend(node.output)
    return sorted(found)


def quantize_int8_static(
    model: onnx.ModelProto, fp32: Decoder, tokens: np.ndarray
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The QDQ graph calibrated on ``tokens`` (run through ``fp32``) and the settings used;
    ``model`` is consumed."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    windows = calibration_windows(tokens, min(fp32.shape.context_length, CALIBRATION_TOKENS))
    reader = _reader_class()(fp32, windows)
    tied = tied_embedding.find(model)
    if tied is not None:
        tied_embedding.untie(model, tied)
    excluded = attention_score_nodes(model) + ([tied.gather] if tied is not None else [])
    with tempfile.TemporaryDirectory(prefix="gptedge-int8-static-") as tmp:
        out = Path(tmp) / "model.int8-static.onnx"
        quantize_static(
            model,
            out,
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
        )
        quantized = onnx.load(str(out))
    if tied is not None:
        tied_embedding.retie_qdq(quantized, tied)
    settings = {
        "method": "onnxruntime quantize_static, QDQ format, MinMax calibration",
        "weights": "int8 per channel",
        "activations": "uint8",
        "calibration": f"{len(windows)} windows of {len(windows[0])} tokens: a prefill and a decode step each",
        "kept_float": "attention mask additions and softmax (the mask's -3.4e38 fill would set the score range)",
        "token_embedding": "int8 per token, shared with the output head" if tied else "int8",
    }
    return quantized, settings
