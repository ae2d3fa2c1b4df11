"""``gptedge eval``: one harness that measures every variant of a bundle the same way.

Quantization that quietly makes a model worse is the failure this guards against, so every
variant (and the PyTorch checkpoint, when given) gets the same figures from the same tokens:

- quality, from full prefills of held-out text cut into non-overlapping windows of context_length
  tokens (``runtime.decoder.Decoder``, on CPU for every variant):
    perplexity           exp(mean negative log-likelihood of each window's tokens 2..T)
    max_abs_logit_diff   largest |logit - fp32 logit| over every position of every window
    top1_agreement       share of positions whose most likely next token is fp32's
- behaviour and speed, through the runtime itself (``gptedge.runtime.load(...).generate``) on the
  provider the runtime picks for the variant (or ``--provider``):
    greedy_agreement     per prompt, the share of generated tokens before the first one that
                         differs from fp32's greedy continuation; averaged over the prompts
    load_s               runtime.load (hash check and onnxruntime session)
    ttft_ms, decode_tokens_per_s   the runtime's own timings of those generations (median over
                         ROUNDS x PROMPTS runs, the variants taking turns)
- size: the variant's files on disk.

PyTorch figures come from the checkpoint's own forward and ``train.sample.generate`` (its KV-cache
loop), and its speed from ``measure.pytorch`` in a separate process, so torch's
threads never compete with onnxruntime's. Speed is measured before anything loads torch.

Outputs: a table, eval.json, eval.md and eval.png in --out (``measure.eval_report``), and each variant's
figures in its manifest ``metrics`` (the harness settings in ``manifest.eval``), written atomically.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from tqdm import tqdm

import gptedge
from gptedge.errors import UserError
from gptedge.export.writing import writing
from gptedge.measure import machine
from gptedge.measure.eval_report import write_reports
from gptedge.measure.pytorch import run_baseline
from gptedge.runtime import Decoder, PREFILL_LOGITS, contract, providers, records

if TYPE_CHECKING:  # annotations only
    from gptedge.train.checkpoint_config import CheckpointConfig

PROMPTS = 4  # greedy continuations per variant
ROUNDS = 2  # times each prompt is generated, for the speed figures
PROMPT_TOKENS = 32
PYTORCH = "pytorch"  # the checkpoint's entry name in the report


@dataclass
class EvalResult:
    report: dict[str, Any]
    files: list[Path]


@dataclass
class Quality:
    """Running sums over the windows for one engine."""

    nll: float = 0.0
    scored: int = 0
    max_abs_logit_diff: float = 0.0
    agree: int = 0
    positions: int = 0

    def add(self, logits: np.ndarray, windows: np.ndarray, reference: np.ndarray) -> None:
        """logits and reference (B, T, V) float32, windows (B, T) token ids."""
        logits = logits.astype(np.float32, copy=False)
        top = logits.max(axis=-1, keepdims=True)  # (B, T, 1)
        lse = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]  # (B, T)
        target = np.take_along_axis(logits[:, :-1], windows[:, 1:, None], axis=-1)[..., 0]  # (B, T - 1)
        self.nll += float((lse[:, :-1] - target).sum(dtype=np.float64))
        self.scored += target.size
        self.max_abs_logit_diff = max(self.max_abs_logit_diff, float(np.abs(logits - reference).max()))
        self.agree += int((logits.argmax(-1) == reference.argmax(-1)).sum())
        self.positions += logits.shape[0] * logits.shape[1]

    def figures(self) -> dict[str, float]:
        return {
            "perplexity": float(np.exp(self.nll / self.scored)),
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "top1_agreement": self.agree / self.positions,
        }


def full_windows(tokens: np.ndarray, context_length: int) -> np.ndarray:
    """(N, context_length): the text cut into whole, non-overlapping windows (the rest dropped)."""
    n = len(tokens) // context_length
    if n == 0:
        raise UserError(
            f"the held-out text has {len(tokens)} tokens, fewer than one window of the model's context "
            f"({context_length}): give a longer --text"
        )
    return tokens[: n * context_length].reshape(n, context_length).astype(np.int64)


def greedy_prompts(tokens: np.ndarray, context_length: int, new_tokens: int) -> tuple[list[list[int]], int]:
    """PROMPTS prompts spread over the text, and the new tokens per prompt (fitted into the
    context, so every engine continues within one window and the checkpoint can too)."""
    if new_tokens < 2:
        raise UserError(f"--new-tokens {new_tokens} is too few: generate at least 2 tokens")
    length = min(PROMPT_TOKENS, context_length // 4)
    starts = np.linspace(0, len(tokens) - length, num=PROMPTS).astype(int)
    return [tokens[s : s + length].tolist() for s in starts], min(new_tokens, context_length - length)


def evaluate_bundle(
    bundle_dir: str | Path,
    text_file: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    provider: str = "auto",
    threads: int | None = None,
    new_tokens: int = 128,
    quiet: bool = False,
) -> EvalResult:
    bundle_dir = Path(bundle_dir)
    contract.read_manifest(bundle_dir)  # not a bundle: said before taking its lock
    with writing(bundle_dir, "eval"):  # no optimize or quantize changes the files meanwhile
        return _evaluate(bundle_dir, text_file, checkpoint_dir, out_dir, provider, threads, new_tokens, quiet)


def _evaluate(
    bundle_dir: Path,
    text_file: str | Path | None,
    checkpoint_dir: str | Path | None,
    out_dir: str | Path | None,
    provider: str,
    threads: int | None,
    new_tokens: int,
    quiet: bool,
) -> EvalResult:
    from gptedge.export.heldout import Split, heldout_text
    from gptedge.runtime import read_tokenizer

    out_dir = Path(out_dir) if out_dir is not None else bundle_dir / "eval"
    manifest = contract.read_bundle(bundle_dir)  # every file's hash is checked here
    if "fp32" not in manifest.variants:
        raise UserError(f"{bundle_dir} has no fp32 variant to measure against: re-export the bundle")
    if provider != "auto":
        providers.resolve(provider)  # an unknown or missing provider fails before any work
    options = providers.session_options(threads)
    info = _checkpoint_info(bundle_dir, checkpoint_dir, manifest) if checkpoint_dir else None
    split = Split.of_checkpoint(info) if info is not None else Split.of_bundle(manifest.provenance)
    text = heldout_text(split, read_tokenizer(bundle_dir, manifest), text_file)
    shape = manifest.model
    windows = full_windows(text.tokens, shape.context_length)
    prompts, n_new = greedy_prompts(text.tokens, shape.context_length, new_tokens)

    # Speed first, before anything loads torch into this process.
    runs = _runtime_figures(bundle_dir, manifest, provider, threads, prompts, n_new, quiet)
    entries = {
        name: {"precision": v.precision, "file": v.file, "sha256": v.sha256, "size_bytes": v.total_bytes}
        for name, v in manifest.for_generation().items()
    }
    engines: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        name: _onnx_logits(bundle_dir / v.file, manifest, options) for name, v in manifest.for_generation().items()
    }
    if checkpoint_dir:
        pytorch = _PyTorch(Path(checkpoint_dir), info)
        runs[PYTORCH] = pytorch.runtime_figures(prompts, n_new, threads)
        engines[PYTORCH] = pytorch.logits
        entries[PYTORCH] = {"precision": "fp32 (PyTorch)", "file": pytorch.weights.name, "size_bytes": pytorch.weights.stat().st_size}
    quality = _quality(engines, windows, shape.vocab_size, quiet)
    _compare(entries, {name: q.figures() for name, q in quality.items()}, runs)
    settings = {
        "text": text.description,
        "windows": int(windows.shape[0]),
        "window_tokens": shape.context_length,
        "tokens_scored": int(windows.shape[0] * (shape.context_length - 1)),
        "quality_provider": "cpu",
        "prompts": len(prompts),
        "rounds": ROUNDS,
        "prompt_tokens": len(prompts[0]),
        "new_tokens": n_new,
        "threads": threads,
        "machine": machine.describe(),
        "gptedge": gptedge.__version__,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    report = {"bundle": str(bundle_dir), "model": asdict(shape), "settings": settings, "entries": entries}
    files = write_reports(report, out_dir)
    _write_metrics(bundle_dir, report)
    return EvalResult(report, files)


def _compare(entries: dict[str, dict[str, Any]], quality: dict[str, dict[str, float]], runs: dict[str, dict[str, Any]]) -> None:
    """Every entry's figures, and each one's ratio to fp32's."""
    fp32, fp32_run = entries["fp32"], runs["fp32"]
    for name, entry in entries.items():
        entry.update(quality[name])
        entry.update(runs[name])
        entry["size_vs_fp32"] = entry["size_bytes"] / fp32["size_bytes"]
        entry["perplexity_vs_fp32_pct"] = 100 * (entry["perplexity"] / quality["fp32"]["perplexity"] - 1)
        entry["greedy_agreement"] = _greedy_agreement(runs[name].get("tokens"), fp32_run.get("tokens"))
        if entry.get("decode_tokens_per_s") and fp32_run.get("decode_tokens_per_s"):
            entry["decode_vs_fp32"] = entry["decode_tokens_per_s"] / fp32_run["decode_tokens_per_s"]


def _checkpoint_info(bundle_dir: Path, checkpoint_dir: str | Path, manifest: contract.Manifest) -> CheckpointConfig:
    """The checkpoint's config.json, refusing one the bundle was not exported from."""
    from gptedge.train.checkpoint_config import read_config

    from gptedge.export.bundle import check_exported_from

    info = read_config(checkpoint_dir)
    check_exported_from(bundle_dir, manifest, checkpoint_dir, Path(checkpoint_dir) / info.weights)
    return info


# ---------------------------------------------------------------------------------------------
# Generation and speed, through the runtime


def _runtime_figures(
    bundle_dir: Path,
    manifest: contract.Manifest,
    provider: str,
    threads: int | None,
    prompts: list[list[int]],
    n_new: int,
    quiet: bool,
) -> dict[str, dict[str, Any]]:
    """Load every variant through the runtime, then, ``ROUNDS`` times, let every variant in turn
    generate all the prompts (the order rotating), so a burst of other work on the machine slows
    all variants alike instead of one; speed is the median over all runs.

    A turn is a whole round of prompts after a short untimed generation: each session keeps its
    own onnxruntime thread pool, whose threads spin on for a while after a run, and switching
    variants after every prompt measured every variant at about half its speed alone."""
    from gptedge.runtime import load

    figures: dict[str, dict[str, Any]] = {}
    models = {}
    for name in manifest.for_generation():
        try:
            _, chosen = providers.choose(manifest, name, provider)
        except UserError as e:  # e.g. fp16 on a machine with no GPU provider
            figures[name] = {"provider": None, "not_run": str(e)}
            continue
        start = time.perf_counter()
        models[name] = load(bundle_dir, variant=name, provider=chosen.name, threads=threads)
        figures[name] = {"provider": chosen.name, "load_s": time.perf_counter() - start}
    greedy = dict(temperature=0.0, ignore_eos=True, stop=(), repetition_penalty=1.0)
    names = list(models)
    results: dict[str, list[Any]] = {name: [] for name in names}
    turns = [names[r % len(names):] + names[: r % len(names)] for r in range(ROUNDS)] if names else []
    with tqdm(total=ROUNDS * len(names) * len(prompts), desc="eval: generate", unit="prompt", disable=quiet,
              file=sys.stderr, leave=False) as progress:
        for order in turns:
            for name in order:
                models[name].generate(prompts[0], max_new_tokens=min(16, n_new), **greedy)  # untimed: settle
                for prompt in prompts:
                    results[name].append(models[name].generate(prompt, max_new_tokens=n_new, **greedy))
                    progress.update()
    for name, runs in results.items():
        figures[name].update({
            "ttft_ms": 1000 * statistics.median(r.ttft_s for r in runs),
            "decode_tokens_per_s": statistics.median(r.tokens_per_s for r in runs),
            "tokens": [r.token_ids for r in runs[: len(prompts)]],  # greedy: every round is the same
        })
    return figures


def _greedy_agreement(tokens: list[list[int]] | None, reference: list[list[int]] | None) -> float | None:
    if tokens is None or reference is None:
        return None
    shares = []
    for ours, ref in zip(tokens, reference):
        same = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), min(len(ours), len(ref)))
        shares.append(same / len(ref))
    return float(np.mean(shares))


# ---------------------------------------------------------------------------------------------
# Quality, from full windows


def _onnx_logits(path: Path, manifest: contract.Manifest, options: Any) -> Callable[[np.ndarray], np.ndarray]:
    decoder = Decoder(path, manifest, options=options)

    def logits(windows: np.ndarray) -> np.ndarray:
        B, T = windows.shape
        positions = np.ascontiguousarray(np.broadcast_to(np.arange(T, dtype=np.int64), (B, T)))
        return decoder.empty_cache(B).run(windows, np.ones((B, T), np.int64), positions)  # (B, T, V)

    return logits


def _quality(
    engines: dict[str, Callable[[np.ndarray], np.ndarray]], windows: np.ndarray, vocab: int, quiet: bool
) -> dict[str, Quality]:
    """Every engine on the same batches of windows, compared with fp32 batch by batch (so no
    engine's logits for the whole text are ever held)."""
    quality = {name: Quality() for name in engines}
    batch = max(1, PREFILL_LOGITS // (windows.shape[1] * vocab))
    starts = range(0, len(windows), batch)
    for start in tqdm(starts, desc="eval: perplexity", unit="batch", disable=quiet, file=sys.stderr, leave=False):
        x = windows[start : start + batch]
        reference = engines["fp32"](x)
        for name, run in engines.items():
            logits = reference if name == "fp32" else run(x)
            quality[name].add(logits, x, reference)
    return quality


class _PyTorch:
    """The checkpoint as the harness's extra engine (torch imported only here)."""

    def __init__(self, path: Path, info: CheckpointConfig) -> None:
        self.path = path
        self.weights = path / info.weights
        self.model = None
        self.load_s = 0.0

    def _model(self):
        if self.model is None:
            from gptedge.train.checkpoint import load_checkpoint

            start = time.perf_counter()
            self.model = load_checkpoint(self.path).model.eval()
            self.load_s = time.perf_counter() - start
        return self.model

    def logits(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out, _ = self._model()(torch.from_numpy(windows))
        return out.numpy()

    def runtime_figures(self, prompts: list[list[int]], n_new: int, threads: int | None) -> dict[str, Any]:
        """Speed in a separate process first (``measure.pytorch``), then greedy tokens here."""
        from gptedge.train.sample import generate

        speed = run_baseline(self.path, len(prompts[0]), n_new, threads or os.cpu_count() or 1)
        model = self._model()
        tokens = [generate(model, p, n_new, temperature=0.0) for p in prompts]
        return {
            "provider": "torch",
            "load_s": self.load_s,
            "ttft_ms": speed["ttft_ms"],
            "decode_tokens_per_s": speed["decode_tokens_per_s"],
            "tokens": tokens,
        }


METRIC_KEYS = tuple(f.name for f in fields(records.VariantMetrics))  # what goes into the manifest


def _write_metrics(bundle_dir: Path, report: dict[str, Any]) -> None:
    """Each measured variant's figures into its manifest entry, the shared settings (and the
    PyTorch figures) into ``manifest.eval``; variants changed meanwhile are left alone."""
    manifest = contract.read_manifest(bundle_dir)
    for name, entry in report["entries"].items():
        variant = manifest.variants.get(name)
        if variant is not None and variant.sha256 == entry.get("sha256"):
            variant.metrics = _metrics(entry)
    pytorch = report["entries"].get(PYTORCH)
    manifest.eval = records.EvalSettings(**report["settings"], pytorch=_metrics(pytorch) if pytorch else None)
    contract.write_manifest(bundle_dir, manifest)


def _metrics(entry: dict[str, Any]) -> records.VariantMetrics:
    return records.VariantMetrics(**{k: entry[k] for k in METRIC_KEYS if entry.get(k) is not None})
