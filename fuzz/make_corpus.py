#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/seed_*: small
valid inputs and slightly broken ones, one file each. Regression inputs (crash_*, named
after what they found) sit beside them and are kept. Run: python3 fuzz/make_corpus.py"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


def clean():
    for target in os.listdir(ROOT) if os.path.isdir(ROOT) else []:
        for n in os.listdir(os.path.join(ROOT, target)):
            if n.startswith("seed_"):
                os.remove(os.path.join(ROOT, target, n))


# --- shard: 256 int32 header (magic, version, N), then N uint16 tokens ---------------------
def shard(tokens, magic=20240520, version=1, count=None, extra=b""):
    h = [0] * 256
    h[0], h[1], h[2] = magic, version, len(tokens) if count is None else count
    return struct.pack("<256i", *h) + struct.pack("<%dH" % len(tokens), *tokens) + extra


def shards():
    write("shard", "empty_valid", shard([]))
    write("shard", "five_tokens", shard([50256, 15496, 11, 995, 0]))
    write("shard", "truncated", shard([1, 2, 3], count=4))
    write("shard", "trailing_byte", shard([7], extra=b"\0"))
    write("shard", "bad_magic", shard([1], magic=20240521))
    write("shard", "bad_version", shard([1], version=2))
    write("shard", "negative_count", shard([], count=-1))
    write("shard", "short_header", shard([])[:1000])


# --- safetensors: u64 header length, JSON header padded to 8, data --------------------------
def safetensors(tensors, metadata=None, pad=True, length=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def safetensors_seeds():
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    write("safetensors", "f32_2x3", safetensors([("w", "F32", [2, 3], f32)], {"format": "pt"}))
    write("safetensors", "mixed", safetensors([
        ("a.bf16", "BF16", [4], b"\x80\x3f" * 4),
        ("b.i32", "I32", [1, 2], struct.pack("<2i", -1, 7)),
        ("c.u16", "U16", [3], struct.pack("<3H", 1, 2, 65535)),
        ("d.scalar", "F64", [], struct.pack("<d", 0.5)),
        ("e.empty", "F32", [0, 5], b""),
    ], {"step": "3", "model": "{\"n_layer\":2}"}))
    write("safetensors", "no_tensors", safetensors([]))
    write("safetensors", "length_past_end", safetensors([("w", "F32", [1], f32[:4])], length=4096))
    write("safetensors", "bad_dtype", safetensors([("w", "F16", [2], f32[:4])]))
    write("safetensors", "size_mismatch", safetensors([("w", "F32", [3], f32[:8])]))
    ov = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    t = json.dumps(ov).encode()
    write("safetensors", "overlap", struct.pack("<Q", len(t)) + t + b"\0" * 12)
    write("safetensors", "not_json", struct.pack("<Q", 8) + b"{\"w\":[1}")
    write("safetensors", "negative_dim", safetensors([("w", "F32", [-1], b"")]))
    write("safetensors", "short", b"\x10\0\0")


# --- weights: a GPT of SPEC.md's names (layers 2, heads 1, head dim 2, vocab 4) -----------
def gpt_tensors(layers=2, C=2, V=4, dtype="F32"):
    size = {"F32": 4, "BF16": 2, "F64": 8}[dtype]
    def t(name, shape, value=0.25):
        n = 1
        for d in shape:
            n *= d
        blob = {"F32": struct.pack("<f", value), "F64": struct.pack("<d", value),
                "BF16": struct.pack("<f", value)[2:]}[dtype] * n
        assert len(blob) == n * size
        return (name, dtype, shape, blob)
    out = [t("transformer.wte.weight", [V, C])]
    for l in range(layers):
        h = "transformer.h.%d." % l
        out += [t(h + "lambdas", [2], 0.5), t(h + "attn.lamb", [], 0.5)]
        out += [t(h + "attn.%s.weight" % m, [C, C]) for m in ("c_q", "c_k", "c_v", "c_proj")]
        out += [t(h + "mlp.c_fc.weight", [4 * C, C]), t(h + "mlp.c_proj.weight", [C, 4 * C])]
    out += [t("lm_head.weight", [V, C]), t("skip_weights", [layers // 2], 1.0)]
    return out


def weights_seeds():
    meta = {"format": "speedrun-gpt", "layers": "2", "heads": "1", "head_dim": "2", "vocab": "4",
            "eot": "3"}
    write("weights", "speedrun_f32", safetensors(gpt_tensors(), meta))
    write("weights", "speedrun_bf16", safetensors(gpt_tensors(dtype="BF16"), meta))
    write("weights", "pytorch_no_metadata", safetensors(gpt_tensors(C=4)))
    write("weights", "huge_shape_metadata", safetensors(gpt_tensors(), dict(
        meta, layers="4294967296", heads="2147483648", eot="4294967299")))
    write("weights", "shape_mismatch", safetensors(gpt_tensors(C=4), meta))
    nan = list(gpt_tensors())
    nan[0] = (nan[0][0], "F32", nan[0][2], struct.pack("<f", float("nan")) * 8)
    write("weights", "nan_value", safetensors(nan, meta))


# --- checkpoint meta.json -------------------------------------------------------------------
CONFIG = {  # config_to_json of the tiny preset, as a checkpoint stores it
    "adam-beta1": 0.8, "adam-beta2": 0.95, "adam-eps": 1e-10, "batch": 8, "cooldown": 100,
    "dtype": "auto", "embed-lr": 0.6, "eot": 50256, "grad-accum": 0, "head-dim": 32,
    "head-lr": 0.008, "heads": 4, "init": "", "keep": 0, "layers": 4,
    "momentum-warmup": 300, "muon-lr": 0.05, "muon-momentum": 0.95, "ns-steps": 5,
    "out": "runs/tiny-1", "overwrite": False, "preset": "tiny", "resume": "",
    "save-every": 50, "scalar-lr": 0.04, "seed": 0, "seq-len": 1024, "steps": 300,
    "stop-after": 0, "train": "", "val": "", "val-every": 25, "val-tokens": 65536,
    "vocab": 50304, "warmup": 0, "window-end": 512, "window-schedule": "linear",
    "window-start": 64,
}


def meta(**changes):
    m = {
        "format": "speedrun-checkpoint", "version": 1, "step": 50, "optimizer_steps": 50,
        "loader": {"shard": 0, "pos": 409600},
        "loaders": [{"shard": 0, "pos": 409600}], "world": 1,
        "run_id": "20261129-105000-1234", "numerics": "cpu, 2 threads",
        "log": {"train_ms": 1234.5, "timed_steps": 40},
        "rng": "none", "config": CONFIG,
        "train_shards": [{"file": "data_train_000000.bin", "tokens": 1000000}],
        "files": {"model.safetensors": {"bytes": 1000, "checksum": "0123456789abcdef"},
                  "state.safetensors": {"bytes": 2000, "checksum": "fedcba9876543210"}},
    }
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return json.dumps(m, indent=1) + "\n"


def checkpoint_seeds():
    write("checkpoint_meta", "valid", meta())
    write("checkpoint_meta", "old_single_loader", meta(loaders=None, run_id=None, world=None))
    write("checkpoint_meta", "two_ranks", meta(world=2, loaders=[{"shard": 0, "pos": 0},
                                                                  {"shard": 1, "pos": 8}]))
    write("checkpoint_meta", "wrong_format", meta(format="other"))
    write("checkpoint_meta", "version_2", meta(version=2))
    write("checkpoint_meta", "negative_step", meta(step=-1))
    write("checkpoint_meta", "step_string", meta(step="50"))
    write("checkpoint_meta", "no_files", meta(files=None))
    write("checkpoint_meta", "config_wrong_type", meta(config=dict(CONFIG, batch="8")))
    write("checkpoint_meta", "config_bad_range", meta(config=dict(CONFIG, **{"seq-len": 0})))
    write("checkpoint_meta", "truncated", meta()[:300])


# --- tokenizer files: encoder.json NUL vocab.bpe ---------------------------------------------
def byte_alphabet():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = {}, 0
    for b in range(256):
        if b in bs:
            cs[b] = chr(b)
        else:
            cs[b] = chr(0x100 + n)
            n += 1
    return cs


def tokenizer(merges, ascii_json=True, eot=True, extra=None):
    cs = byte_alphabet()
    spell = lambda bs: "".join(cs[b] for b in bs)
    # GPT-2 numbers the single bytes in its alphabet's order
    printable = [b for b in range(256) if cs[b] == chr(b)]
    others = [b for b in range(256) if cs[b] != chr(b)]
    vocab = [bytes([b]) for b in printable + others]
    lines = ["#version: 0.2"]
    for l, r in merges:
        vocab.append(l + r)
        lines.append(spell(l) + " " + spell(r))
    enc = {spell(t): i for i, t in enumerate(vocab)}
    if eot:
        enc["<|endoftext|>"] = len(vocab)
    if extra:
        enc.update(extra)
    return json.dumps(enc, ensure_ascii=ascii_json) + "\0" + "\n".join(lines) + "\n"


MERGES = [(b"h", b"e"), (b"l", b"l"), (b"he", b"ll"), (b" ", b"t"), (b"o", b"o"),
          (b"\xc3", b"\xa9"), (b" t", b"he")]


def tokenizer_seeds():
    write("tokenizer_files", "gpt2_style", tokenizer(MERGES))
    write("tokenizer_files", "hf_utf8", tokenizer(MERGES[:3], ascii_json=False))
    write("tokenizer_files", "bytes_only", tokenizer([]))
    write("tokenizer_files", "no_eot", tokenizer(MERGES[:2], eot=False))
    t = tokenizer(MERGES)
    write("tokenizer_files", "merges_truncated", t[: t.rindex("\n", 0, len(t) - 1)])
    write("tokenizer_files", "merge_mismatch", t.replace("o o", "o h"))
    write("tokenizer_files", "duplicate_id", tokenizer(MERGES[:1], extra={"zz": 3}))


def bpe_train_seeds():
    # The first byte picks the vocabulary size (257 + it), then texts separated by NUL bytes.
    write("bpe_train", "english", b"\x40" + b"the cat sat on the mat; the hat.\x00"
          b"It's 2024: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80!\n\n  indented\tline")
    write("bpe_train", "repeats", b"\xff" + b"aaaaaaaa aaaa aa a\x00" + b"abababab abab\x00" + b"   \n\n\n")
    write("bpe_train", "invalid_utf8", b"\x10" + b"\xff\xfe \xc3( \xe2\x82 \xed\xa0\x80 \xc3\xa9\xc3\xa9")
    write("bpe_train", "empty_texts", b"\x05" + b"\x00\x00\x00")
    write("bpe_train", "eot_text", b"\x20" + b"<|endoftext|>a<|endoftext|>b 's 're 've 'll")


# --- JSON Lines -----------------------------------------------------------------------------
def jsonl_seeds():
    write("jsonl", "fineweb_like", '{"text": "Hello world.\\nSecond line.", "id": "a", "score": 3.5}\n'
          '{"text": "caf\\u00e9 \\ud83d\\ude00", "url": "http://x"}\n\n'
          '   \n{"id": 2, "text": "last, no newline"}')
    write("jsonl", "errors", '{"text": 5}\n')
    write("jsonl", "not_object", '["text"]\n')
    write("jsonl", "no_field", '{"body": "x"}\n')
    write("jsonl", "invalid_utf8", b'{"text": "bad \xff\xfe byte"}\n{"text": "\xe2\x82"}\n')
    write("jsonl", "bad_json", '{"text": "unterminated\n')
    write("jsonl", "lone_surrogate", '{"text": "\\ud800"}\n')
    write("jsonl", "overstrike", ' {"text": "B\\bBo\\bol\\bld _\\bu"}\n{"text": "\\b\\b\\n"}\n')
    write("jsonl", "blank_text", '{"text": "   "}\n{"text": ""}\r\n{"text":"ok"}\r\n')


# --- text documents: flags byte + delimiter line, then the text --------------------------------
def text_seeds():
    fortunes = "A fortune.\n%\nAnother\n  -- someone\n%\n%\n\nlast one\n%\n"
    write("text_documents", "delimited", "\x01%\n" + fortunes)
    write("text_documents", "delimited_crlf", "\x01%\n" + fortunes.replace("\n", "\r\n"))
    write("text_documents", "delimited_two_files", "\x05%\n" + fortunes * 2)
    write("text_documents", "overstrike", "\x03%\nB\bBo\bol\bld and _\bu_\bn\n%\n\b\bx\n%\n")
    write("text_documents", "whole_file", "\x00\nOne document\nof two lines\n")
    write("text_documents", "whole_two_files", "\x04\nfirst file   second file\n")
    write("text_documents", "blank", "\x00\n \n\t\n")
    write("text_documents", "invalid_utf8", b"\x03--\n\xff\xc3(\b\n--\n\xe2\x82\b\xac\n")
    write("text_documents", "long_delimiter", "\x01<doc>\n<doc>\n<doc>\ntext\n<doc>x\n<doc>\n")


# --- metrics.jsonl --------------------------------------------------------------------------
def metrics_seeds():
    lines = []
    for s in range(6):
        lines.append(json.dumps({"step": s, "train_loss": 10.8 - s * 0.5, "lr": 1.0,
                                 "window": 64 + 8 * s, "momentum": 0.85 + 0.01 * s, "ms": 120.5}))
        if s % 2 == 0:
            lines.append(json.dumps({"step": s, "val_loss": 10.9 - s * 0.5, "window": 64 + 8 * s}))
    good = "\n".join(lines) + "\n"
    write("metrics", "run", good)
    write("metrics", "cut_last_line", good + '{"step": 6, "train_lo')
    write("metrics", "blank_lines", "\n  \n" + lines[0] + "\n\r\n")
    write("metrics", "no_step", '{"train_loss": 1}\n')
    write("metrics", "float_step", '{"step": 1.5, "train_loss": 1}\n')
    write("metrics", "neither_loss", '{"step": 1, "lr": 1}\n')
    write("metrics", "extreme_values", '{"step": 0, "train_loss": 1e308, "ms": 1e308}\n'
          '{"step": 9223372036854775807, "train_loss": -5, "lr": -1e-300}\n'
          '{"step": -3, "val_loss": 0}\n')
    write("metrics", "val_only", '{"step": 10, "val_loss": 3.3}\n')


# --- sweep spec (train/sweep_spec.h) --------------------------------------------------------
def sweep_seeds():
    good = {"preset": "tiny", "flags": {"steps": 200, "val-every": 25},
            "variants": [{"name": "window-warmup"},
                         {"name": "fixed-window", "flags": {"window-schedule": "fixed"}}],
            "seeds": 3, "out": "runs/window", "target-loss": 4.2, "parallel": 2, "threads": 2}
    write("sweep_spec", "study", json.dumps(good, indent=2))
    write("sweep_spec", "seed_list", json.dumps(dict(good, seeds=[0, 7, 18446744073709551615])))
    write("sweep_spec", "minimal", '{"preset":"tiny","variants":[{"name":"a"}],"seeds":1,"out":"o"}')
    write("sweep_spec", "every_key", json.dumps(
        {"preset": "record", "flags": {"steps": 10, "cooldown": 2, "muon-lr": 0.04, "ns-bf16": True,
                                       "train": "data/*.bin", "save-every": 5, "keep": 0},
         "variants": [{"name": "v.1_a-b", "flags": {"dtype": "fp64", "window-start": 128}}],
         "seeds": [2, 1], "out": "o", "device": "cpu"}))
    write("sweep_spec", "duplicate_key", '{"preset":"tiny","preset":"tiny","variants":[{"name":"a"}],'
          '"seeds":1,"out":"o"}')
    write("sweep_spec", "huge_count", '{"preset":"tiny","variants":[{"name":"a"}],"seeds":1e11,'
          '"out":"o","parallel":2147483648,"threads":4294967297}')
    write("sweep_spec", "reserved_flag", '{"preset":"tiny","flags":{"seed":1},"variants":[{"name":"a"}],'
          '"seeds":[1,1],"out":"o"}')
    write("sweep_spec", "cut", json.dumps(good)[:70])


# --- GEMM algorithm record (backend/cuda/gemm_record.h): tab-separated lines ---------------
def gemm_record_seeds():
    algo = ":".join("%016x" % (0x1234 * (i + 1)) for i in range(8))
    head = ("# speedrun GEMM algorithms\nformat\t2\n"
            "gpu\tNVIDIA H200\tsm_90\tcublaslt 130100\tsms 132\ntune\t8\n")
    gemm = ("gemm\t65536\t768\t3072\tN\tT\t1\t0\t0\t0\tBF16\tBF16\tBF16\t=\t256\t64\t256\t"
            + algo + "\t0.1234\t8\t3\t0.2000\n")
    stack = ("gemm\t768\t768\t768\tT\tN\t48\t589824\t589824\t589824\tBF16\tBF16\tF32\t+=\t"
             "256\t256\t16\t" + algo + "\t0.0100\t1\t0\t0.0000\n")
    write("gemm_record", "record", head + gemm + stack)
    write("gemm_record", "no_entries", head)
    write("gemm_record", "crlf", (head + gemm).replace("\n", "\r\n"))
    write("gemm_record", "format_1", head.replace("format\t2", "format\t1") + gemm)
    write("gemm_record", "twice", head + gemm + gemm)
    write("gemm_record", "odd_fields", head + gemm.replace("\t256\t64\t", "\t48\t64\t")
          + stack.replace("\t1\t0\t0.0000", "\t1\t1\t-0"))
    write("gemm_record", "huge_numbers", head.replace("sms 132", "sms 99999999999999999999")
          + gemm.replace("65536", "1099511627777").replace("0.1234", "1e9"))
    write("gemm_record", "cut", (head + gemm)[:-40])


# --- UTF-8 ----------------------------------------------------------------------------------
def utf8_seeds():
    write("utf8", "ascii", "plain ASCII text, 0123456789")
    write("utf8", "valid_mix", "caf\u00e9 \u20ac \U0001F600 \u0100\u0143")
    write("utf8", "truncated", b"\xc3 \xe2\x82 \xf0\x9f\x98A")
    write("utf8", "surrogates_overlong", b"\xed\xa0\x80 \xc0\xaf \xe0\x80\xaf \xf4\x90\x80\x80")
    write("utf8", "bytes_ff", b"\xff\xfe\x80\xbf\xf5\xf8")
    write("utf8", "overstrike", "B\bBo\bold _\bu\u00e9\b\u00e8\n\b")
    write("utf8", "gpt2_spelled", "\u0120the\u010a\u0100")


def main():
    clean()
    shards()
    safetensors_seeds()
    weights_seeds()
    checkpoint_seeds()
    tokenizer_seeds()
    bpe_train_seeds()
    jsonl_seeds()
    text_seeds()
    metrics_seeds()
    sweep_seeds()
    gemm_record_seeds()
    utf8_seeds()


if __name__ == "__main__":
    main()
