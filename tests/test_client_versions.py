"""The onnxruntime each client ships, as the packaging code assumes it, agrees with the lock files
the clients are installed from: a client upgraded in its lock file but not in the code (or back)
would package graphs it refuses, or rewrite graphs it would run as they are."""

from __future__ import annotations

import json
from pathlib import Path

from gptedge.package import transformersjs
from gptedge.runtime import contract
from gptedge.web import site

ROOT = Path(__file__).resolve().parent.parent


def locked_version(lock: Path, package: str) -> str:
    return json.loads(lock.read_text())["packages"][f"node_modules/{package}"]["version"]


def major_minor(version: str) -> tuple[int, ...]:
    return contract.version_tuple(version)[:2]


def test_transformersjs_runs_the_onnxruntime_node_of_its_lock_file():
    locked = locked_version(ROOT / "tests" / "node" / "package-lock.json", "onnxruntime-node")
    assert major_minor(locked) == major_minor(transformersjs.ONNXRUNTIME)


def test_the_web_page_ships_the_onnxruntime_web_of_its_lock_file():
    locked = locked_version(site.JS_DIR / "package-lock.json", "onnxruntime-web")
    assert major_minor(locked) == major_minor(site.ONNXRUNTIME)
    assert json.loads((site.JS_DIR / "package.json").read_text())["dependencies"]["onnxruntime-web"] == locked
