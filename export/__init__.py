"""From a checkpoint to a bundle, and from a bundle to a better one.

    gptedge export CHECKPOINT OUT     graph (one ONNX graph with a KV cache) + parity gate (bundle, parity)
    gptedge optimize BUNDLE           fused graph, GroupQueryAttention over a shared cache (optimize)
    gptedge quantize BUNDLE --to P    int8, int4, fp16, int8-static variants (quantize, quantize_*)
    gptedge eval BUNDLE               quality, size and speed of every variant (evaluate)

Every transform reads a valid bundle and writes a valid one, holding the bundle's lock
(``writing``); each records what it did in the manifest (``runtime.records``) and the oldest
onnxruntime its graph needs (``compat``). Uses ``train``'s model and the runtime's contract and
loader, so every check runs the graph as users will.
"""
