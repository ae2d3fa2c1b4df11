"""The dependency boundary: every module of the runtime, the server and the demo imports on a device, where
torch, onnx and onnxscript are absent, and pulls in no module of gptedge.train or gptedge.export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blockers import HEAVY, blocking

ROOT = Path(__file__).resolve().parent.parent


def modules(folder: str, package: str) -> list[str]:
    return sorted(f"{package}.{p.stem}" if p.stem != "__init__" else package for p in (ROOT / folder).glob("*.py"))


def imports_cleanly(names: list[str], blocked: tuple[str, ...] = HEAVY,
                    ours: tuple[str, ...] = ("gptedge.train", "gptedge.export")) -> None:
    """Import ``names`` in a fresh interpreter where the ``blocked`` packages cannot be imported;
    fail if any of them, or any of ``ours`` (modules of gptedge they must not reach), got loaded."""
    script = blocking(blocked) + textwrap.dedent(f"""
        import importlib, json
        for name in {names!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r} or m.startswith({ours!r}))
        print(json.dumps(loaded))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_every_runtime_module_imports_on_a_device():
    names = modules("runtime", "gptedge.runtime") + modules("serve", "gptedge.serve") + modules("inside", "gptedge.inside") + [
        "gptedge", "gptedge.cli", "gptedge.schema", "gptedge.atomic"]
    assert len(names) > 10  # the glob found the package
    imports_cleanly(names)


def test_every_demo_module_imports_on_a_device():
    pytest.importorskip("gradio", reason="the demo extra is not installed (a runtime-only install)")
    imports_cleanly(modules("demo", "gptedge.demo"))


def test_package_modules_never_import_torch():
    """``gptedge package`` runs on onnx and onnxruntime's tools: no torch, nothing of train/."""
    pytest.importorskip("onnx", reason="the export extra is not installed (a runtime-only install)")
    imports_cleanly(modules("package", "gptedge.package"), blocked=("torch",), ours=("gptedge.train",))
