// Greedy generation with the real transformers.js, fully offline, for tests/test_package_transformersjs.py.
//
//   node tests/node/greedy.mjs FOLDER DTYPE[,DTYPE...] PROMPT N
//
// FOLDER is a model folder as `gptedge package BUNDLE --for transformersjs` writes it (config.json,
// tokenizer.json, tokenizer_config.json, onnx/model*.onnx). DTYPE is a transformers.js dtype, which
// picks the graph file: fp32 -> onnx/model.onnx, q8 -> onnx/model_quantized.onnx,
// q4 -> onnx/model_q4.onnx, int8 -> onnx/model_int8.onnx. Several, comma-separated ("fp32,q8"),
// run one after the other in this one process (starting node and loading the library is the slow part).
//
// Prints one JSON line per dtype:
//   {"dtype": ..., "prompt_ids": [...], "new_ids": [...N ids...], "prefill_logits_last": [...vocab_size floats...]}
// or, where that dtype fails, {"dtype": ..., "error": "..."}, and the next dtype runs. (A missing
// external-data file is an unhandled rejection inside transformers.js: node then exits with 1.)
// prompt_ids: the tokenizer's ids for PROMPT (as a user's call gives them: special tokens as the
// folder's tokenizer_config.json says). new_ids: exactly N greedily chosen tokens, end-of-text
// included if chosen (generation does not stop there). prefill_logits_last: the logits at the last
// prompt position from one forward pass over the prompt.

import path from 'node:path';
import { env, AutoTokenizer, AutoModelForCausalLM } from '@huggingface/transformers';

const [folder, dtypes, prompt, n] = process.argv.slice(2);
const N = Number(n);
if (!folder || !dtypes || prompt === undefined || !Number.isInteger(N) || N < 1) {
    console.error('usage: node greedy.mjs FOLDER DTYPE[,DTYPE...] PROMPT N');
    process.exit(2);
}

// Offline: models come only from local folders; a model id is a folder name under localModelPath.
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(folder)) + path.sep;
const modelId = path.basename(path.resolve(folder));

const tokenizer = await AutoTokenizer.from_pretrained(modelId);
const inputs = tokenizer(prompt); // { input_ids, attention_mask }: int64 tensors of shape [1, T]
const promptIds = Array.from(inputs.input_ids.data, Number); // BigInt64Array -> numbers

for (const dtype of dtypes.split(',')) {
    try {
        console.log(JSON.stringify({ dtype, ...(await greedy(dtype)) }));
    } catch (error) {
        // One dtype failing (a missing file, a graph onnxruntime-node rejects) still lets the others run.
        console.log(JSON.stringify({ dtype, error: String(error?.stack ?? error) }));
    }
}

async function greedy(dtype) {
    const model = await AutoModelForCausalLM.from_pretrained(modelId, { dtype, device: 'cpu' });
    try {
        // One forward pass over the prompt (an empty cache is made for us): logits are [1, T, vocab].
        const { logits } = await model(inputs);
        const [, T, V] = logits.dims;
        const last = Array.from(logits.data.subarray((T - 1) * V, T * V));

        // Greedy, exactly N new tokens: eos_token_id null removes the "stop at end-of-text" rule
        // (min_new_tokens would instead forbid that token, and so change which token greedy picks).
        const output = await model.generate({ ...inputs, do_sample: false, max_new_tokens: N, eos_token_id: null });
        const newIds = Array.from(output.data, Number).slice(promptIds.length); // output: [1, T + N]

        return { prompt_ids: promptIds, new_ids: newIds, prefill_logits_last: last };
    } finally {
        await model.dispose();
    }
}
