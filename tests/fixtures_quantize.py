"""The shared bundle with every quantized variant, made once per test session by the real CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# The order the fixture adds them in: a target (two variants in one run), then one precision at a time.
QUANTIZE_STEPS = (["--target", "cpu"], ["--to", "fp16"], ["--to", "int8-static"])


@pytest.fixture(scope="session")
def quantized_bundle(tmp_path_factory, tiny_bundle) -> Path:
    """A copy of ``tiny_bundle`` with int8, int4, fp16 and int8-static added; the manifest and every
    file's hash are checked after each step (the fixture fails if any step leaves them invalid)."""
    from gptedge.cli import main
    from gptedge.runtime import contract

    out = tmp_path_factory.mktemp("quantize") / "bundle"
    shutil.copytree(tiny_bundle, out)
    for args in QUANTIZE_STEPS:
        assert main(["quantize", str(out), *args, "--quiet"]) == 0
        contract.read_bundle(out, verify=True)
    return out
