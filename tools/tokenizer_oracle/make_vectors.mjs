// Generates tests/data/tokenizer_oracle.json: several thousand varied strings (and some
// ill-formed byte strings) with tiktoken's gpt2 ids. Deterministic: a seeded PRNG drives
// every choice; the only input is the prose of /usr/share/common-licenses (Debian 12).
//
//   cd tools/tokenizer_oracle && npm ci && node make_vectors.mjs [OUT.json]
// Also usable as a module: randomCases(seed, count) gives fresh cases for live checks.
import { readFileSync, readdirSync, realpathSync, writeFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { encodeCases, formatCases } from "./oracle.mjs";

const SEED = 20241124;

// mulberry32: small, fast, and the same in every JavaScript engine.
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));  // inclusive
  const pick = (arr) => arr[Math.floor(next() * arr.length)];
  return { next, int, pick };
}

const cp = (...c) => String.fromCodePoint(...c);
const rep = (s, n) => s.repeat(n);

function licenseProse() {
  const dir = "/usr/share/common-licenses";
  if (!existsSync(dir)) return "The quick brown fox jumps over the lazy dog. ".repeat(200);
  const seen = new Set();
  let text = "";
  for (const name of readdirSync(dir).sort()) {
    const real = realpathSync(`${dir}/${name}`);
    if (seen.has(real)) continue;
    seen.add(real);
    text += readFileSync(real, "utf8") + "\n";
  }
  return text;
}

const WORDS = ["the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he", "was",
  "for", "on", "are", "as", "with", "his", "they", "I", "at", "be", "this", "have", "from",
  "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when",
  "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their",
  "Hello", "World", "GPT", "tokenizer", "speedrun", "NanoGPT", "attention", "Muon",
  "naïve", "café", "résumé", "Straße", "façade", "coöperate", "ångström", "jalapeño"];
const CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE",
  "'M", "'LL", "'D", "'Re", "'Ll", "’s", "’t", "’ll", "`s", "''s", "'", "''", "'x", "'sa",
  "'ts", "'lly", "'dd"];
const EMOJI = ["😀", "😂", "🤣", "❤️", "👍", "🙏", "🔥", "✨", "🎉", "🚀", "🐍", "🦀", "☕",
  "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏽‍🚀", "🏳️‍🌈", "🏴‍☠️", "👍🏻", "👍🏼", "👍🏽", "👍🏾", "👍🏿",
  "🤦🏼‍♂️", "👩🏿‍🦰", "🇺🇸", "🇯🇵", "🇩🇪", "🇫🇷", "1️⃣", "#️⃣", "©️", "™", "🫠", "🫶🏾",
  "🧔‍♀️", "💇🏻‍♀️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "❤️‍🔥", "🐈‍⬛"];
const SCRIPTS = {
  cjk: ["我们", "中国", "人工智能", "的", "是", "在", "这是一个测试", "机器学习模型",
    "東京", "日本語のテキスト", "ひらがな", "カタカナ", "こんにちは世界", "한국어", "안녕하세요",
    "서울특별시", "漢字", "繁體中文", "𠀀𠀁", "𪚥"],
  arabic: ["مرحبا", "بالعالم", "اللغة العربية", "كتاب", "السلام عليكم", "١٢٣٤٥", "ﷺ"],
  hebrew: ["שלום", "עולם", "עִבְרִית"],
  devanagari: ["नमस्ते", "हिन्दी", "संस्कृतम्", "भारत", "क्षत्रिय", "१२३४"],
  thai: ["สวัสดี", "ภาษาไทย"],
  cyrillic: ["Привет", "мир", "Москва", "ЁЖИК", "съешь же ещё"],
  greek: ["Γειά σου", "Κόσμε", "αβγδε", "ΑΩ"],
  other: ["ქართული", "Հայերեն", "ᚠᚢᚦ", "ꦗꦮ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚𝟛", "Ⅻ", "½", "²³", "①②"],
};
const COMBINING = [0x301, 0x300, 0x308, 0x303, 0x327, 0x30a, 0x332, 0x20d7, 0x1ab0, 0x1dc0,
  0x0951, 0x093c, 0x05b4, 0x0670, 0x0e31, 0xfe0f, 0x200d, 0x200c];
const SPACES = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\u000b", "\f", "\u00a0",
  "\u3000", "\u2003", "\u2028", "\u2029", "\u0085", "\u1680", "\u202f", "\u205f", "\u180e",
  "\u200b", "\ufeff"];
const PUNCT = ".,;:!?-—–…()[]{}<>\"'`~@#$%^&*_+=|\\/«»“”‘’¡¿§¶•·°";
const CODE = [
  "int main(int argc, char** argv) {\n  return 0;\n}\n",
  "for (size_t i = 0; i < n; ++i) out[i] = a[i] * b[i];",
  "def f(x):\n    return x ** 2  # square\n",
  "    if x is None:\n        raise ValueError(\"x\")\n",
  "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
  "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
  "const x = (a, b) => a?.b ?? [...b];\n",
  "<div class=\"row\"><a href=\"https://example.com/?q=1&r=2\">link</a></div>",
  "std::vector<std::pair<int32_t, int32_t>> merges; // (L, R)",
  "x += 1; y -= 2; z *= 3; w /= 4; v %= 5; u <<= 6; t >>= 7;",
  "\tfoo:\n\t\t$(CC) -O2 -o $@ $^\n",
  "fn main() { let v: Vec<u8> = vec![0xff; 16]; println!(\"{:?}\", v); }",
  "    \n    \n\n\t\t\n",
  "/* comment */ // line comment\n/** doc */",
];

function proseSlice(r, prose) {
  const start = r.int(0, prose.length - 1);
  const len = r.pick([1, 5, 20, 60, 120, 250, 400]);
  return prose.slice(start, start + r.int(1, len));
}

function numberString(r) {
  const kinds = [
    () => String(r.int(0, 9)),
    () => String(r.int(0, 999999)),
    () => Array.from({ length: r.int(10, 200) }, () => r.int(0, 9)).join(""),
    () => `${r.int(0, 9999)}.${r.int(0, 99999)}`,
    () => r.int(1, 999).toLocaleString("en-US") + "," + String(r.int(0, 999)).padStart(3, "0"),
    () => `-${r.int(1, 99)}e${r.int(-20, 20)}`,
    () => `${r.int(1900, 2030)}-${String(r.int(1, 12)).padStart(2, "0")}-${String(r.int(1, 28)).padStart(2, "0")}`,
    () => `+1 (${r.int(200, 999)}) ${r.int(200, 999)}-${r.int(1000, 9999)}`,
    () => `0x${r.int(0, 0xffffff).toString(16)}`,
    () => `${r.int(1, 99)}%`,
    () => `v${r.int(0, 9)}.${r.int(0, 30)}.${r.int(0, 99)}`,
    () => `${r.int(1, 12)}:${String(r.int(0, 59)).padStart(2, "0")}pm`,
    () => "١٢٣" + r.int(0, 99) + "४५६" + "⁴²",
  ];
  return r.pick(kinds)();
}

function randomCodePoint(r) {
  for (;;) {  // any scalar value: ASCII, BMP, astral, assigned or not; no surrogates
    const band = r.int(0, 9);
    const c = band < 3 ? r.int(0x20, 0x7e) : band < 5 ? r.int(0x80, 0x7ff)
            : band < 8 ? r.int(0x800, 0xffff) : r.int(0x10000, 0x10ffff);
    if (c < 0xd800 || c > 0xdfff) return c;
  }
}

function invalidBytes(r) {
  const pieces = [
    [0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0xbf], [0xc3], [0xe2, 0x82], [0xe2, 0x28, 0xa1],
    [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf0, 0x9f, 0x98], [0xf0, 0x80, 0x80, 0x80],
    [0xf4, 0x90, 0x80, 0x80], [0xf5], [0xfe], [0xff], [0xf8, 0x88, 0x80, 0x80, 0x80],
    [0xe0, 0x80, 0x80], [0xc2, 0x20], [0x20, 0xc3, 0x20], [0xf0, 0x9f, 0x98, 0x41],
  ];
  const out = [];
  const n = r.int(1, 8);
  for (let i = 0; i < n; ++i) {
    const k = r.int(0, 3);
    if (k === 0) out.push(...r.pick(pieces));
    else if (k === 1) out.push(...Buffer.from(r.pick(WORDS) + r.pick([" ", "", "'s ", "\n"])));
    else if (k === 2) for (let j = r.int(1, 6); j > 0; --j) out.push(r.int(0, 255));
    else out.push(...Buffer.from(r.pick(EMOJI)).subarray(0, r.int(1, 6)));
  }
  return Buffer.from(out).toString("hex");
}

// Generators by family; each returns one string or {"hex"}.
function families(prose) {
  return {
    prose: (r) => proseSlice(r, prose),
    prose_upper: (r) => proseSlice(r, prose).toUpperCase(),
    contractions: (r) => Array.from({ length: r.int(1, 6) }, () =>
      r.pick(["", " "]) + r.pick(WORDS) + r.pick(CONTRACTIONS) + r.pick(["", " ", ".", "s", "'"])).join(""),
    numbers: (r) => Array.from({ length: r.int(1, 4) }, () =>
      r.pick(["", " ", "  ", "$", "#", "a", "x"]) + numberString(r)).join(r.pick([" ", ", ", "", "\n"])),
    emoji: (r) => Array.from({ length: r.int(1, 6) }, () =>
      r.pick(["", " ", "  ", "!", r.pick(WORDS)]) + r.pick(EMOJI)).join(""),
    scripts: (r) => {
      const fam = r.pick(Object.keys(SCRIPTS));
      return Array.from({ length: r.int(1, 5) }, () =>
        r.pick(SCRIPTS[fam]) + r.pick(["", " ", "。", "、", "，", "؟", "।", ". ", "\n"])).join("");
    },
    combining: (r) => Array.from({ length: r.int(1, 5) }, () => {
      let s = r.pick(["e", "a", "o", " ", "n", "क", "ا", "1", "!", "Z"]);
      for (let k = r.int(1, 6); k > 0; --k) s += cp(r.pick(COMBINING));
      return s;
    }).join(r.pick(["", " "])),
    whitespace: (r) => {
      let s = "";
      for (let k = r.int(1, 6); k > 0; --k) {
        for (let m = r.int(1, 4); m > 0; --m) s += r.pick(SPACES);
        if (r.next() < 0.7) s += r.pick([r.pick(WORDS), "1", "!", "'s", "😀", "中", "ñ"]);
      }
      return s;
    },
    punctuation: (r) => Array.from({ length: r.int(1, 6) }, () => {
      let p = "";
      for (let k = r.int(1, 8); k > 0; --k) p += r.pick([...PUNCT]);
      return r.pick(["", " "]) + p + r.pick(["", r.pick(WORDS), " "]);
    }).join(""),
    code: (r) => {
      const c = r.pick(CODE);
      return r.next() < 0.5 ? c : c.slice(r.int(0, c.length - 1));
    },
    endoftext: (r) => r.pick(["", " ", "\n", "text", "a "]) + r.pick(["<|endoftext|>",
      "<|endoftext|><|endoftext|>", "< |endoftext| >", "<|endoftext", "endoftext|>",
      "<|startoftext|>", "<|ENDOFTEXT|>"]) + r.pick(["", " ", "\n", "The", "x"]),
    random_unicode: (r) => {
      let s = "";
      for (let k = r.int(1, 24); k > 0; --k) s += r.next() < 0.2 ? " " : cp(randomCodePoint(r));
      return s;
    },
    long_pieces: (r) => {
      const unit = r.pick(["a", "ab", "the", "0", "12", "!", "!?", " ", "\n", "é", "中", "😀",
        "xy1", "aaab", "Δ", "٣"]);
      return r.pick(["", " "]) + rep(unit, r.int(100, 1500)) + r.pick(["", " end", "!"]);
    },
    mixed: (r) => proseSlice(r, prose).split(" ").map((w) => {
      const x = r.next();
      return x < 0.05 ? r.pick(EMOJI) : x < 0.1 ? numberString(r) : x < 0.15 ? w + r.pick(CONTRACTIONS)
           : x < 0.2 ? r.pick(SPACES) + w : w;
    }).join(r.pick([" ", "  ", "\t", " \n"])),
    invalid_bytes: (r) => ({ hex: invalidBytes(r) }),
  };
}

const COUNTS = { prose: 700, prose_upper: 150, contractions: 300, numbers: 300, emoji: 300,
  scripts: 350, combining: 150, whitespace: 400, punctuation: 200, code: 150, endoftext: 60,
  random_unicode: 500, long_pieces: 40, mixed: 300, invalid_bytes: 300 };

// Fixed cases worth naming one by one.
const FIXED = ["", " ", "  ", "\n", "a", "I", "'s", "'S", "hello world", "Hello, World!",
  "<|endoftext|>", " <|endoftext|>", "don't", "DON'T", "I'LL", "she'd've", "y'all'll",
  "  leading", "trailing  ", "trailing\n", "\r\n\r\n", "a\u180eb", "a\u0085b", "a \u00a0b",
  "x\u3000\u3000y", "1234567890", " 1,000,000.00", "😀😀😀", "👨‍👩‍👧‍👦", "e\u0301", "\u0000", "\u0000a",
  "\u007f", "\ufffd", "\uffff", "\u{10ffff}", "\u{e0001}", "\u{31350}", "\u{2ebf0}",
  "\u0897", "\u{11f00}", "\u1c89"];

export function randomCases(seed, count, prose = licenseProse()) {
  const r = rng(seed);
  const fam = families(prose);
  const names = Object.keys(fam);
  return Array.from({ length: count }, () => fam[r.pick(names)](r));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ?? fileURLToPath(new URL("../../tests/data/tokenizer_oracle.json", import.meta.url));
  const prose = licenseProse();
  const r = rng(SEED);
  const fam = families(prose);
  const items = [...FIXED];
  for (const [name, n] of Object.entries(COUNTS))
    for (let i = 0; i < n; ++i) items.push(fam[name](r));
  const cases = encodeCases(items);
  writeFileSync(out, formatCases(cases, {
    generator: "tools/tokenizer_oracle/make_vectors.mjs", seed: SEED }));
  console.log(`${out}: ${cases.length} cases`);
}
