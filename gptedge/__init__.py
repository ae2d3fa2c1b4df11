"""gptedge: train a small GPT, export it to ONNX with a KV cache, quantize it, run it anywhere.

The stages live in their own subpackages and depend on each other one way only:
``gptedge.train`` <- ``gptedge.export`` -> ``gptedge.runtime`` <- ``gptedge.demo``.
This root package holds only what every stage shares (errors, atomic file writes) and the CLI;
it imports nothing heavy, so ``import gptedge.runtime`` stays torch-free.
"""

__version__ = "0.1.0"
