import assert from "node:assert/strict";
import { test } from "node:test";
import { StopStrings, StreamDecoder } from "../src/text.js";

// Token i stands for byte i: every character of a multi-byte text is split across tokens.
const byteTokens = (id) => Uint8Array.of(id);

test("stream decoding shows only complete characters", () => {
  const text = "aé中😀b";
  const decoder = new StreamDecoder(byteTokens);
  const pieces = [...new TextEncoder().encode(text)].map((b) => decoder.push(b));
  assert.deepEqual(pieces.filter((p) => p), ["a", "é", "中", "😀", "b"]);
  assert.equal(pieces.join("") + decoder.flush(), text);
});

test("an unfinished character at the end becomes U+FFFD on flush", () => {
  const decoder = new StreamDecoder(byteTokens);
  assert.equal(decoder.push(0x61) + decoder.push(0xe4) + decoder.push(0xb8), "a");
  assert.equal(decoder.flush(), "\ufffd");
});

// Feed pieces; return what was shown and whether a stop string was found.
function run(stops, pieces) {
  const s = new StopStrings(stops);
  let shown = "";
  for (const p of pieces) {
    const [out, stopped] = s.feed(p);
    shown += out;
    if (stopped) return { shown, stopped, text: s.text };
  }
  return { shown: shown + s.finish(), stopped: false, text: s.text };
}

test("a stop string split across pieces is trimmed and never shown", () => {
  assert.deepEqual(run(["\n\n", "END"], ["Hello", " E", "N", "D and more"]), { shown: "Hello ", stopped: true, text: "Hello " });
  assert.deepEqual(run(["\n\n"], ["one\n", "\ntwo"]), { shown: "one", stopped: true, text: "one" });
  assert.deepEqual(run(["o, w"], ["Hel", "lo, wo", "rld"]), { shown: "Hell", stopped: true, text: "Hell" });
});

test("the first stop string wins, held-back text is released when it is not a stop", () => {
  assert.deepEqual(run(["bc", "b"], ["a", "bc"]), { shown: "a", stopped: true, text: "a" });
  const s = new StopStrings(["xyz"]);
  assert.deepEqual(s.feed("ax"), ["a", false]); // "x" might start "xyz"
  assert.deepEqual(s.feed("y"), ["", false]);
  assert.deepEqual(s.feed("a"), ["xya", false]);
  assert.deepEqual(s.feed("xy"), ["", false]);
  assert.equal(s.finish(), "xy");
});

test("no stop strings: everything is shown at once", () => {
  assert.deepEqual(run([], ["a", "b\n\n"]), { shown: "ab\n\n", stopped: false, text: "ab\n\n" });
  assert.deepEqual(run([""], ["a"]), { shown: "a", stopped: false, text: "a" });
});
