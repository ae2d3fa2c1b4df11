"""docs/DESIGN.md's porting spec names only what exists: each name it quotes is a manifest field, a
graph input or output, a generation setting, a contract function or a file of the repository, so the
spec a port is written from cannot drift from the runtime it describes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gptedge.runtime import GenerationSettings, contract

REPO = Path(__file__).parent.parent


def porting_section() -> str:
    text = (REPO / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    start = text.index("## Porting the runtime")
    return text[start : text.index("\n## ", start + 1)]


def fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


SHAPE = contract.ModelShape(1, 1, 1, 1, 1)
# The graph's names, with the per-layer ones written as the spec writes them.
GRAPH_NAMES = {s.name for s in [*contract.graph_inputs(SHAPE), *contract.graph_outputs(SHAPE)]} | {
    *contract.past_names("{i}"), *contract.present_names("{i}")}


def known(name: str) -> bool:
    """Whether ``name``, quoted in the spec, is something the runtime or the repository has."""
    if name.startswith("model."):
        return name.removeprefix("model.") in fields(contract.ModelShape)
    if name.startswith("variants.<name>."):
        return name.removeprefix("variants.<name>.") in fields(contract.Variant)
    return (
        name in GRAPH_NAMES
        or name in fields(contract.Manifest) | fields(contract.Variant)
        or name in fields(GenerationSettings)
        or name in {contract.MANIFEST_FILE, contract.TOKENIZER_FILE}
        or (name.isidentifier() and hasattr(contract, name))
        or (REPO / name).exists()
    )


def test_every_name_the_porting_spec_quotes_exists():
    quoted = re.findall(r"`([^`]+)`", porting_section())
    assert len(quoted) > 20
    assert [name for name in quoted if not known(name)] == []


def test_the_spec_names_every_graph_input_and_the_format_versions_read():
    section = porting_section()
    for spec in contract.graph_inputs(SHAPE)[:3]:
        assert f"`{spec.name}`" in section
    assert f"above {contract.READS_VERSIONS[-1]}" in section and contract.READS_VERSIONS[-1] == contract.FORMAT_VERSION
