"""The demo page in a real browser: headless Chromium (Debian's ``chromium`` package at
/usr/bin/chromium) driven by Playwright. It types a prompt, clicks Generate, waits for the streamed
answer and the stats line, checks that user mistakes show as messages, saves a screenshot, looks
inside the model (attention map, a token's pours, each layer's guesses; another layer chosen),
saves a screenshot of that too, picks a next word by clicking its bar, and records every request
the page makes: none may leave this machine. A chat bundle's page (the shared test bundle declares a
template) also gets a message answered in its Chat tab, and cleared.

The screenshots go to a temporary folder. The README's docs/demo.png and docs/look-inside.png are
made by the same test on the bundle ``gptedge build`` makes:

    GPTEDGE_DEMO_BUNDLE=runs/tiny/bundle GPTEDGE_SCREENSHOT=docs/demo.png pytest tests/test_browser.py
"""

import os
import struct
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

import gptedge.runtime

from fixtures_demo import DemoServer, start_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
# No sandbox (containers run as root), no GPU, and none of Chromium's own background traffic
# (component updates, sync, field trials), so every request recorded is the page's.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
PROMPT = "The for statement is used to"
EXAMPLE = "When an exception is raised,"
CHAT_MESSAGE = "The for"
# Every value the page writes into the answer box, in order: streaming shows as several of them.
RECORD_ANSWER = """
const value = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value");
window.answerValues = [];
Object.defineProperty(HTMLTextAreaElement.prototype, "value", {
    get() { return value.get.call(this); },
    set(text) {
        if (this.closest("#answer")) window.answerValues.push(text);
        value.set.call(this, text);
    },
    configurable: true,
});
"""

# Before a click: forget the answer's values, and whether the box held an answer, whose stats line
# must not be taken for the new one's: a new answer first empties the box.
NEW_ANSWER = """() => {
    window.answerValues = [];
    window.hadAnswer = document.querySelector("#answer textarea").value !== "";
}"""
ANSWERED = ("(!window.hadAnswer || window.answerValues.includes(''))"
            " && document.querySelector('#stats').innerText.includes('tokens/s')")


def streamed_answer(page) -> tuple[str, list[str]]:
    """Generate once: the final answer, and the other values the answer box showed on the way."""
    page.evaluate(NEW_ANSWER)
    page.locator("#generate").click()
    page.wait_for_function(ANSWERED, timeout=60_000)
    answer = page.locator("#answer textarea").input_value()
    return answer, [s for s in page.evaluate("() => window.answerValues") if s and s != answer]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> DemoServer:
    """The shared test server, or one on the bundle named by GPTEDGE_DEMO_BUNDLE (for docs/demo.png)."""
    bundle = os.environ.get("GPTEDGE_DEMO_BUNDLE")
    if not bundle:
        yield request.getfixturevalue("demo_server")
        return
    server = start_server(Path(bundle), tmp_path_factory.mktemp("browser-server"))
    yield server
    stop_server(server)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_page_in_a_real_browser(server, tmp_path):
    screenshot = Path(os.environ.get("GPTEDGE_SCREENSHOT") or tmp_path / "demo.png")
    inside = screenshot.with_name("look-inside.png")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script(RECORD_ANSWER)
            page.on("request", lambda r: requests.append(r.url))
            # Not "networkidle": a page with per-visitor state (the chat's history) keeps a heartbeat open.
            page.goto(server.url, wait_until="load")
            page.locator("#variant").wait_for(timeout=30_000)
            chat_tab = page.get_by_role("tab", name="Chat")
            if chat_tab.count():  # a chat bundle's page opens on its Chat tab: the prompt is in Text
                page.get_by_role("tab", name="Text").click()

            page.locator("#generate").click()  # nothing typed yet
            expect_message(page, "the prompt is empty")
            page.locator("#prompt textarea").fill("x" * 2001)
            page.locator("#generate").click()
            expect_message(page, "more than the 2,000 this page accepts")

            page.locator("#prompt textarea").fill(PROMPT)
            # A long greedy answer (no early end-of-text by chance), so that it takes many page updates
            # to arrive even from the test's tiny model.
            set_number(page, "#max-new-tokens", 400)
            set_number(page, "#temperature", 0)
            # Streamed: the page showed part of the answer before all of it. How many parts depends on
            # how fast the page takes updates, since the model does not wait for it: on a busy machine
            # all of it can arrive at once, so the (greedy, so identical) answer is asked up to 3 times.
            for _ in range(3):
                answer, partial = streamed_answer(page)
                if partial:
                    break
            assert answer and partial and all(answer.startswith(s) for s in partial)

            # An example prompt with the page's own sampling settings, for the stats and the screenshot.
            set_number(page, "#max-new-tokens", 128)
            set_number(page, "#temperature", 0.8)
            page.locator("#examples").get_by_text(EXAMPLE).click()
            page.wait_for_function("([text]) => document.querySelector('#prompt textarea').value === text",
                                   arg=[EXAMPLE], timeout=15_000)
            streamed_answer(page)
            stats = page.locator("#stats").inner_text()
            assert "time to first token" in stats and "tokens" in stats and "stopped by" in stats
            assert page.locator("#answer-tokens .tok").count() > 0
            assert page.locator("#next-word-bars").inner_text().strip()
            page.locator(".toast-close").evaluate_all("buttons => buttons.forEach(b => b.click())")
            page.wait_for_timeout(500)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)

            # Look inside the prompt and the answer: the attention map, where a token looks, each
            # layer's guesses; then another layer, chosen in its dropdown.
            page.locator("#look-inside").click()
            page.locator("#attention-map img").first.wait_for(timeout=60_000)
            page.locator("#attention-pours img").first.wait_for(timeout=60_000)
            page.wait_for_function("document.querySelector('#lens-table').innerText.includes('after layer')",
                                   timeout=30_000)
            first_map = page.locator("#attention-map img").first.get_attribute("src")
            page.locator("#inspect-layer input").click()
            page.get_by_role("option", name="1", exact=True).click()
            page.wait_for_function(
                "([src]) => { const img = document.querySelector('#attention-map img'); return img && img.src !== src; }",
                arg=[first_map], timeout=30_000)
            inside.parent.mkdir(parents=True, exist_ok=True)
            page.locator("#look-inside").scroll_into_view_if_needed()
            page.screenshot(path=str(inside), full_page=True)

            # Clicking a candidate appends it to the prompt (generation by hand).
            page.locator("#next-word-bars .confidence-set").first.click()
            page.wait_for_function(f"document.querySelector('#prompt textarea').value.length > {len(EXAMPLE)}",
                                   timeout=30_000)
            assert page.locator("#prompt textarea").input_value().startswith(EXAMPLE)

            if chat_tab.count():  # a message, its answer in the conversation, then Clear
                chat_tab.click()
                set_number(page, "#temperature", 0)
                page.locator("#chat-message textarea").fill(CHAT_MESSAGE)
                page.locator("#chat-send").click()
                page.wait_for_function("document.querySelector('#chat-stats').innerText.includes('tokens/s')",
                                       timeout=60_000)
                want = gptedge.runtime.load(server.bundle, variant=page.locator("#variant input").input_value()).chat(
                    [{"role": "user", "content": CHAT_MESSAGE}], temperature=0, max_new_tokens=128)
                assert f"{len(want.token_ids)} tokens" in page.locator("#chat-stats").inner_text()
                shown = " ".join(page.locator("#chat").inner_text().split())  # as plain text, not Markdown
                assert shown.endswith(" ".join([CHAT_MESSAGE, *want.text.split()])), shown
                page.locator("#chat-clear").click()
                page.wait_for_function(f"!document.querySelector('#chat').innerText.includes({CHAT_MESSAGE!r})",
                                       timeout=15_000)
        finally:
            browser.close()
    width, height = png_size(screenshot)
    assert width == 1280 and height > 900
    assert png_size(inside)[0] == 1280
    outside = [u for u in requests
               if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname not in LOCAL_HOSTS]
    assert requests and not outside, outside


def set_number(page, slider: str, value: float) -> None:
    box = page.locator(f"{slider} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def expect_message(page, text: str) -> None:
    """A user mistake appears as a toast in the page, not as a traceback."""
    page.locator(".toast-body", has_text=text).first.wait_for(timeout=15_000)
    assert "Traceback" not in page.content()
