"""How fast, how big and how good a bundle is: one home for measurement.

- ``bench``: speed and memory of each variant per execution provider, each in a worker process
  that imports only the runtime (``gptedge bench``);
- ``pytorch``: the baseline, PyTorch eager with its KV cache, run in a process of its own so the
  two engines never share CPU threads;
- ``genai_bench`` and ``genai_builder``: gptedge beside onnxruntime-genai, on the same graph
  (``--genai``) and beside genai's own builder's model of the same size (``--genai-builder``,
  in a venv of its own that runs ``genai_worker`` by path);
- ``tables`` and ``machine``: the console tables, the charts and the description of the machine
  that ``gptedge bench`` and ``gptedge eval`` share.

``gptedge eval`` (the quality harness, ``export.evaluate``) writes its figures into the bundle and
uses these for its speed figures and reports. Measured figures live in the reports these write
and in the README, never in docstrings.
"""
