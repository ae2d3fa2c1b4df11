import assert from "node:assert/strict";
import { test } from "node:test";
import { argmax, chooseToken, mulberry32, nucleus, topIndices } from "../src/sampling.js";

const settings = (over) => ({ temperature: 1, top_k: 0, top_p: 1, repetition_penalty: 1, ...over });
// How often each token is drawn in n draws.
function counts(logits, s, n = 4000, seed = 1) {
  const rng = mulberry32(seed);
  const c = new Map();
  for (let i = 0; i < n; i++) {
    const t = chooseToken(logits, s, null, rng);
    c.set(t, (c.get(t) ?? 0) + 1);
  }
  return c;
}

test("temperature 0 is argmax, the lowest id among ties", () => {
  const logits = Float32Array.from([0.5, 3, -1, 3, 2]);
  assert.equal(chooseToken(logits, settings({ temperature: 0, top_k: 2, top_p: 0.5 }), null, mulberry32(0)), 1);
  assert.equal(argmax(Float32Array.from([-5, -2, -2])), 1);
});

test("the same seed gives the same draws, another seed others", () => {
  const logits = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
  const draw = (seed) => {
    const rng = mulberry32(seed);
    return Array.from({ length: 50 }, () => chooseToken(logits, settings({ top_k: 40, top_p: 0.9 }), null, rng));
  };
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
  const rng = mulberry32(7);
  for (let i = 0; i < 1000; i++) {
    const u = rng();
    assert.ok(u >= 0 && u < 1);
  }
});

test("top-k draws only the k largest, and all of them", () => {
  const logits = Float32Array.from([1, 5, 4.9, 0, 4.8, 4.7, 2]);
  assert.deepEqual([...counts(logits, settings({ top_k: 3 })).keys()].sort(), [1, 2, 4]);
  assert.equal(counts(logits, settings()).size, 7);
});

test("top-p keeps the fewest most likely tokens that reach p, the crossing one included", () => {
  const probs = [0.05, 0.5, 0.15, 0.3]; // sorted: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
  const logits = Float32Array.from(probs, Math.log);
  assert.deepEqual([...counts(logits, settings({ top_p: 0.45 })).keys()], [1]);
  assert.deepEqual([...counts(logits, settings({ top_p: 0.7 })).keys()].sort(), [1, 3]);
  assert.deepEqual([...counts(logits, settings({ top_p: 0.9 })).keys()].sort(), [1, 2, 3]);
  assert.deepEqual(nucleus(Float64Array.from(probs), 0.7), [1, 3]);
  // with top-k first: top-2 of these, then p over those two (0.5 / 0.8 = 0.625 >= 0.6)
  assert.deepEqual([...counts(logits, settings({ top_k: 2, top_p: 0.6 })).keys()], [1]);
});

test("top-p past 64 candidates widens the search (a flat distribution)", () => {
  const weights = new Float64Array(5000).fill(1);
  assert.equal(nucleus(weights, 0.5).length, 2500);
  assert.deepEqual(nucleus(weights, 0.001), [0, 1, 2, 3, 4]); // ties: lower ids first
});

test("topIndices: largest first, lower index first among equals, both strategies", () => {
  const values = Float32Array.from({ length: 3000 }, (_, i) => (i * 7919) % 1000);
  const sorted = Array.from(values.keys()).sort((a, b) => values[b] - values[a] || a - b);
  assert.deepEqual(topIndices(values, 10), sorted.slice(0, 10));
  assert.deepEqual(topIndices(values, 1000), sorted.slice(0, 1000));
});

test("repetition penalty divides a seen positive logit, multiplies a seen negative one", () => {
  const logits = Float32Array.from([2, 1.5, -1, -1.2]);
  const seen = Uint8Array.from([1, 0, 1, 0]);
  const greedy = settings({ temperature: 0, repetition_penalty: 2 });
  assert.equal(chooseToken(logits, greedy, seen, mulberry32(0)), 1); // 2 / 2 = 1 < 1.5
  assert.equal(chooseToken(Float32Array.from([-1, -1.5]), greedy, Uint8Array.from([1, 0]), mulberry32(0)), 1);
  assert.equal(logits[0], 2); // the caller's logits are left alone
});
