"""The demo page, served once per test session on a free localhost port, for the gradio_client tests
and the browser test. Its bundle is the shared test bundle with an int8 variant added by the real
quantizer, so switching variants switches between two real onnxruntime sessions."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DemoServer:
    url: str
    bundle: Path
    pool: object  # gptedge.demo.models.ModelPool


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory, tiny_bundle) -> Path:
    import onnx
    from gptedge.export.quantize_int8 import quantize_int8
    from gptedge.runtime import contract
    bundle = tmp_path_factory.mktemp("demo") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    m = contract.read_bundle(bundle)
    q, _ = quantize_int8(onnx.load(str(bundle / m.variants["fp32"].file)))
    onnx.save(q, str(bundle / "model.int8.onnx"))
    size, sha = contract.describe_file(bundle, "model.int8.onnx")
    m.variants["int8"] = contract.Variant("model.int8.onnx", "int8", size, sha)
    contract.write_manifest(bundle, m)
    return bundle


@pytest.fixture(scope="session")
def demo_server(demo_bundle) -> DemoServer:
    from gptedge.demo.app import serve
    from gptedge.demo.models import ModelPool

    pool = ModelPool(demo_bundle, threads=1)
    port = free_port()
    page = serve(pool, port=port, block=False)
    yield DemoServer(f"http://127.0.0.1:{port}/", demo_bundle, pool)
    page.close()
