"""The demo page, served once per test session by the real ``gptedge demo`` command in its own
process, for the gradio_client tests and the browser test.

The server process runs as on a device: importing torch, onnx or onnxscript raises there. It also
writes down every host it looks up or connects to (offline, a telemetry call fails at the name
lookup, before any connect, so both are watched), and on SIGUSR1 which heavy modules it loaded.
Its bundle is the shared test bundle as ``gptedge build`` leaves it: optimized (the shared cache)
with an int8 variant added by the real quantizer, so switching variants switches between two real
onnxruntime sessions, and an inspection variant; it also declares a chat template, for the Chat tab.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from blockers import BLOCK_HEAVY
from fixtures_export import declare_chat_template

SERVER = BLOCK_HEAVY + textwrap.dedent("""
    import json, signal, socket, sys

    record = open(sys.argv[1], "a", encoding="utf-8")

    def write(**entry):
        record.write(json.dumps(entry) + "\\n")
        record.flush()


    getaddrinfo, connect = socket.getaddrinfo, socket.socket.connect

    def recording_getaddrinfo(host, *args, **kwargs):
        write(host=host.decode() if isinstance(host, bytes) else str(host))
        return getaddrinfo(host, *args, **kwargs)

    def recording_connect(sock, address):
        if isinstance(address, tuple):
            write(host=str(address[0]))
        return connect(sock, address)

    socket.getaddrinfo, socket.socket.connect = recording_getaddrinfo, recording_connect
    # On SIGUSR1: which of the modules a device lacks did the server load?
    signal.signal(signal.SIGUSR1, lambda *_: write(modules=sorted(
        m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxscript"))))

    from gptedge.cli import main
    sys.exit(main(["demo", *sys.argv[2:]]))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the server did not answer within {timeout} s:\n{log.read_text()}")


@dataclass
class DemoServer:
    url: str
    bundle: Path
    record: Path  # JSON lines: {"host": ...} per lookup or connect, {"modules": [...]} on SIGUSR1
    proc: subprocess.Popen

    def hosts(self) -> set[str]:
        return {e["host"] for e in self._entries() if "host" in e}

    def heavy_modules(self) -> list[str]:
        """Modules of torch, onnx or onnxscript the server has loaded by now."""
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(100):
            found = [e["modules"] for e in self._entries() if "modules" in e]
            if found:
                return found[-1]
            time.sleep(0.1)
        raise RuntimeError("the demo server did not answer SIGUSR1")

    def _entries(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text(encoding="utf-8").splitlines()]


def start_server(bundle: Path, folder: Path) -> DemoServer:
    port = free_port()
    record, log = folder / "record.jsonl", folder / "server.log"
    record.touch()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(record), str(bundle), "--port", str(port), "--threads", "1"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    server = DemoServer(f"http://127.0.0.1:{port}/", bundle, record, proc)
    try:
        wait_until_up(server.url, proc, log)
    except BaseException:
        proc.kill()
        raise
    return server


def stop_server(server: DemoServer) -> int:
    """Ctrl-C, as a user stops it; returns the exit code."""
    server.proc.send_signal(signal.SIGINT)
    try:
        return server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        return server.proc.wait()


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory, optimized_bundle, export_checkpoint) -> Path:
    from gptedge.export.inspection import make_inspection_variant
    from gptedge.export.quantize import quantize_bundle

    bundle = tmp_path_factory.mktemp("demo") / "bundle"
    shutil.copytree(optimized_bundle, bundle)
    quantize_bundle(bundle, ["int8"], quiet=True)
    make_inspection_variant(bundle, export_checkpoint, quiet=True)  # the page's Look inside
    declare_chat_template(bundle)  # the page's Chat tab
    return bundle


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory, demo_bundle) -> DemoServer:
    server = start_server(demo_bundle, tmp_path_factory.mktemp("demo-server"))
    yield server
    stop_server(server)
