"""What the stages record in a bundle's manifest: the parity figures, each stage's record in the
provenance, the eval harness's settings and each variant's figures.

Typed like the rest of the manifest (``contract`` reads and writes them with one reader and one
writer), kept apart because generating text needs none of them: ``contract``, ``decoder``,
``generation``, ``sampling``, ``settings``, ``padding`` and ``text`` are what a port of the runtime
to another language reads; this file is what the tools that make and judge bundles read.
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from gptedge import schema


@dataclass
class VariantMetrics:
    """``gptedge eval``'s figures for one variant (or for PyTorch, in ``EvalSettings.pytorch``)."""

    perplexity: float | None = None
    perplexity_vs_fp32_pct: float | None = None
    max_abs_logit_diff: float | None = None
    top1_agreement: float | None = None
    greedy_agreement: float | None = None
    size_vs_fp32: float | None = None
    provider: str | None = None
    load_s: float | None = None
    ttft_ms: float | None = None
    decode_tokens_per_s: float | None = None
    decode_vs_fp32: float | None = None

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.not_negative(self, "perplexity", "max_abs_logit_diff", "size_vs_fp32", "load_s",
                                       "ttft_ms", "decode_tokens_per_s", "decode_vs_fp32")
        for name in ("top1_agreement", "greedy_agreement"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                yield name, f"must be a fraction in [0, 1], not {value!r}"


@dataclass
class TokensChecked:
    """One parity check: how many tokens, and the largest |logit difference|."""

    tokens: int
    max_abs_diff: float


@dataclass
class GreedyCheck:
    prompt_tokens: int
    new_tokens: int
    identical: bool
    first_difference: int | None = None


@dataclass
class BatchCheck:
    prompt_tokens: list[int]
    decode_steps: int
    max_abs_diff: float


@dataclass
class ParityFigures:
    """The export gate's figures (``gptedge export`` / ``verify``): onnxruntime against PyTorch
    (prefill, greedy; only with the checkpoint) and against itself (cache vs full, batch vs rows)."""

    text: str
    tolerance: float
    cache: TokensChecked
    batch: BatchCheck
    prefill: TokensChecked | None = None
    greedy: GreedyCheck | None = None
    passed: bool = False


@dataclass
class InspectionParity:
    """The inspection variant's check when it is made: its extra outputs against the PyTorch
    model's internals (``GPT.look_inside``), its logits against the fp32 variant's."""

    max_attention_diff: float
    max_hidden_diff: float
    max_lens_diff: float
    max_logit_diff_vs_fp32: float
    tolerance: float
    batch: int
    left_padding: int


@dataclass
class FusedParity:
    """``gptedge optimize``'s check of the fused graph against the original."""

    max_abs_logit_diff: float
    tolerance: float
    batch: int
    left_padding: int
    tokens_per_step: list[int]


@dataclass
class OptimizeRecord:
    variant: str
    file: str
    sha256: str
    from_file: str
    from_sha256: str
    size_bytes_before: int
    size_bytes_after: int
    fusions: dict[str, int]
    attention: str
    gelu: str
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    parity: FusedParity
    tools: dict[str, str]


@dataclass
class QuantizationRecord:
    """How ``gptedge quantize`` made one variant; the fields after ``method`` are those its
    precision has (int8: reduce_range; int4: bits, block_size, ...; int8-static: calibration)."""

    method: str
    tools: dict[str, str]
    created_at: str
    token_embedding: str | None = None
    position_embedding: str | None = None
    reduce_range: bool | None = None
    reduce_range_reason: str | None = None
    bits: int | None = None
    block_size: int | None = None
    accuracy_level: int | None = None
    output_head_bits: int | None = None
    cache_dtype: str | None = None
    logits_dtype: str | None = None
    weights: str | None = None
    activations: str | None = None
    calibration: str | None = None
    kept_float: str | None = None
    npu_note: str | None = None


@dataclass
class Provenance:
    """Where the bundle came from, and what each stage did to it since."""

    checkpoint: str  # the folder's name only: no local paths in a bundle
    checkpoint_step: int
    parameters: int
    weights_file: str
    weights_sha256: str
    exporter: str
    opset: int
    tools: dict[str, str]
    exported_at: str
    # The training split, so quantize and eval find the same held-out text export did.
    corpus: str | None = None
    holdout_fraction: float | None = None
    split_seed: int | None = None
    optimized: OptimizeRecord | None = None
    quantization: dict[str, QuantizationRecord] = field(default_factory=dict)

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from schema.not_negative(self, "checkpoint_step", "parameters")
        yield from schema.sha256(self, "weights_sha256")
        if self.holdout_fraction is not None and not 0 < self.holdout_fraction < 1:
            yield "holdout_fraction", f"must be in (0, 1), not {self.holdout_fraction!r}"


@dataclass
class EvalSettings:
    """How ``gptedge eval`` measured (the same for every variant), and PyTorch's own figures."""

    text: str
    windows: int
    window_tokens: int
    tokens_scored: int
    quality_provider: str
    prompts: int
    rounds: int
    prompt_tokens: int
    new_tokens: int
    threads: int | None
    machine: str
    gptedge: str
    measured_at: str
    pytorch: VariantMetrics | None = None
