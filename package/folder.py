"""What a package folder holds, and the one writer that puts it on disk.

A target plans ``Folder``s; ``write_package`` then, under the output folder's lock:
- refuses an output folder that exists and is not a package gptedge wrote (never a user's files);
- stages everything under a temporary name: graph files hard-linked from the bundle (copied
  where a link is impossible), side files written, converted graphs made;
- gives each folder a manifest listing exactly the variants it carries, re-hashing the files it
  made, and verifies every file against it (a package is still a gptedge bundle);
- writes ``PACKAGE.md`` (what was left out or changed, and why) and ``gptedge-package.json``;
- moves the result into place in one rename, replacing an older package only when all is ready.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from gptedge import __version__, atomic
from gptedge.errors import UserError, write_error
from gptedge.runtime import contract

MARKER_FILE = "gptedge-package.json"  # what makes a folder one of our packages (safe to replace)
NOTES_FILE = "PACKAGE.md"


@dataclass
class Source:
    """The bundle being packaged, read and verified once, and the variants the user chose."""

    path: Path
    manifest: contract.Manifest
    variants: list[str]

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def tokenizer(self) -> Path:
        record = self.manifest.tokenizer  # None only in a version-1 manifest
        return self.file(record.file if record else contract.TOKENIZER_FILE)


@dataclass
class Folder:
    """One folder a target's runtime loads.

    ``variants`` are manifest entries as they will be in this folder (file names included);
    ``links`` maps a file name here to a bundle file; ``texts`` are side files; ``makers`` write a
    converted file (a graph a variant now points at) into the staged folder; ``notes`` say, one
    line each, what was left out or changed and why."""

    name: str  # sub-folder of the package ("" for its top)
    variants: dict[str, contract.Variant] = field(default_factory=dict)
    links: dict[str, Path] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    makers: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """One target's folders, with what the target is, for the notes and the marker."""

    target: str
    title: str
    folders: list[Folder]
    notes: list[str] = field(default_factory=list)  # about the target as a whole
    usage: str = ""  # Markdown: how a client loads it; {folder}: the target's folder; {parent}, {name}


def json_text(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def check_output(out: Path, bundle: Path) -> None:
    """An output folder we may write: new, empty, or a package we wrote before (replaced)."""
    if out.resolve() == bundle.resolve() or bundle.resolve() in out.resolve().parents:
        raise UserError(f"{out} is inside the bundle {bundle}: write the package to a folder of its own")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out} is a file: pass a new folder for the package")
        if any(out.iterdir()) and not (out / MARKER_FILE).is_file():
            raise UserError(f"{out} exists and is not a package gptedge wrote: pass a new folder "
                            f"(an old package is replaced, other folders are never touched)")


def write_package(out: Path, source: Source, plans: list[Plan], quiet: bool = False) -> None:
    out = Path(out)
    check_output(out, source.path)
    work = sum(len(f.links) + len(f.makers) + 1 for p in plans for f in p.folders)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic.locked(out), atomic.staged_dir(out, replace=True) as stage:
            atomic.remove_leftovers(out.parent, name=out.name)
            check_output(out, source.path)  # again, under the lock: another writer may have been first
            with tqdm(total=work, desc="package", unit="file", disable=quiet, file=sys.stderr) as bar:
                for plan in plans:
                    for folder in plan.folders:
                        _write_folder(stage / subfolder(plans, plan, folder), source, folder, bar)
            (stage / NOTES_FILE).write_text(notes_markdown(out, source, plans), encoding="utf-8")
            (stage / MARKER_FILE).write_text(json_text(_marker(source, plans)), encoding="utf-8")
    except OSError as e:
        raise write_error(e, out, "gptedge package again") from None


def subfolder(plans: list[Plan], plan: Plan, folder: Folder) -> str:
    """Where a folder goes in the package: under its target's name when there are several."""
    return str(Path(plan.target if len(plans) > 1 else "", folder.name))


def _write_folder(path: Path, source: Source, folder: Folder, bar: tqdm) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, src in folder.links.items():
        bar.set_postfix_str(name)
        _link(src, path / name)
        bar.update()
    for name, text in folder.texts.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    made = set(folder.makers)
    for name, make in folder.makers.items():
        bar.set_postfix_str(f"making {name}")
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        make(path / name)
        bar.update()
    variants = {}
    for key, v in folder.variants.items():
        if v.file in made:
            size, digest = contract.describe_file(path, v.file)
            v = dataclasses.replace(v, size_bytes=size, sha256=digest)
        variants[key] = v
    manifest = dataclasses.replace(source.manifest, variants=variants)
    contract.write_manifest(path, manifest)
    contract.read_bundle(path, verify=True)  # a package that is not a valid bundle is our bug
    bar.update()


def _link(src: Path, dest: Path) -> None:
    """A hard link where the file system allows one (no second copy of the weights), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _marker(source: Source, plans: list[Plan]) -> dict:
    return {
        "gptedge": __version__,
        "source": str(source.path.resolve()),
        "targets": {p.target: {subfolder(plans, p, f) or ".": sorted(f.variants) for f in p.folders} for p in plans},
    }


def notes_markdown(out: Path, source: Source, plans: list[Plan]) -> str:
    """PACKAGE.md: per target, how to load it, what each folder holds, and what was left out."""
    lines = [f"# Packages of {source.path.name}", "",
             f"Written by gptedge {__version__} from `{source.path}`. Every folder is also a gptedge "
             "bundle (its `manifest.json` lists exactly the files it holds). Graph files and "
             "`tokenizer.json` are hard links to the bundle's: replace such a file, never edit it in place.", ""]
    for plan in plans:
        top = out / (plan.target if len(plans) > 1 else "")
        lines += [f"## {plan.title}", ""]
        lines += [f"- {n}" for n in plan.notes]
        if plan.usage:
            lines += ["", plan.usage.format(folder=top.resolve(), parent=top.resolve().parent,
                                                    name=top.resolve().name), ""]
        for folder in plan.folders:
            held = ", ".join(f"{k} (`{v.file}`)" for k, v in folder.variants.items())
            lines += [f"### `{subfolder(plans, plan, folder) or '.'}`", "", f"Variants: {held}.", ""]
            lines += [f"- {n}" for n in folder.notes]
            lines.append("")
    return "\n".join(lines)
