"""The page's JavaScript (web/js) under Node's own test runner: tokenizer, sampling, text, generation loop.

The tokenizer must give exactly the ids of Python's ``tokenizers``: this test writes the expected ids
of awkward strings, encoded with the shared test tokenizer, to a JSON file that the Node test reads
(GPTEDGE_TOKENIZER_CASES). Needs ``node`` and ``npm ci --prefix web/js`` (nothing is downloaded while
the tests run). Without them the test is skipped, except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tokenizers import Tokenizer

from cli_checks import client_missing

WEB_JS = Path(__file__).parent.parent / "web" / "js"

AWKWARD = [
    "Hello world",
    "naïve café — 42\n\n  If the expression is",
    "don't stop, it's John's; 'S 'T 're 've 'm 'll 'd ''quoted''",
    "😀👍🏽 family: 👨‍👩‍👧 emoji🙂text🙂 🙂",
    "中文字符，日本語のテキスト。한국어 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "e\u0301 a\u0308 n\u0303 combining marks, Ünïcödé ß ẞ Ω ∑ ∞",
    "tabs\tand\t\ttabs\n\nnew  lines   three\n \n",
    "   leading and trailing   ",
    "x\r\ny\rz",
    "a<|endoftext|>b <|pad|> c<|endoftext|><|endoftext|>",
    "teh qiuck borwn fxo jmups ovr teh lazy dgo",
    "3.14159 1,000,000 2024-01-01 0x1F 12abc ١٢٣ Ⅻ",
    "$$$ !!! ??? ... --- >>> ::",
    # whitespace where JavaScript's \s and Unicode's White_Space (the Rust regex's \s) disagree
    "a  \ufeff  b",
    "a  \x85  b \x1c\x1c  c \u00a0nbsp\u3000ideo\u2028ls",
    "",
    " ",
    "aaaaaaaaaaaa",
]


def _require_node() -> str:
    """The path of ``node``; a skip (a failure under CI) when node or web/js/node_modules is missing."""
    node = shutil.which("node")
    missing = ("`node` is not on PATH" if node is None else
               None if (WEB_JS / "node_modules" / "onnxruntime-web").is_dir() else "web/js/node_modules is missing")
    if missing is not None:
        client_missing(missing, "install Node 20+ and run `npm ci --prefix web/js`")
    return node


def test_web_js(tokenizer_file, tmp_path):
    node = _require_node()
    tok = Tokenizer.from_file(str(tokenizer_file))
    cases = [{"text": text, "ids": tok.encode(text, add_special_tokens=False).ids} for text in AWKWARD]
    path = tmp_path / "tokenizer-cases.json"
    path.write_text(json.dumps({"tokenizer": str(tokenizer_file), "cases": cases}), encoding="utf-8")
    # No argument: Node finds test/*.test.mjs itself. (`node --test test/` works on Node 20 only: from
    # Node 22 on a directory argument is taken as a file to run.)
    done = subprocess.run([node, "--test"], cwd=WEB_JS, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GPTEDGE_TOKENIZER_CASES": str(path)})
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"node --test failed ({done.returncode}):\n{output[-8000:]}"
    assert "# skipped 0" in output, f"a Node test was skipped:\n{output[-4000:]}"
