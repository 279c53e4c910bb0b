// tiktoken's "gpt2" encoding as an oracle for speedrun's tokenizer.
//
//   node oracle.mjs IN.json OUT.json
// IN is a JSON array whose items are either a string (text) or {"hex": "..."} (raw bytes,
// turned into text by TextDecoder, which replaces ill-formed UTF-8 with U+FFFD the WHATWG
// way, as any JavaScript caller of tiktoken would). OUT gets
//   {"encoding": "gpt2", "tiktoken": VERSION, "cases": [{"text"|"hex": ..., "ids": [...]}]}
// The ids are encode_ordinary's; each is checked to equal encode(text, [], []) (no special
// token allowed, none disallowed), i.e. "<|endoftext|>" in the text is ordinary text.
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { get_encoding } from "tiktoken";

const here = fileURLToPath(new URL(".", import.meta.url));
export const tiktokenVersion =
  JSON.parse(readFileSync(`${here}/node_modules/tiktoken/package.json`, "utf8")).version;

const enc = get_encoding("gpt2");
const decoder = new TextDecoder("utf-8", { fatal: false });

export function caseText(item) {
  if (typeof item === "string") return item;
  if (item && typeof item.hex === "string") return decoder.decode(Buffer.from(item.hex, "hex"));
  throw new Error(`oracle: an input item must be a string or {"hex": ...}, got ${JSON.stringify(item)}`);
}

export function encodeOrdinary(text) {
  const a = Array.from(enc.encode_ordinary(text));
  const b = Array.from(enc.encode(text, [], []));
  if (a.length !== b.length || a.some((v, i) => v !== b[i]))
    throw new Error(`oracle: encode_ordinary and encode(text, [], []) differ on ${JSON.stringify(text)}`);
  return a;
}

export function encodeCases(items) {
  return items.map((item) =>
    typeof item === "string" ? { text: item, ids: encodeOrdinary(item) }
                             : { hex: item.hex, ids: encodeOrdinary(caseText(item)) });
}

// One case per line, so that a change to the committed vectors diffs readably.
export function formatCases(cases, extra = {}) {
  const head = { encoding: "gpt2", tiktoken: tiktokenVersion, ...extra };
  const lines = cases.map((c) => "  " + JSON.stringify(c));
  const h = JSON.stringify(head);
  return h.slice(0, -1) + ',\n "cases": [\n' + lines.join(",\n") + "\n ]}\n";
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.length !== 4) {
    console.error("usage: node oracle.mjs IN.json OUT.json");
    process.exit(2);
  }
  const items = JSON.parse(readFileSync(process.argv[2], "utf8"));
  writeFileSync(process.argv[3], formatCases(encodeCases(items)));
}
