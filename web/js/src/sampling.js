// Choosing the next token from logits, as runtime/sampling.py does: repetition penalty,
// temperature, top-k, top-p, then a draw. Temperature 0 is greedy; top_k 0 and top_p 1 are off.
// Randomness comes only from the rng passed in, so the same seed repeats the same choices
// (the numbers differ from Python's: numpy's generator is not this one).

// mulberry32 (Tommy Ettinger's 32-bit generator): a 32-bit state, one multiply-xorshift step per
// number. Small and fast, plenty for sampling (not for cryptography). Returns a function giving
// numbers in [0, 1). The seed is taken modulo 2**32.
export function mulberry32(seed) {
  let state = seed >>> 0;
  return function next() {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The index of the largest value; the lowest index among equals (as numpy's argmax).
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

// Indices of the m largest values, largest first, the lower index first among equals.
// For a small m, a sorted buffer of m that a value enters only if it beats the smallest kept: one
// pass over a 50 K vocabulary. For a large m that buffer would shift too much: sort everything.
export function topIndices(values, m) {
  if (m > 512) {
    const all = Array.from(values.keys()).sort((a, b) => values[b] - values[a] || a - b);
    return all.slice(0, m);
  }
  const top = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (top.length === m && v <= values[top[m - 1]]) continue;
    let at = top.length === m ? m - 1 : top.length; // drop the smallest when full...
    while (at > 0 && values[top[at - 1]] < v) {      // ...and shift smaller ones down
      top[at] = top[at - 1];
      at--;
    }
    top[at] = i;
  }
  return top;
}

// settings: {temperature, top_k, top_p, repetition_penalty} (web.json's "sampling" names).
// seen: a 0/1 flag per token id (the tokens in the window), needed when repetition_penalty != 1.
// rng: a function giving numbers in [0, 1), e.g. mulberry32(seed).
export function chooseToken(logits, settings, seen, rng) {
  const { temperature, top_k: topK, top_p: topP, repetition_penalty: penalty } = settings;
  let x = logits;
  if (penalty !== 1 && seen) {
    // CTRL's penalty, as transformers does it: a positive logit is divided, a negative one multiplied
    x = Float32Array.from(logits);
    for (let i = 0; i < x.length; i++) if (seen[i]) x[i] = x[i] > 0 ? x[i] / penalty : x[i] * penalty;
  }
  if (temperature === 0) return argmax(x);

  // Candidates: the top-k ids, or every id. weights[j] is candidate j's unnormalised probability.
  let ids = topK > 0 && topK < x.length ? topIndices(x, topK) : null;
  const n = ids ? ids.length : x.length;
  const scaled = new Float64Array(n);
  for (let j = 0; j < n; j++) scaled[j] = x[ids ? ids[j] : j] / temperature;
  const max = scaled.reduce((a, b) => Math.max(a, b), -Infinity);
  let weights = scaled.map((s) => Math.exp(s - max));

  if (topP < 1) {
    const keep = nucleus(weights, topP);
    ids = keep.map((j) => (ids ? ids[j] : j));
    weights = Float64Array.from(keep, (j) => weights[j]);
  }

  // Draw: the first candidate whose running sum of weights passes u * total.
  const total = weights.reduce((a, b) => a + b, 0);
  const u = rng() * total;
  let sum = 0;
  let choice = weights.length - 1; // (only reached through rounding)
  for (let j = 0; j < weights.length; j++) {
    sum += weights[j];
    if (sum > u) {
      choice = j;
      break;
    }
  }
  return ids ? ids[choice] : choice;
}

// Indices (into weights) of the top-p nucleus: the fewest most likely candidates whose weights sum
// to topP of the total, the one that crosses it included. As in Python, look at the largest 64
// first and widen (x8) until they hold enough mass, instead of sorting the whole vocabulary.
export function nucleus(weights, topP) {
  const mass = topP * weights.reduce((a, b) => a + b, 0);
  for (let m = Math.min(64, weights.length); ; m = Math.min(8 * m, weights.length)) {
    const top = topIndices(weights, m);
    let sum = 0;
    for (let j = 0; j < top.length; j++) {
      sum += weights[top[j]];
      if (sum >= mass) return top.slice(0, j + 1);
    }
    if (m === weights.length) return top; // rounding: the whole sum fell short of topP * sum
  }
}
