// A chat prompt as the real transformers.js lays it out, offline, for tests/test_package_transformersjs.py.
//
//   node tests/node/chat.mjs FOLDER MESSAGES_JSON
//
// FOLDER is a model folder as `gptedge package BUNDLE --for transformersjs` writes it; its
// tokenizer_config.json carries the bundle's chat template. Prints one JSON line:
//   {"prompt": "...the template rendered for MESSAGES, with the generation prompt..."}

import path from 'node:path';
import { env, AutoTokenizer } from '@huggingface/transformers';

const [folder, messages] = process.argv.slice(2);
if (!folder || !messages) {
    console.error('usage: node chat.mjs FOLDER MESSAGES_JSON');
    process.exit(2);
}
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(folder)) + path.sep;

const tokenizer = await AutoTokenizer.from_pretrained(path.basename(path.resolve(folder)));
const prompt = tokenizer.apply_chat_template(JSON.parse(messages), { tokenize: false, add_generation_prompt: true });
console.log(JSON.stringify({ prompt }));
