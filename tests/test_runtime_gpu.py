"""On a machine with a CUDA device (onnxruntime-gpu): the fp16 variant runs there, with its cache
kept on the device between steps (IO binding), and greedy decoding agrees with fp32 on the CPU.
Skipped where this onnxruntime offers no CUDA provider (the project's own machines have none)."""

from __future__ import annotations

import pytest

import gptedge.runtime
from gptedge.runtime import providers

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif("cuda" not in providers.available(), reason="this onnxruntime offers no CUDA provider"),
]


def test_fp16_on_cuda_agrees_with_fp32_on_the_cpu(quantized_bundle):
    gpu = gptedge.runtime.load(quantized_bundle, variant="fp16", provider="cuda")
    cpu = gptedge.runtime.load(quantized_bundle, variant="fp32", provider="cpu")
    assert gpu.decoder.io_binding and gpu.decoder.device == "cuda"
    prompts = ["The for statement", "A class definition"]
    on_gpu = gpu.generate(prompts, max_new_tokens=8, temperature=0, ignore_eos=True)
    on_cpu = cpu.generate(prompts, max_new_tokens=8, temperature=0, ignore_eos=True)
    for a, b in zip(on_gpu, on_cpu):
        assert a.token_ids[:4] == b.token_ids[:4]  # fp16 may part ways later on a near tie
