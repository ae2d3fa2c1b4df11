"""The demo page in a real browser: headless Chromium (Debian's ``chromium`` package at
/usr/bin/chromium) driven by Playwright. It types a prompt, clicks Generate, waits for the streamed
answer and the stats line, checks that user mistakes show as messages, saves a screenshot, picks a
next word by clicking its bar, and records every request the page makes: none may leave this
machine.

The screenshot goes to a temporary folder. The README's docs/demo.png is made by the same test on
the bundle ``gptedge build`` makes:

    GPTEDGE_DEMO_BUNDLE=runs/tiny/bundle GPTEDGE_SCREENSHOT=docs/demo.png pytest tests/test_browser.py
"""

import os
import struct
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

from fixtures_demo import DemoServer, start_server, stop_server

CHROMIUM = "/usr/bin/chromium"
# No sandbox (containers run as root), no GPU, and none of Chromium's own background traffic
# (component updates, sync, field trials), so every request recorded is the page's.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
PROMPT = "The for statement is used to"


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> DemoServer:
    """The shared test server, or one on the bundle named by GPTEDGE_DEMO_BUNDLE (for docs/demo.png)."""
    bundle = os.environ.get("GPTEDGE_DEMO_BUNDLE")
    if not bundle:
        yield request.getfixturevalue("demo_server")
        return
    server = start_server(Path(bundle).resolve(), tmp_path_factory.mktemp("browser-server"))
    yield server
    stop_server(server)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_page_in_a_real_browser(server, tmp_path):
    screenshot = Path(os.environ.get("GPTEDGE_SCREENSHOT") or tmp_path / "demo.png")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server.url, wait_until="networkidle")

            page.locator("#generate").click()  # nothing typed yet
            expect_message(page, "the prompt is empty")
            page.locator("#prompt textarea").fill("x" * 2001)
            page.locator("#generate").click()
            expect_message(page, "more than the 2,000 this page accepts")

            page.locator("#prompt textarea").fill(PROMPT)
            # A long answer, so that it takes many page updates to arrive even from the test's tiny model.
            page.locator("#max-new-tokens input[type=number]").fill("400")
            page.locator("#max-new-tokens input[type=number]").press("Enter")
            # Streaming: record every value the answer box takes while the answer arrives.
            page.evaluate("""() => {
                window.seen = new Set();
                const box = document.querySelector('#answer textarea');
                window.watch = setInterval(() => window.seen.add(box.value), 1);
            }""")
            page.locator("#generate").click()
            page.wait_for_function("document.querySelector('#stats').innerText.includes('tokens/s')", timeout=60_000)
            seen = page.evaluate("() => { clearInterval(window.watch); return [...window.seen]; }")
            answer = page.locator("#answer textarea").input_value()
            partial = [s for s in seen if s and s != answer]
            assert answer and all(answer.startswith(s) for s in partial)
            assert len(partial) >= 2, f"not streamed: the answer box took {len(partial)} partial values"
            print(f"the answer arrived in {len(partial) + 1} updates")
            stats = page.locator("#stats").inner_text()
            assert "time to first token" in stats and "tokens" in stats and "stopped by" in stats
            assert page.locator("#answer-tokens .tok").count() > 0
            assert page.locator("#next-word-bars").inner_text().strip()
            page.locator(".toast-close").evaluate_all("buttons => buttons.forEach(b => b.click())")
            page.wait_for_timeout(500)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)

            # Clicking a candidate appends it to the prompt (generation by hand).
            page.locator("#next-word-bars .confidence-set").first.click()
            page.wait_for_function(f"document.querySelector('#prompt textarea').value.length > {len(PROMPT)}",
                                   timeout=30_000)
            assert page.locator("#prompt textarea").input_value().startswith(PROMPT)
        finally:
            browser.close()
    width, height = png_size(screenshot)
    assert width == 1280 and height > 900
    outside = [u for u in requests
               if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname not in LOCAL_HOSTS]
    assert requests and not outside, outside


def expect_message(page, text: str) -> None:
    """A user mistake appears as a toast in the page, not as a traceback."""
    page.locator(".toast-body", has_text=text).first.wait_for(timeout=15_000)
    assert "Traceback" not in page.content()
