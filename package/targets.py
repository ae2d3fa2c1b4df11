"""``package()``: the targets by name, the checks every package starts with, and the summary."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

from gptedge.errors import UserError
from gptedge.package.folder import Plan, Source, subfolder, write_package
from gptedge.runtime import contract

# target -> the module that plans its folders (each has ``plan(source) -> Plan``)
TARGETS = {
    "genai": "gptedge.package.genai",
    "hf": "gptedge.package.hf",
    "transformersjs": "gptedge.package.transformersjs",
    "mobile": "gptedge.package.mobile",
}


def read_source(bundle: str | Path, variants: Sequence[str] | None) -> Source:
    """The bundle, every file checked against its hash, and the chosen variants (default: all)."""
    manifest = contract.read_bundle(bundle, verify=True)
    chosen = list(dict.fromkeys(variants or manifest.variants))
    unknown = [v for v in chosen if v not in manifest.variants]
    if unknown:
        raise UserError(f"bundle has no variant {', '.join(map(repr, unknown))}: available are "
                        f"{', '.join(manifest.variants)}")
    return Source(Path(bundle), manifest, chosen)


def package(bundle: str | Path, out: str | Path, target: str, variants: Sequence[str] | None = None,
            quiet: bool = False) -> str:
    """Write the package for ``target`` ("all": every target, a sub-folder each); returns a summary."""
    if target != "all" and target not in TARGETS:
        raise UserError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}, or all")
    source = read_source(bundle, variants)
    names = list(TARGETS) if target == "all" else [target]
    plans = [importlib.import_module(TARGETS[name]).plan(source) for name in names]
    if not any(p.folders for p in plans):
        reasons = "; ".join(n for p in plans for n in p.notes)
        raise UserError(f"no chosen variant runs on {target}: {reasons}")
    write_package(Path(out), source, plans, quiet=quiet)
    return summary(Path(out), plans)


def summary(out: Path, plans: list[Plan]) -> str:
    lines = []
    for plan in plans:
        for folder in plan.folders:
            where = out / subfolder(plans, plan, folder)
            lines.append(f"{plan.target}: {where} ({', '.join(folder.variants)})")
            lines += [f"  {n}" for n in folder.notes]
        if not plan.folders:
            lines.append(f"{plan.target}: nothing written")
        lines += [f"  {n}" for n in plan.notes]
    lines.append(f"how to load each folder: {out / 'PACKAGE.md'}")
    return "\n".join(lines)
