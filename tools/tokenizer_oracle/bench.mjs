// tiktoken's gpt2 encode_ordinary throughput on the corpus that bench_tokenizer writes
// (documents separated by NUL bytes), for comparison with speedrun's tokenizer.
//   node bench.mjs [/tmp/speedrun_tokenizer_corpus.txt]
import { readFileSync } from "node:fs";
import { get_encoding } from "tiktoken";
import { tiktokenVersion } from "./oracle.mjs";

const path = process.argv[2] ?? "/tmp/speedrun_tokenizer_corpus.txt";
const raw = readFileSync(path);
const docs = raw.toString("utf8").split("\0");  // ill-formed UTF-8 -> U+FFFD, as ours does
const enc = get_encoding("gpt2");
const mb = raw.length / 1e6;
let best = Infinity, first = 0, tokens = 0;
for (let r = 0; r < 4; ++r) {
  const t0 = process.hrtime.bigint();
  tokens = 0;
  for (const d of docs) tokens += enc.encode_ordinary(d).length;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r === 0) first = s;
  best = Math.min(best, s);
}
console.log(`tiktoken ${tiktokenVersion} (node ${process.version}), 1 thread: ${docs.length} documents, ` +
  `${mb.toFixed(1)} MB, ${tokens} tokens, first pass ${(mb / first).toFixed(1)} MB/s, ` +
  `best ${(mb / best).toFixed(1)} MB/s (${(tokens / 1e6 / best).toFixed(2)} Mtok/s)`);
