"""``gptedge package BUNDLE --for transformersjs`` writes a folder the real transformers.js loads as is.

The shared quantized bundle (and the optimized one, whose fp32 is the fused GroupQueryAttention graph)
is packaged once by the real CLI; one Node process per package (tests/node/greedy.mjs,
npm ``@huggingface/transformers`` pinned in tests/node/package.json) then loads each graph from the
folder offline on the CPU and reports the prompt's ids, 16 greedy tokens and the prefill logits,
which must equal what ``gptedge.runtime`` gives for the same variant of the bundle.

Needs ``node`` and ``npm ci --prefix tests/node`` (no download happens while the tests run). Without
them the tests skip, except under CI (``CI`` set), where they fail: CI must run them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cli_checks import client_missing
from fixtures_export import chat_copy

# The bundles come through request.getfixturevalue (so that a skip comes before building them), which
# conftest's automatic marking does not see: these tests train, export and quantize, so they are slow.
pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "greedy.mjs"
LIBRARY = NODE_DIR / "node_modules" / "@huggingface" / "transformers" / "package.json"

# Bundle variant -> (transformers.js dtype, the graph file that dtype loads). fp16 is left out:
# transformers.js's CPU path is not where fp16 graphs are meant to run.
VARIANTS = {
    "fp32": ("fp32", "onnx/model.onnx"),
    "int8": ("q8", "onnx/model_quantized.onnx"),
    "int4": ("q4", "onnx/model_q4.onnx"),
    "int8-static": ("int8", "onnx/model_int8.onnx"),
}
# Accents, a dash, digits, a blank line and double spaces, so the two tokenizers are compared on more
# than plain words; the shared test model continues it differently at each precision (so a package
# whose files are swapped fails on tokens too, not only on logits).
PROMPT = "naïve café — 42\n\n  If the expression is"
NEW_TOKENS = 16
LOGITS_TOLERANCE = 1e-4


def _require_node() -> str:
    """The path of ``node``; a skip (a failure under CI) when node or the npm packages are missing."""
    node = shutil.which("node")
    missing = ("`node` is not on PATH" if node is None else
               None if LIBRARY.is_file() else "tests/node/node_modules is missing")
    if missing is not None:
        client_missing(missing, "install Node 20+ and run `npm ci --prefix tests/node`")
    return node


def _package_and_run(request, tmp_path_factory, bundle_fixture: str) -> tuple[Path, Path, dict[str, dict]]:
    """(bundle, package folder, {dtype: greedy.mjs result}): the bundle packaged by the real CLI, then
    every dtype the folder has run by one Node process. The folder's name is the model id."""
    node = _require_node()  # before building anything: a skip should be quick
    bundle = request.getfixturevalue(bundle_fixture)
    from gptedge.cli import main

    out = tmp_path_factory.mktemp(f"transformersjs-{bundle_fixture}") / "tinygpt"
    assert main(["package", str(bundle), "--for", "transformersjs", "--quiet", str(out)]) == 0
    dtypes = ",".join(dtype for dtype, file in VARIANTS.values() if (out / file).is_file())
    # No network: greedy.mjs sets allowRemoteModels = false; HF_HUB_OFFLINE is a second guard.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([node, str(SCRIPT), str(out), dtypes, PROMPT, str(NEW_TOKENS)],
                          capture_output=True, text=True, timeout=300, env=env)
    if done.returncode != 0:
        pytest.fail(f"node {SCRIPT.name} exited with {done.returncode}:\n{done.stderr[-4000:]}")
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["dtype"]] = result
    return bundle, out, results


@pytest.fixture(scope="session")
def quantized_package(request, tmp_path_factory):
    """The shared bundle with every quantized variant (exported fp32 graph: concatenated cache)."""
    return _package_and_run(request, tmp_path_factory, "quantized_bundle")


@pytest.fixture(scope="session")
def optimized_package(request, tmp_path_factory):
    """The optimized bundle: its fp32 is the fused GroupQueryAttention graph with the shared cache."""
    return _package_and_run(request, tmp_path_factory, "optimized_bundle")


@pytest.mark.parametrize("package, variant", [("quantized", v) for v in VARIANTS] + [("optimized", "fp32")],
                         ids=[*VARIANTS, "optimized-fp32"])
def test_transformersjs_greedy_equals_runtime(request, package, variant):
    from gptedge import runtime
    from gptedge.runtime.next_token import _logits

    bundle, folder, results = request.getfixturevalue(f"{package}_package")
    dtype, file = VARIANTS[variant]
    assert (folder / file).is_file(), f"the package has no {file} for the bundle's {variant} variant"
    result = results.get(dtype)
    assert result is not None, f"greedy.mjs printed nothing for dtype {dtype}"
    assert "error" not in result, f"transformers.js failed on {file} (dtype {dtype}):\n{result['error']}"

    model = runtime.load(bundle, variant=variant, provider="cpu")
    ids = model.encode(PROMPT)
    assert result["prompt_ids"] == ids, "transformers.js tokenizes the prompt differently from the bundle's tokenizer"

    expected = model.generate(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True).token_ids
    assert len(expected) == NEW_TOKENS
    assert result["new_ids"] == expected, f"{dtype}: transformers.js's greedy tokens differ from gptedge.runtime's"

    theirs = np.asarray(result["prefill_logits_last"], dtype=np.float64)
    ours = _logits(model.decoder, ids)[-1]
    assert theirs.shape == ours.shape
    diff = float(np.abs(theirs - ours).max())
    assert diff <= LOGITS_TOLERANCE, f"{dtype}: prefill logits differ by up to {diff:.3g} (tolerance {LOGITS_TOLERANCE})"


# A Zephyr-style template: turns ended by eos_token, trim_blocks and lstrip_blocks at work on the
# line breaks and indentation, a loop variable; transformers.js renders it with its own Jinja.
CHAT_TEMPLATE = """{% for message in messages %}
    {% if message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
    {% else %}
{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "naïve — what is a for loop?"},
            {"role": "assistant", "content": "A loop."}, {"role": "user", "content": "And while?"}]


def test_transformersjs_lays_out_chat_messages_as_the_runtime(tmp_path, optimized_bundle):
    """A chat bundle's template travels in tokenizer_config.json; transformers.js's
    apply_chat_template then gives the prompt ``Model.chat_prompt`` gives."""
    node = _require_node()
    from gptedge import runtime
    from gptedge.cli import main

    bundle = chat_copy(optimized_bundle, tmp_path, CHAT_TEMPLATE)
    out = tmp_path / "package" / "chatgpt"
    assert main(["package", str(bundle), "--for", "transformersjs", "--quiet", str(out)]) == 0
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    done = subprocess.run([node, str(NODE_DIR / "chat.mjs"), str(out), json.dumps(MESSAGES)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    ours = runtime.load(bundle, variant="fp32", provider="cpu").chat_prompt(MESSAGES)
    assert ours.startswith("<|system|>\nAnswer briefly.<|endoftext|>") and ours.endswith("<|assistant|>\n")
    assert json.loads(done.stdout.strip().splitlines()[-1])["prompt"] == ours
