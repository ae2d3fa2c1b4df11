"""``gptedge package --for hf``, checked by Hugging Face optimum itself: ``ORTModelForCausalLM``
loads each CPU variant of the package unmodified (``file_name=`` its bundle file), and its tokenizer
and ``generate`` give the same prompt ids, the same 16 greedy tokens, the same prefill logits
(within 1e-4) and the same end-of-text and padding ids as ``gptedge.runtime``, for both cache
layouts (the exported concat graph, and the optimized GroupQueryAttention graph, whose past has the
fixed-name dim max_sequence_length: optimum feeds it a zero-length past, then each present).

optimum-onnx pins transformers < 4.58, so it runs in a virtual environment of its own
(tests/optimum/requirements.txt; .ci/run makes it) through tests/optimum/greedy.py: one process per
package, all its variants in one go (each start imports torch and transformers: seconds)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cli_checks import client_missing

import gptedge.runtime
from gptedge.cli import main
from gptedge.runtime.next_token import _logits

REPO = Path(__file__).resolve().parents[1]
GREEDY = REPO / "tests" / "optimum" / "greedy.py"
OPTIMUM_PYTHON = Path(os.environ.get("GPTEDGE_OPTIMUM_PYTHON") or REPO / ".venv-optimum" / "bin" / "python")
MAKE_VENV = ("python3 -m venv .venv-optimum && .venv-optimum/bin/pip install -q torch==2.13.0 && "
             ".venv-optimum/bin/pip install -q -r tests/optimum/requirements.txt")

PROMPT = "The for statement"
NEW_TOKENS = 16
# The variants onnxruntime's CPU provider runs (fp16 is for GPUs), per package.
CASES = [("exported", "fp32"), ("exported", "int8"), ("exported", "int4"), ("exported", "int8-static"),
         ("optimized", "fp32")]


@pytest.fixture(scope="module")
def optimum_python() -> Path:
    if not OPTIMUM_PYTHON.exists():
        client_missing(f"no optimum venv at {OPTIMUM_PYTHON}",
                       f"set GPTEDGE_OPTIMUM_PYTHON, or run in the repo root: {MAKE_VENV}")
    return OPTIMUM_PYTHON


@pytest.fixture(scope="module")
def hf_packages(tmp_path_factory, optimum_python, quantized_bundle, optimized_bundle):
    """Each bundle packaged by the real CLI, and what optimum made of each of its CPU variants:
    {layout: (bundle, {variant: greedy.py's result})}."""
    out = tmp_path_factory.mktemp("hf")
    packages = {}
    for layout, bundle in (("exported", quantized_bundle), ("optimized", optimized_bundle)):
        folder = out / layout
        assert main(["package", str(bundle), "--for", "hf", "--quiet", str(folder)]) == 0
        variants = [v for name, v in CASES if name == layout]
        entries = json.loads((folder / "manifest.json").read_text())["variants"]
        files = [entries[v]["file"] for v in variants]
        run = subprocess.run(
            [str(optimum_python), str(GREEDY), str(folder), ",".join(files), PROMPT, str(NEW_TOKENS)],
            capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        lines = run.stdout.splitlines()
        assert len(lines) == len(files), f"greedy.py exited with {run.returncode}:\n{run.stderr[-4000:]}"
        packages[layout] = (bundle, dict(zip(variants, map(json.loads, lines))))
    return packages


@pytest.mark.parametrize("layout,variant", CASES)
def test_optimum_generates_what_gptedge_generates(hf_packages, layout, variant):
    bundle, results = hf_packages[layout]
    got = results[variant]
    if "error" in got:
        pytest.fail(f"optimum failed on {got['file_name']}:\n{got['error']}")
    model = gptedge.runtime.load(bundle, variant=variant, provider="cpu")
    m = model.manifest
    assert (got["eos_token_id"], got["tokenizer_eos_token_id"], got["tokenizer_pad_token_id"]) == (
        m.eos_token_id, m.eos_token_id, m.pad_token_id)
    ids = model.encode(PROMPT)
    assert got["prompt_ids"] == ids
    # Within the context: past it gptedge slides its window and optimum does not, a difference by design.
    assert len(ids) + NEW_TOKENS <= model.context_length
    expected = model.generate(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True).token_ids
    assert len(set(expected)) > 1, "one token repeated cannot show a misfed cache: choose another PROMPT"
    assert got["new_ids"] == expected
    reference = _logits(model.decoder, ids)[-1]
    np.testing.assert_allclose(np.asarray(got["prefill_logits_last"]), reference, rtol=0, atol=1e-4)
