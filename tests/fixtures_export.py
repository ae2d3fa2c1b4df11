"""The exported bundle of the shared test model, made once per test session by the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def export_checkpoint(trained_checkpoint) -> Path:
    """The checkpoint the shared bundle is exported from: the shared trained test model."""
    return trained_checkpoint


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, export_checkpoint) -> Path:
    from gptedge.cli import main

    out = tmp_path_factory.mktemp("export") / "bundle"
    assert main(["export", str(export_checkpoint), str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def optimized_bundle(tmp_path_factory, tiny_bundle) -> Path:
    """A copy of ``tiny_bundle`` after the real ``gptedge optimize``: its fp32 variant is the fused
    graph with the shared (preallocated) cache, the layout users of ``gptedge build`` get."""
    import shutil

    from gptedge.cli import main

    out = tmp_path_factory.mktemp("optimized") / "bundle"
    shutil.copytree(tiny_bundle, out)
    assert main(["optimize", str(out), "--quiet"]) == 0
    return out


def chat_copy(bundle: Path, folder: Path, template: str) -> Path:
    """A copy of ``bundle`` in ``folder`` that declares ``template`` as its chat template."""
    import shutil

    from gptedge.runtime import contract

    copy = folder / "bundle"
    shutil.copytree(bundle, copy)
    manifest = contract.read_manifest(copy)
    manifest.chat_template = template
    contract.write_manifest(copy, manifest)
    return copy
