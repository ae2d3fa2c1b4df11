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


# A chat template in Hugging Face's form: turn markers, role names, the answer's start.
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def declare_chat_template(bundle: Path, template: str = CHAT_TEMPLATE) -> None:
    """Make ``bundle`` a chat bundle (as gptedge export --chat-template does)."""
    from gptedge.runtime import contract

    manifest = contract.read_manifest(bundle)
    manifest.chat_template = template
    contract.write_manifest(bundle, manifest)


def chat_copy(bundle: Path, folder: Path, template: str) -> Path:
    """A copy of ``bundle`` in ``folder`` that declares ``template`` as its chat template."""
    import shutil

    copy = folder / "bundle"
    shutil.copytree(bundle, copy)
    declare_chat_template(copy, template)
    return copy
