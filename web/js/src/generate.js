// The generation loop (runtime/generation.py for one prompt): prefill the prompt, then one token per
// step through the KV cache, sliding the window at the end of the context.
//
// The graph (runtime/contract.py): inputs input_ids, attention_mask, position_ids (int64, (1, T)),
// past_key_values.{i}.key/.value (float32, (1, n_head, P, head_dim)); outputs logits (1, T, V) and
// present.{i}.key/.value (1, n_head, P + T, head_dim), fed back as the next step's past.
//
// The model learned absolute positions 0..C-1, so when the next token would need position C the
// loop keeps the last W = C - C//4 tokens and prefills them again from position 0; the next C//4
// tokens then go through the cache again.

import { chooseToken } from "./sampling.js";
import { StopStrings, StreamDecoder } from "./text.js";

const PREFILL_LOGITS = 8 * 1024 * 1024; // logits (floats) per prefill chunk: a long prompt with a
                                        // 50 K vocabulary would otherwise return hundreds of MB of them

// The tokens kept when they no longer fit in the context: the last C - C//4.
export function window(tokens, contextLength) {
  if (tokens.length <= contextLength) return tokens;
  return tokens.slice(-(contextLength - Math.floor(contextLength / 4)));
}

// Yields {text, token} for every generated token (text is what became showable, maybe ""), then
// {done: true, stopReason, tokens, ttftMs, tokensPerS}. stopReason: "eos", "stop" (a stop string),
// "length" (max_new_tokens) or "abort" (signal). tokens: every generated id, an ending eos included.
//   session: an onnxruntime-web InferenceSession (anything with run(feeds) -> {name: Tensor})
//   Tensor: ort.Tensor (new Tensor(type, data, dims))
//   tokenizer: a Tokenizer (encode, tokenBytes); config: web.json's "model"
//   settings: web.json's "sampling" fields plus stop (string[]) and ignoreEos (boolean)
//   rng: a function giving numbers in [0, 1); signal: an optional AbortSignal
export async function* generate({ session, Tensor, tokenizer, config, prompt, settings, rng, signal }) {
  const started = performance.now();
  const C = config.context_length;
  const V = config.vocab_size;
  let ids = tokenizer.encode(prompt);
  if (!ids.length) ids = [config.eos_token_id]; // an empty prompt starts a new document, as in training
  let tokens = window(ids, C); // the window the model sees: prompt + generated
  const generated = [];
  const decoder = new StreamDecoder((id) => tokenizer.tokenBytes(id));
  const stops = new StopStrings(settings.stop ?? []);
  const penalty = settings.repetition_penalty !== 1;
  let seen = penalty ? seenFlags(tokens, V) : null;
  let firstAt = 0;
  let lastAt = 0;

  const int64 = (values) => new Tensor("int64", BigInt64Array.from(values, BigInt), [1, values.length]);
  const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);
  // Run the tokens `fresh` (positions width, width + 1, ...) after `past` (the cache of `width`
  // tokens): the last token's logits and the presents, renamed as the next step's past.
  async function forward(fresh, width, past) {
    const feeds = {
      input_ids: int64(fresh),
      attention_mask: int64(new Array(width + fresh.length).fill(1)),
      position_ids: int64(range(width, width + fresh.length)),
      ...past,
    };
    const out = await session.run(feeds);
    if (out.logits.type !== "float32") throw new Error(`the page needs float32 logits, this variant gives ${out.logits.type}`);
    const present = {};
    for (let i = 0; i < config.n_layer; i++) {
      present[`past_key_values.${i}.key`] = out[`present.${i}.key`];
      present[`past_key_values.${i}.value`] = out[`present.${i}.value`];
    }
    const T = fresh.length;
    return { logits: out.logits.data.subarray((T - 1) * V, T * V), past: present };
  }
  // Prefill the window from position 0, in chunks of at most PREFILL_LOGITS logits.
  async function prefill() {
    const empty = new Tensor("float32", new Float32Array(0), [1, config.n_head, 0, config.head_dim]);
    let state = { past: {} };
    for (let i = 0; i < config.n_layer; i++) {
      state.past[`past_key_values.${i}.key`] = empty;
      state.past[`past_key_values.${i}.value`] = empty;
    }
    const chunk = Math.max(1, Math.floor(PREFILL_LOGITS / V));
    for (let start = 0; start < tokens.length; start += chunk) {
      state = await forward(tokens.slice(start, start + chunk), start, state.past);
    }
    return { ...state, width: tokens.length }; // width: tokens in the cache
  }
  // The final text piece and stop reason once generation ends for `reason` (not a stop string).
  function finish(reason) {
    const [shown, stopped] = stops.feed(decoder.flush());
    return stopped ? [shown, "stop"] : [shown + stops.finish(), reason];
  }
  const done = (stopReason) => ({
    done: true,
    stopReason,
    tokens: generated,
    ttftMs: generated.length ? firstAt - started : 0,
    tokensPerS: generated.length > 1 && lastAt > firstAt ? ((generated.length - 1) * 1000) / (lastAt - firstAt) : 0,
  });

  if (settings.max_new_tokens === 0) {
    yield done("length");
    return;
  }
  let state = await prefill();
  for (;;) {
    if (signal?.aborted) {
      yield done("abort");
      return;
    }
    const token = chooseToken(state.logits, settings, seen, rng);
    lastAt = performance.now();
    if (!generated.length) firstAt = lastAt;
    generated.push(token);
    tokens.push(token);
    if (seen) seen[token] = 1;

    let text;
    let stopReason = null;
    if (token === config.eos_token_id && !settings.ignoreEos) [text, stopReason] = finish("eos");
    else {
      let stopped;
      [text, stopped] = stops.feed(decoder.push(token));
      if (stopped) stopReason = "stop";
      else if (generated.length >= settings.max_new_tokens) {
        const [rest, reason] = finish("length");
        [text, stopReason] = [text + rest, reason];
      }
    }
    yield { text, token };
    if (stopReason) {
      yield done(stopReason);
      return;
    }

    if (state.width >= C) {
      // The next token would need position C: keep the window's last W tokens, prefill them again.
      tokens = window(tokens, C);
      if (seen) seen = seenFlags(tokens, V); // the penalty looks at the window, as in Python
      state = await prefill();
    } else {
      state = { ...(await forward([token], state.width, state.past)), width: state.width + 1 };
    }
  }
}

// A 0/1 flag per token id: which ids the tokens hold.
function seenFlags(tokens, V) {
  const seen = new Uint8Array(V);
  for (const t of tokens) seen[t] = 1;
  return seen;
}
