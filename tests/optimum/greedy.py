"""Greedy generation with Hugging Face optimum, for tests/test_package_hf.py.

Runs in the optimum virtual environment (tests/optimum/requirements.txt), never in the main one:
optimum-onnx pins transformers < 4.58.

    greedy.py FOLDER FILE_NAME PROMPT N

loads ``ORTModelForCausalLM.from_pretrained(FOLDER, file_name=FILE_NAME)`` on the CPU provider with
its KV cache, generates exactly N new tokens greedily and prints one JSON line:
{"file_name": ..., "prompt_ids": [...], "new_ids": [...], "prefill_logits_last": [...], "eos_token_id": ...,
"tokenizer_eos_token_id": ..., "tokenizer_pad_token_id": ...} (the special ids optimum's users get).
FILE_NAME may be several names joined by commas (one process, one import of torch and transformers,
one JSON line per file, in order; a file that fails gives {"file_name": ..., "error": traceback}
and the exit status 1, and the others still run). Nothing is downloaded: FOLDER must hold everything.
"""

import json
import os
import sys
import traceback

# Offline before transformers or huggingface_hub is imported: they read these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
from optimum.onnxruntime import ORTModelForCausalLM  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402


def run(folder: str, file_name: str, prompt: str, n: int) -> dict:
    model = ORTModelForCausalLM.from_pretrained(
        folder, file_name=file_name, provider="CPUExecutionProvider", use_cache=True, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    inputs = tokenizer(prompt, return_tensors="pt")  # input_ids and attention_mask, (1, T)

    # The prefill's logits at the last prompt position, from one plain forward call.
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]

    # Exactly N greedy tokens. eos_token_id=None: the end-of-text token neither stops generation nor
    # is masked (min_new_tokens masks it while an eos id is set), as gptedge's ignore_eos=True does.
    out = model.generate(**inputs, do_sample=False, min_new_tokens=n, max_new_tokens=n, eos_token_id=None)
    prompt_ids = inputs["input_ids"][0].tolist()
    return {
        "file_name": file_name,
        "prompt_ids": prompt_ids,
        "new_ids": out[0, len(prompt_ids):].tolist(),
        "prefill_logits_last": logits.float().tolist(),
        # Where a default generate() stops, and what the tokenizer pads a batch with.
        "eos_token_id": model.generation_config.eos_token_id,
        "tokenizer_eos_token_id": tokenizer.eos_token_id,
        "tokenizer_pad_token_id": tokenizer.pad_token_id,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    folder, file_names, prompt, n = argv
    status = 0
    for file_name in file_names.split(","):
        try:
            result = run(folder, file_name, prompt, int(n))
        except Exception:
            result, status = {"file_name": file_name, "error": traceback.format_exc()}, 1
        print(json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
