// The generation loop on a fake session: no onnxruntime, a model whose next token is a function of
// the tokens in its cache, which the fake keeps in the cache tensors themselves.
import assert from "node:assert/strict";
import { test } from "node:test";
import { generate, window } from "../src/generate.js";
import { mulberry32 } from "../src/sampling.js";

class Tensor {
  constructor(type, data, dims) {
    Object.assign(this, { type, data, dims });
  }
}

const V = 260; // ids 0..255 are bytes, 256 is the end-of-text token
const EOS = 256;
const config = { n_layer: 2, n_head: 1, head_dim: 1, vocab_size: V, context_length: 16, eos_token_id: EOS, pad_token_id: EOS };
const tokenizer = {
  encode: (text) => [...new TextEncoder().encode(text)],
  tokenBytes: (id) => (id < 256 ? Uint8Array.of(id) : new Uint8Array(0)),
};
const greedy = { max_new_tokens: 10, temperature: 0, top_k: 0, top_p: 1, repetition_penalty: 1, stop: [] };

// next(context) -> the token the fake model predicts after context. The key cache holds the token
// ids, the value cache their positions, so the fake can check what it is fed.
function fakeSession(next, C = config.context_length) {
  const calls = [];
  const session = {
    async run(feeds) {
      const ids = Array.from(feeds.input_ids.data, Number);
      const positions = Array.from(feeds.position_ids.data, Number);
      const mask = Array.from(feeds.attention_mask.data, Number);
      const past = feeds["past_key_values.0.key"];
      const P = past.dims[2];
      for (const name of ["input_ids", "position_ids", "attention_mask"]) {
        assert.ok(feeds[name].data instanceof BigInt64Array && feeds[name].type === "int64", name);
      }
      for (let i = 0; i < config.n_layer; i++) {
        assert.deepEqual(feeds[`past_key_values.${i}.value`].dims, [1, 1, P, 1]);
      }
      assert.deepEqual(past.dims, [1, config.n_head, P, config.head_dim]);
      assert.deepEqual(positions, ids.map((_, t) => P + t), "positions continue the past");
      assert.deepEqual(Array.from(feeds["past_key_values.1.value"].data), [...Array(P).keys()], "cached positions 0..P-1");
      assert.deepEqual(mask, Array(P + ids.length).fill(1));
      assert.ok(P + ids.length <= C, "a position past the context");
      calls.push({ past: P, ids, positions });
      const context = [...Array.from(past.data), ...ids];
      const logits = new Float32Array(ids.length * V).fill(-1);
      ids.forEach((_, t) => (logits[t * V + next(context.slice(0, P + t + 1))] = 5));
      const out = { logits: new Tensor("float32", logits, [1, ids.length, V]) };
      const keys = new Tensor("float32", Float32Array.from(context), [1, 1, context.length, 1]);
      const values = new Tensor("float32", Float32Array.from(context.keys()), [1, 1, context.length, 1]);
      for (let i = 0; i < config.n_layer; i++) Object.assign(out, { [`present.${i}.key`]: keys, [`present.${i}.value`]: values });
      return out;
    },
  };
  return { session, calls };
}

async function collect(args) {
  const pieces = [];
  let end;
  for await (const p of generate({ Tensor, tokenizer, config, rng: mulberry32(1), ...args })) {
    if (p.done) end = p;
    else pieces.push(p);
  }
  return { text: pieces.map((p) => p.text).join(""), pieces, end };
}

const plusOne = (ctx) => (ctx.at(-1) + 1) % 256; // "a" -> "b" -> "c" ...

test("prefill, then one token per step: the past grows by one, positions count up", async () => {
  const { session, calls } = fakeSession(plusOne);
  const { text, pieces, end } = await collect({ session, prompt: "abc", settings: { ...greedy, max_new_tokens: 5 } });
  assert.equal(text, "defgh");
  assert.deepEqual(pieces.map((p) => p.token), [..."defgh"].map((c) => c.charCodeAt(0)));
  assert.deepEqual(calls.map((c) => c.past), [0, 3, 4, 5, 6]);
  assert.deepEqual(calls[0].positions, [0, 1, 2]);
  assert.equal(end.stopReason, "length");
  assert.deepEqual(end.tokens, pieces.map((p) => p.token));
  assert.ok(end.ttftMs >= 0 && end.tokensPerS > 0);
});

test("at the end of the context the window slides: the last C - C/4 tokens, prefilled again", async () => {
  // The next token depends on the whole context, so a wrong window gives other tokens.
  const sum = (ctx) => ctx.reduce((a, b) => a + b, 0) % 256;
  const C = config.context_length;
  const prompt = "0123456789";
  const { session, calls } = fakeSession(sum);
  const { end } = await collect({ session, prompt, settings: { ...greedy, max_new_tokens: 20 } });
  // The reference: what the model sees, cut to the window whenever it outgrows the context.
  let context = tokenizer.encode(prompt);
  const expected = [];
  while (expected.length < 20) {
    const t = sum(context);
    expected.push(t);
    context = window([...context, t], C);
  }
  assert.deepEqual(end.tokens, expected);
  const prefills = calls.filter((c) => c.past === 0).map((c) => c.ids.length);
  assert.deepEqual(prefills, [10, 12, 12, 12]); // a slide every C / 4 = 4 tokens after the first
  assert.deepEqual(window([...Array(20).keys()], C), [...Array(20).keys()].slice(-12));
});

test("a prompt longer than the context keeps its last window", async () => {
  const { session, calls } = fakeSession(plusOne);
  const { end } = await collect({ session, prompt: "abcdefghijklmnopqrstuvwxyz", settings: { ...greedy, max_new_tokens: 2 } });
  assert.deepEqual(calls[0].ids, tokenizer.encode("opqrstuvwxyz"));
  assert.equal(end.tokens.length, 2);
});

test("the end-of-text token stops, unless ignoreEos", async () => {
  const eosAfterC = (ctx) => (ctx.at(-1) === 99 ? EOS : plusOne(ctx)); // ... "c" then eos
  const { session } = fakeSession(eosAfterC);
  const { text, end } = await collect({ session, prompt: "a", settings: greedy });
  assert.equal(text, "bc");
  assert.equal(end.stopReason, "eos");
  assert.deepEqual(end.tokens, [98, 99, EOS]);
  const more = await collect({ session, prompt: "a", settings: { ...greedy, max_new_tokens: 4, ignoreEos: true } });
  assert.equal(more.end.stopReason, "length");
  assert.equal(more.end.tokens.length, 4);
});

test("stop strings end generation and are not shown, even split across tokens", async () => {
  const { session } = fakeSession(plusOne);
  const { text, pieces, end } = await collect({ session, prompt: "a", settings: { ...greedy, stop: ["ef", "zz"] } });
  assert.equal(text, "bcd");
  assert.equal(end.stopReason, "stop");
  assert.deepEqual(end.tokens, [98, 99, 100, 101, 102]);
  assert.equal(pieces.at(-2).text, ""); // "e" was held back: it might have started "ef"
});

test("a character split across tokens appears whole", async () => {
  const bytes = [...new TextEncoder().encode("é中")];
  const { session } = fakeSession((ctx) => bytes[ctx.length - 1] ?? EOS);
  const { pieces } = await collect({ session, prompt: "x", settings: greedy });
  assert.deepEqual(pieces.map((p) => p.text), ["", "é", "", "", "中", ""]);
});

test("an empty prompt starts from the end-of-text token; max_new_tokens 0 runs nothing", async () => {
  const { session, calls } = fakeSession(() => 97);
  await collect({ session, prompt: "", settings: { ...greedy, max_new_tokens: 1 } });
  assert.deepEqual(calls[0].ids, [EOS]);
  const none = await collect({ session, prompt: "a", settings: { ...greedy, max_new_tokens: 0 } });
  assert.deepEqual([none.end.stopReason, none.end.tokens, calls.length], ["length", [], 1]);
});

test("an abort signal stops it", async () => {
  const { session } = fakeSession(plusOne);
  const controller = new AbortController();
  const tokens = [];
  let end;
  for await (const p of generate({ session, Tensor, tokenizer, config, prompt: "a", settings: greedy, rng: mulberry32(1), signal: controller.signal })) {
    if (p.done) end = p;
    else if (tokens.push(p.token) === 3) controller.abort();
  }
  assert.equal(end.stopReason, "abort");
  assert.deepEqual(end.tokens, tokens);
  assert.equal(tokens.length, 3);
});

test("sampling with a seed repeats; the repetition penalty sees the window", async () => {
  const { session } = fakeSession(plusOne);
  const sampled = { max_new_tokens: 12, temperature: 1.5, top_k: 0, top_p: 1, repetition_penalty: 1.3, stop: [] };
  const run = async (seed) => (await collect({ session, prompt: "hello", settings: sampled, rng: mulberry32(seed) })).end.tokens;
  assert.deepEqual(await run(5), await run(5));
  assert.notDeepEqual(await run(5), await run(6));
});
