// The tokenizer against Python's `tokenizers` (ids from tests/test_web_js.py, through
// GPTEDGE_TOKENIZER_CASES) and on a small tokenizer.json built here.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Tokenizer } from "../src/tokenizer.js";

const AWKWARD = [
  "naïve café — 42\n\n  If the expression is",
  "😀👍🏽 family: 👨‍👩‍👧, 中文字符，日本語。한국어",
  "e\u0301 a\u0308 n\u0303 combining marks",
  "tabs\tand\t\ttabs\n\nnew  lines   three\n \n",
  "don't it's John's 'S 'll",
  "teh qiuck borwn fxo 3.14159 1,000,000",
  "\u00a0nbsp\u3000ideo\u2028ls\x85nel\ufeffbom",
];

const cases = process.env.GPTEDGE_TOKENIZER_CASES;
test("ids equal Python tokenizers' on the cases file", { skip: !cases && "GPTEDGE_TOKENIZER_CASES is not set" }, () => {
  const { tokenizer, cases: list } = JSON.parse(readFileSync(cases, "utf8"));
  const tok = new Tokenizer(JSON.parse(readFileSync(tokenizer, "utf8")));
  assert.ok(list.length > 0);
  for (const { text, ids } of list) assert.deepEqual(tok.encode(text), ids, `encoding ${JSON.stringify(text)}`);
  for (const text of AWKWARD) assert.equal(tok.decode(tok.encode(text)), text);
});

// A byte-level tokenizer.json by hand: the 256 byte characters, a few merges, two special tokens.
function smallSpec(mergeForm) {
  const chars = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars.push(String.fromCharCode(printable ? b : 256 + shifted++));
  }
  const vocab = { "<|endoftext|>": 0, "<|pad|>": 1 };
  chars.forEach((c, i) => (vocab[c] = i + 2));
  const merges = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["a", "a"], ["Ġ", "Ġ"]];
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  return {
    added_tokens: [
      { id: 0, content: "<|endoftext|>", special: true },
      { id: 1, content: "<|pad|>", special: true },
    ],
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false },
    model: { type: "BPE", vocab, merges: mergeForm === "string" ? merges.map((m) => m.join(" ")) : merges },
  };
}

test("merges in either form, lowest rank first, every occurrence left to right", () => {
  for (const form of ["string", "array"]) {
    const tok = new Tokenizer(smallSpec(form));
    const v = tok.vocab;
    assert.deepEqual(tok.encode("a the"), [v.get("a"), v.get("Ġthe")]);
    assert.deepEqual(tok.encode("aaa"), [v.get("aa"), v.get("a")]); // not a, aa
    assert.deepEqual(tok.encode("   the"), [v.get("ĠĠ"), v.get("Ġthe")]); // spaces before a word: the last joins it
  }
});

test("added tokens inside text are one id each, and decode to nothing", () => {
  const tok = new Tokenizer(smallSpec("array"));
  const ids = tok.encode("a<|endoftext|>b <|pad|>");
  assert.deepEqual(ids, [tok.vocab.get("a"), 0, tok.vocab.get("b"), tok.vocab.get("Ġ"), 1]);
  assert.equal(tok.decode(ids), "ab ");
  assert.equal(tok.tokenBytes(0).length, 0);
  assert.equal(tok.tokenBytes(99999).length, 0); // an id past the tokenizer's vocabulary
});

test("decode(encode(x)) == x and tokenBytes gives the UTF-8 bytes", () => {
  const tok = new Tokenizer(smallSpec("string"));
  for (const text of AWKWARD) {
    const ids = tok.encode(text);
    assert.equal(tok.decode(ids), text);
    const bytes = ids.flatMap((id) => [...tok.tokenBytes(id)]);
    assert.deepEqual(bytes, [...new TextEncoder().encode(text)]);
  }
});

test("a tokenizer that is not byte-level BPE is refused with a message", () => {
  assert.throws(() => new Tokenizer({ model: { type: "WordPiece" } }), /not a byte-level BPE/);
});
