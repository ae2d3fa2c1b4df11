// From token ids to text, one token at a time (as runtime/text.py): UTF-8-safe pieces and stop strings.

// One character (é, 中, an emoji) may be split across tokens. TextDecoder in streaming mode returns
// only complete characters and keeps an unfinished tail until the next token's bytes complete it.
export class StreamDecoder {
  // tokenBytes: id -> Uint8Array (Tokenizer.tokenBytes)
  constructor(tokenBytes) {
    this.tokenBytes = tokenBytes;
    this.utf8 = new TextDecoder(); // invalid bytes become U+FFFD, as Python's errors="replace"
  }

  // the text this token makes showable (maybe "")
  push(id) {
    return this.utf8.decode(this.tokenBytes(id), { stream: true });
  }

  // whatever tail is left when generation ends
  flush() {
    return this.utf8.decode();
  }
}

// Finds the first stop string in text that arrives in pieces, and says how much is safe to show.
// feed(piece) returns [text that may be shown now, whether a stop string was found]. Text that could
// be the start of a stop string is held back until the next piece decides; the stop string itself
// and everything after it are never returned. (Lengths here are UTF-16 units, Python's are code
// points: the same cuts, as a stop string never starts inside a character.)
export class StopStrings {
  constructor(stops) {
    this.stops = stops.filter((s) => s);
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
    this.text = ""; // all text kept so far (the final output once stopped)
    this.shown = 0; // how much of it has been returned
  }

  feed(piece) {
    const start = Math.max(0, this.text.length - this.longest + 1); // a match may begin in the held-back tail
    this.text += piece;
    const found = this.stops.map((s) => this.text.indexOf(s, start)).filter((i) => i >= 0);
    if (found.length) {
      this.text = this.text.slice(0, Math.min(...found));
      return [this.release(this.text.length), true];
    }
    return [this.release(this.text.length - this.heldBack()), false];
  }

  // Generation ended without a stop string: release the held-back tail.
  finish() {
    return this.release(this.text.length);
  }

  // Length of the longest end of the text that is a proper prefix of some stop string.
  heldBack() {
    for (let n = Math.min(this.longest - 1, this.text.length); n > 0; n--) {
      const tail = this.text.slice(-n);
      if (this.stops.some((s) => s.startsWith(tail))) return n;
    }
    return 0;
  }

  release(upto) {
    upto = Math.max(upto, this.shown);
    const out = this.text.slice(this.shown, upto);
    this.shown = upto;
    return out;
  }
}
