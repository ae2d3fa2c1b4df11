"""The one import blocker: Python source that makes importing torch, onnx or onnxscript fail, for
subprocesses that must prove they run on a device, where those packages are absent."""

import textwrap

HEAVY = ("torch", "onnx", "onnxscript")


def blocking(packages: tuple[str, ...]) -> str:
    """Source that makes importing any of ``packages`` fail in the interpreter that runs it."""
    return textwrap.dedent(f"""
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {packages!r}:
                    raise ImportError("this code must not import " + name)
        sys.meta_path.insert(0, Blocker())
    """)


BLOCK_HEAVY = blocking(HEAVY)
