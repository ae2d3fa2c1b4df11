"""The demo page, served once per test session on a free localhost port, for the gradio_client tests
and the browser test. Its bundle is the shared test bundle with an int8 variant added by the real
quantizer, so switching variants switches between two real onnxruntime sessions."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
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
    connections: list = field(default_factory=list)  # every address this process connected to while serving


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory, tiny_bundle) -> Path:
    from gptedge.export.quantize import quantize_bundle

    bundle = tmp_path_factory.mktemp("demo") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    quantize_bundle(bundle, ["int8"], quiet=True)
    return bundle


@pytest.fixture(scope="session")
def demo_server(demo_bundle) -> DemoServer:
    from gptedge.demo.app import serve
    from gptedge.demo.models import ModelPool

    server = DemoServer("", demo_bundle, ModelPool(demo_bundle, threads=1))
    connect = socket.socket.connect

    def recording_connect(sock, address):  # gradio's telemetry and version check would go through here
        server.connections.append(address)
        return connect(sock, address)

    socket.socket.connect = recording_connect
    try:
        port = free_port()
        page = serve(server.pool, port=port, block=False)
        server.url = f"http://127.0.0.1:{port}/"
        yield server
        page.close()
    finally:
        socket.socket.connect = connect
