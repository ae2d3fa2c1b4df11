"""Execution providers by short name, and the choice of provider and variant for ``load``.

onnxruntime names its hardware back ends ``CUDAExecutionProvider`` and so on; a build (wheel)
contains only some of them: the PyPI ``onnxruntime`` wheel has CPU only, ``onnxruntime-gpu`` adds
CUDA and TensorRT, ``onnxruntime-directml`` DirectML, the Android/iOS packages NNAPI, CoreML and
XNNPACK, ``onnxruntime-qnn`` QNN. Users and bundles speak of them by short name ("cpu", "cuda").

``auto`` walks ``AUTO_ORDER`` and takes the first provider this build offers that the variant suits.
TensorRT is never picked by ``auto``: it builds an engine per input shape, and a KV cache changes
shape every token, so it is only worth it when named on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnxruntime as ort

from gptedge.errors import UserError
from gptedge.runtime import contract


@dataclass(frozen=True)
class Provider:
    name: str  # short name, as bundles and the CLI write it
    ep: str  # onnxruntime's execution provider name
    device: str  # where its tensors live, as IO binding names it ("cpu", "cuda", "dml", "webgpu")
    runs_any_float_graph: bool  # takes every fp32/fp16 node (no per-variant opt-in needed)


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("cpu", "CPUExecutionProvider", "cpu", True),
        Provider("cuda", "CUDAExecutionProvider", "cuda", True),
        Provider("tensorrt", "TensorrtExecutionProvider", "cuda", True),
        Provider("directml", "DmlExecutionProvider", "dml", True),
        Provider("coreml", "CoreMLExecutionProvider", "cpu", False),
        Provider("nnapi", "NnapiExecutionProvider", "cpu", False),
        Provider("xnnpack", "XnnpackExecutionProvider", "cpu", False),
        Provider("qnn", "QNNExecutionProvider", "cpu", False),
        Provider("webgpu", "WebGpuExecutionProvider", "webgpu", True),
    )
}
ALIASES = {"dml": "directml", "trt": "tensorrt"}
# Best first. Mobile NPUs come before XNNPACK and CPU but only for variants that list them.
AUTO_ORDER = ("cuda", "directml", "webgpu", "qnn", "coreml", "nnapi", "xnnpack", "cpu")
GPU_PRECISIONS = ("fp16", "fp32")  # what a GPU provider prefers when the variant is "auto"


def available() -> list[str]:
    """Short names of the providers this onnxruntime build offers, in ``PROVIDERS`` order."""
    eps = set(ort.get_available_providers())
    return [p.name for p in PROVIDERS.values() if p.ep in eps]


def resolve(name: str) -> Provider:
    """The provider for a short name; a one-line UserError if unknown or not in this build."""
    key = ALIASES.get(name.lower(), name.lower())
    have = available()
    if key not in PROVIDERS:
        raise UserError(f"unknown provider {name!r}: use auto or one of {', '.join(have)} (available in this build)")
    if key not in have:
        raise UserError(
            f"provider {key!r} is not in this onnxruntime build: available are {', '.join(have)} "
            f"(install the onnxruntime package built for {key}, e.g. onnxruntime-gpu for cuda)"
        )
    return PROVIDERS[key]


def suits(variant: contract.Variant, provider: Provider) -> bool:
    """Whether a variant is meant to run on a provider.

    fp16 never runs on CPU (onnxruntime emulates it there, slower than fp32). Providers that take
    every float node run fp32 and fp16 variants; otherwise the variant must list the provider
    (quantized contrib ops and NPU-shaped graphs run only where the exporter says they do). The
    optimized fp32 graph is an exception: its GroupQueryAttention has no fp32 kernel on GPU
    providers (CUDA's takes fp16 and bf16), so onnxruntime would run it on the CPU and copy the
    cache to and from the device every step; its fp16 conversion is the GPU variant.
    """
    if variant.precision == "fp16" and provider.name == "cpu":
        return False
    if provider.name in variant.providers:
        return True
    if variant.precision == "fp32" and variant.cache_layout == "shared":
        return False
    return provider.runs_any_float_graph and variant.precision in GPU_PRECISIONS


def choose(manifest: contract.Manifest, variant: str, provider: str) -> tuple[str, Provider]:
    """Pick (variant name, provider) for ``load``; either may be "auto".

    With both "auto": the first provider in ``AUTO_ORDER`` that this build offers and some variant
    suits. The variant for a provider is, on GPUs, fp16 then fp32; elsewhere the first suitable one
    in manifest order (the exporter lists its recommendation first).
    """
    if variant != "auto" and variant not in manifest.variants:
        raise UserError(f"bundle has no variant {variant!r}: available are auto, {', '.join(manifest.variants)}")
    runnable = [n for n, v in manifest.variants.items() if onnxruntime_runs(v)]
    if variant != "auto" and variant not in runnable or not runnable:
        name = variant if variant != "auto" else min(manifest.variants, key=lambda n: _needs(manifest.variants[n]))
        needs = manifest.variants[name].min_onnxruntime
        others = [n for n in runnable if n != name]
        raise UserError(
            f"variant {name!r} needs onnxruntime >= {needs}, this is onnxruntime {ort.__version__}: "
            f"pip install -U 'onnxruntime>={needs}'" + (f", or pick --variant {' / '.join(others)}" if others else "")
        )
    if provider != "auto":
        candidates = [resolve(provider)]
    else:
        have = available()
        candidates = [PROVIDERS[n] for n in AUTO_ORDER if n in have]
    for p in candidates:
        names = [variant] if variant != "auto" else [n for n in _preference(manifest, p)
                                                     if n in manifest.for_generation()]
        for name in (n for n in names if n in runnable):
            if suits(manifest.variants[name], p):
                return name, p
    if variant != "auto":
        v = manifest.variants[variant]
        where = candidates[0].name if provider != "auto" else ", ".join(c.name for c in candidates)
        raise UserError(
            f"variant {variant!r} ({v.precision}, meant for {', '.join(v.providers) or 'no provider'}) "
            f"does not run on {where}: pick another --variant or --provider"
        )
    raise UserError(
        f"no variant of this bundle runs on {candidates[0].name}: "
        f"pick --provider from {', '.join(available())} or re-export with a variant for it"
    )


def onnxruntime_runs(variant: contract.Variant) -> bool:
    """Whether the installed onnxruntime is at least the oldest that runs the variant's graph."""
    return _needs(variant) <= contract.version_tuple(ort.__version__)


def _needs(variant: contract.Variant) -> tuple[int, ...]:
    return contract.version_tuple(variant.min_onnxruntime)


def _preference(manifest: contract.Manifest, provider: Provider) -> list[str]:
    names = list(manifest.variants)
    if provider.device == "cpu":
        return names
    rank = {precision: i for i, precision in enumerate(GPU_PRECISIONS)}
    return sorted(names, key=lambda n: rank.get(manifest.variants[n].precision, len(rank)))


OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(threads: int | None, optimization: str = "all", provider: str = "cpu") -> ort.SessionOptions:
    """One session runs one request at a time: intra-op threads do the work, inter-op stays at 1."""
    if optimization not in OPTIMIZATION_LEVELS:
        raise UserError(f"unknown optimization level {optimization!r}: use one of {', '.join(OPTIMIZATION_LEVELS)}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads={threads!r} is invalid: use a positive whole number, or leave it unset")
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
    if provider == "directml":  # DirectML rejects sessions with memory patterns (its documented rule)
        options.enable_mem_pattern = False
    return options


def ep_list(provider: Provider) -> list[str | tuple[str, dict]]:
    """The providers list for InferenceSession: the chosen one, then CPU for nodes it cannot take."""
    if provider.name == "cpu":
        return [provider.ep]
    if provider.name == "tensorrt":  # CUDA takes the nodes TensorRT cannot
        return [provider.ep, PROVIDERS["cuda"].ep, "CPUExecutionProvider"]
    return [provider.ep, "CPUExecutionProvider"]
