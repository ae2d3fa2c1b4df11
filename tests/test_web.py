"""``gptedge web``: the static page runs the model in a real browser (Debian's Chromium, WASM) and
its greedy tokens equal ``gptedge.runtime``'s for the same variant; the page asks no host but the
local server for anything; bad input to the command is one line.

The bundle is the build's layout (optimized, with int4 made from it), so the page's graph is the
one rewritten for onnxruntime-web (GroupQueryAttention's 17th input dropped). docs/web.png is made
by this test on the default build:

    GPTEDGE_WEB_BUNDLE=runs/tiny/bundle GPTEDGE_SCREENSHOT=docs/web.png pytest tests/test_web.py
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import gptedge.runtime
from cli_checks import client_missing, one_line_error
from gptedge.cli import main
from gptedge.runtime import contract
from gptedge.web import site
from gptedge.web.serve import server as static_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
PROMPT = "The for statement is used to"
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def web_bundle(tmp_path_factory, optimized_bundle) -> Path:
    if os.environ.get("GPTEDGE_WEB_BUNDLE"):
        return Path(os.environ["GPTEDGE_WEB_BUNDLE"])
    if not site.ORT_DIST.is_dir():
        client_missing("onnxruntime-web is not installed", f"run npm ci --prefix {site.JS_DIR}")
    from gptedge.export.quantize import quantize_bundle

    bundle = tmp_path_factory.mktemp("web") / "bundle"
    shutil.copytree(optimized_bundle, bundle)
    quantize_bundle(bundle, ["int4"], quiet=True)
    return bundle


@pytest.fixture(scope="module")
def page_url(web_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["web", str(web_bundle), str(out), "--variant", "int4", "-q"]) == 0
    httpd = static_server(out, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", out
    httpd.shutdown()
    httpd.server_close()


def test_the_site_is_a_bundle_with_the_page_and_onnxruntime_web(page_url):
    _, out = page_url
    manifest = contract.read_bundle(out, verify=True)
    assert list(manifest.variants) == ["int4"] and manifest.variants["int4"].file == site.MODEL_FILE
    for name in ("index.html", site.CONFIG_FILE, "tokenizer.json", *(f"ort/{f}" for f in site.ORT_FILES)):
        assert (out / name).is_file(), name
    assert not any("http://" in p.read_text() or "https://" in p.read_text()
                   for p in [out / "index.html", *(out / "src").glob("*.js")])


def test_the_page_generates_what_the_runtime_generates(page_url, web_bundle, tmp_path):
    url, _ = page_url
    screenshot = Path(os.environ.get("GPTEDGE_SCREENSHOT") or tmp_path / "web.png")
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
            page.locator("#prompt").fill(PROMPT)
            page.locator("#temperature").fill("0")
            page.locator("#max-new-tokens").fill(str(NEW_TOKENS))
            page.locator("#generate").click()
            page.wait_for_function("document.body.dataset.done === '1'", timeout=120_000)
            tokens = page.evaluate("() => window.lastTokens")
            stats = page.locator("#stats").inner_text()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    model = gptedge.runtime.load(web_bundle, variant="int4")
    assert tokens == model.generate(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0).token_ids
    assert "wasm" in stats and "tokens/s" in stats and errors == []
    outside = [u for u in requests if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname != "127.0.0.1"]
    assert requests and not outside, outside


def test_bad_input(web_bundle, tmp_path, capsys):
    assert "bundle has no variant 'int3'" in one_line_error(capsys, ["web", str(web_bundle), str(tmp_path / "a"),
                                                                     "--variant", "int3"])
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert "is not a package gptedge wrote" in one_line_error(capsys, ["web", str(web_bundle), str(theirs)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"]
