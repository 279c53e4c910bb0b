// Writes tests/data/tokenizer_unicode_classes.json: which code points tiktoken's gpt2
// pre-tokenizer treats as letters (\p{L}) and numbers (\p{N}), as ranges [first, last].
// tiktoken's regex carries its own Unicode tables (Unicode 16.0 in tiktoken 1.0.22);
// speedrun's PCRE2 carries others (14.0 in Debian 12), so the test checks every code
// point of ours against this file.
//
// How a code point c is classified: tiktoken encodes c + "'s" with the token "'s" (338)
// exactly when c is a letter, a number or white space (otherwise c and "'" form one
// punctuation piece). Among those, letters and numbers are told apart by Unicode's
// general category as Node.js knows it (Node's Unicode is at least as new as tiktoken's).
//
//   cd tools/tokenizer_oracle && npm ci && node make_unicode_classes.mjs [OUT.json]
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { get_encoding } from "tiktoken";
import { tiktokenVersion } from "./oracle.mjs";

const enc = get_encoding("gpt2");
const APOS_S = 338;
const isL = /^\p{L}$/u, isN = /^\p{N}$/u;
// Unicode's White_Space property (JavaScript's \s lacks U+0085).
const isSpace = /^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;

const ranges = { L: [], N: [] };
let disagree = 0;
for (let c = 0; c < 0x110000; ++c) {
  if (c >= 0xd800 && c <= 0xdfff) continue;
  const s = String.fromCodePoint(c);
  const tik = Array.from(enc.encode_ordinary(s + "'s")).includes(APOS_S);
  const cls = isL.test(s) ? "L" : isN.test(s) ? "N" : null;
  if (!cls) {
    if (tik && !isSpace.test(s)) ++disagree;  // tiktoken knows a category Node does not
    continue;
  }
  if (!tik) continue;  // assigned after tiktoken's Unicode version: punctuation to tiktoken
  const r = ranges[cls];
  if (r.length && r[r.length - 1][1] === c - 1) r[r.length - 1][1] = c;
  else r.push([c, c]);
}
if (disagree) throw new Error(`${disagree} code points are letters or numbers to tiktoken but not to Node`);

const out = process.argv[2] ??
  fileURLToPath(new URL("../../tests/data/tokenizer_unicode_classes.json", import.meta.url));
const line = (a) => "[" + a.map(([x, y]) => `[${x},${y}]`).join(",") + "]";
writeFileSync(out, `{"tiktoken":"${tiktokenVersion}","generator":"tools/tokenizer_oracle/make_unicode_classes.mjs",\n` +
  ` "L":${line(ranges.L)},\n "N":${line(ranges.N)}}\n`);
console.log(`${out}: ${ranges.L.length} letter ranges, ${ranges.N.length} number ranges`);
