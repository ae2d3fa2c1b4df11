// Byte-level BPE, read from a Hugging Face tokenizer.json (the kind gptedge trains: train/tokenizer.py).
//
// Encoding a text takes four steps, the same as Python's `tokenizers` does them:
//  1. split out added tokens ("<|endoftext|>", "<|pad|>") written in the text: each is one id;
//  2. cut the rest into words with GPT-2's regex (letters, digits, other symbols, whitespace;
//     a word may start with one space);
//  3. write each word's UTF-8 bytes as printable characters (the vocabulary is written in them:
//     a space is "Ġ", a newline "Ċ");
//  4. merge adjacent pieces of a word, lowest merge rank first, until no listed merge applies.
// Decoding maps each id back to its bytes; special tokens decode to nothing, as in Python.

// GPT-2's pre-tokenization regex as `tokenizers` runs it (Oniguruma). Its \s is Unicode's
// White_Space, which JavaScript's \s is not quite (JS adds U+FEFF, lacks U+0085), so spell it out.
const WORDS =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

// GPT-2's byte -> character table: printable bytes stand for themselves, the other 68 bytes are
// shifted to U+0100 and up, so every token is a readable string.
function byteToChar() {
  const chars = new Array(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = String.fromCharCode(printable ? b : 256 + shifted++);
  }
  return chars;
}

const NO_BYTES = new Uint8Array(0);
const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export class Tokenizer {
  // spec: the parsed tokenizer.json
  constructor(spec) {
    if (spec.model?.type !== "BPE" || spec.pre_tokenizer?.type !== "ByteLevel") {
      throw new Error("tokenizer.json is not a byte-level BPE tokenizer: re-export the bundle with gptedge");
    }
    this.vocab = new Map(Object.entries(spec.model.vocab)); // token string -> id
    // "a b" -> rank; merges come as "a b" strings (older files) or ["a", "b"] pairs (newer files).
    // Byte-level tokens never hold a space (it is "Ġ"), so "a b" is unambiguous.
    this.ranks = new Map(spec.model.merges.map((m, rank) => [Array.isArray(m) ? m.join(" ") : m, rank]));
    this.byteChar = byteToChar();
    this.added = new Map((spec.added_tokens ?? []).map((t) => [t.content, t])); // content -> {id, special}
    // One regex that finds any added token, longest first so the longest match wins; the capturing
    // group makes String.split keep the tokens (at odd indices).
    const contents = [...this.added.keys()].sort((a, b) => b.length - a.length);
    this.addedSplit = contents.length ? new RegExp(`(${contents.map(escapeRegExp).join("|")})`) : null;
    this.cache = new Map(); // word -> ids (texts repeat words a lot)
    this.utf8 = new TextEncoder();
    const charByte = new Map(this.byteChar.map((c, b) => [c, b]));
    this.bytes = []; // id -> Uint8Array
    for (const [token, id] of this.vocab) this.bytes[id] = Uint8Array.from(token, (c) => charByte.get(c));
    for (const t of this.added.values()) this.bytes[t.id] = t.special ? NO_BYTES : this.utf8.encode(t.content);
  }

  // text -> ids, no special tokens added (Python: tokenizer.encode(text, add_special_tokens=False).ids)
  encode(text) {
    const ids = [];
    const parts = this.addedSplit ? text.split(this.addedSplit) : [text];
    parts.forEach((part, i) => {
      if (i % 2 === 1) ids.push(this.added.get(part).id);
      else for (const [word] of part.matchAll(WORDS)) for (const id of this.word(word)) ids.push(id);
    });
    return ids;
  }

  // One pre-tokenized word -> its ids.
  word(word) {
    let ids = this.cache.get(word);
    if (ids) return ids;
    let pieces = Array.from(this.utf8.encode(word), (b) => this.byteChar[b]);
    while (pieces.length > 1) {
      // Find the adjacent pair with the lowest merge rank...
      let best = Infinity;
      let pair = null;
      for (let i = 0; i + 1 < pieces.length; i++) {
        const rank = this.ranks.get(pieces[i] + " " + pieces[i + 1]);
        if (rank !== undefined && rank < best) [best, pair] = [rank, [pieces[i], pieces[i + 1]]];
      }
      if (!pair) break;
      // ...and merge every occurrence of it, left to right.
      const merged = [];
      for (let i = 0; i < pieces.length; i++) {
        if (pieces[i] === pair[0] && pieces[i + 1] === pair[1]) merged.push(pieces[i] + pieces[++i]);
        else merged.push(pieces[i]);
      }
      pieces = merged;
    }
    ids = pieces.map((p) => this.vocab.get(p));
    this.cache.set(word, ids);
    return ids;
  }

  // The bytes an id stands for: special tokens (and unknown ids) stand for none, as in Python's decode.
  tokenBytes(id) {
    return this.bytes[id] ?? NO_BYTES;
  }

  // ids -> text; bytes that are not valid UTF-8 become U+FFFD (as Python's decode does)
  decode(ids) {
    const parts = ids.map((id) => this.tokenBytes(id));
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
    return new TextDecoder().decode(all);
  }
}
