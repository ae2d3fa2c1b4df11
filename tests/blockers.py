"""The one import blocker: Python source that makes importing torch, onnx or onnxscript fail, for
subprocesses that must prove they run on a device, where those packages are absent."""

import textwrap

HEAVY = ("torch", "onnx", "onnxscript")

BLOCK_HEAVY = textwrap.dedent(f"""
    import sys
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ImportError("a device has no " + name + ": this code must not import it")
    sys.meta_path.insert(0, Blocker())
""")
