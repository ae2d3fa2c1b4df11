"""``gptedge web --serve``: the folder on 127.0.0.1, as any static file server would serve it,
plus the two headers that make the page cross-origin isolated (so WebAssembly may use threads)."""

from __future__ import annotations

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gptedge.errors import UserError


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript",
                      ".wasm": "application/wasm", ".json": "application/json"}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: the page's own requests are not news
        pass


def server(folder: Path, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    try:
        return ThreadingHTTPServer((host, port), functools.partial(Handler, directory=str(folder)))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): pick another --port") from None


def serve(folder: Path, port: int) -> None:
    httpd = server(folder, port)
    print(f"serving {folder} on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
