"""Token shards, the record's data loader, and safetensors files, per SPEC.md.

Shard: 256 little-endian int32 header ([0] magic 20240520, [1] version 1, [2] N tokens),
then N little-endian uint16 tokens; nothing else.
Safetensors: u64 little-endian header length, a JSON header {name: {dtype, shape,
data_offsets: [begin, end)}, optional "__metadata__": {str: str}}, then the raw data.
"""
import glob as _glob
import json
import os
import struct

import numpy as np
import torch

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256


# ---------------------------------------------------------------------------------------
# shards

def read_shard_header(path):
    """Validates a shard's header and size; returns its token count N."""
    size = os.path.getsize(path)
    if size < HEADER_INTS * 4:
        raise ValueError(f"shard {path}: {size} bytes, shorter than the 1024-byte header")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_INTS * 4), dtype="<i4")
    if header[0] != SHARD_MAGIC:
        raise ValueError(f"shard {path}: magic {header[0]} != {SHARD_MAGIC}: not a token shard")
    if header[1] != SHARD_VERSION:
        raise ValueError(f"shard {path}: version {header[1]} unsupported (expected {SHARD_VERSION})")
    n = int(header[2])
    if n < 0 or size != HEADER_INTS * 4 + 2 * n:
        raise ValueError(f"shard {path}: header says {n} tokens but the file holds "
                         f"{(size - HEADER_INTS * 4) / 2:g}")
    return n


def load_shard(path):
    """The tokens of a validated shard as a uint16 numpy array."""
    n = read_shard_header(path)
    with open(path, "rb") as f:
        f.seek(HEADER_INTS * 4)
        tokens = np.frombuffer(f.read(2 * n), dtype="<u2")
    if len(tokens) != n:
        raise ValueError(f"shard {path}: read {len(tokens)} tokens, header says {n}")
    return tokens


def write_shard(path, tokens):
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 65535):
        raise ValueError(f"write_shard {path}: token ids must fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


class DataLoader:
    """Rank r of W ranks, B sequences of T tokens per batch (SPEC.md "Loader").

    Files are the glob's matches in sorted order. pos starts at r*B*T; a batch is
    tokens[pos, pos + B*T + 1): x = the first B*T, y = the same shifted by one, both
    shaped [B, T]; then pos += B*T*W, and when pos + B*T*W >= N the loader moves to the
    next shard (cycling) with pos = r*B*T."""

    def __init__(self, pattern, B, T, rank=0, world=1):
        self.files = sorted(_glob.glob(pattern))
        if not self.files:
            raise ValueError(f"no files match '{pattern}'")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside [0, {world})")
        self.B, self.T, self.rank, self.world = B, T, rank, world
        self.ntok_total = 0
        for f in self.files:
            n = read_shard_header(f)
            if n < world * B * T + 1:
                raise ValueError(f"shard {f}: {n} tokens, fewer than one step needs "
                                 f"(W*B*T + 1 = {world * B * T + 1})")
            self.ntok_total += n
        self.reset()

    def reset(self):
        self.current_shard = -1
        self.advance()

    def advance(self):
        self.current_shard = (self.current_shard + 1) % len(self.files)
        self.current_position = self.rank * self.B * self.T
        self.tokens = load_shard(self.files[self.current_shard])

    def next_batch(self):
        B, T = self.B, self.T
        step = B * T * self.world
        buf = self.tokens[self.current_position:self.current_position + B * T + 1]
        buf = torch.from_numpy(buf.astype(np.int64))
        x = buf[:-1].view(B, T)
        y = buf[1:].view(B, T)
        self.current_position += step
        if self.current_position + step >= len(self.tokens):
            self.advance()
        return x, y


# ---------------------------------------------------------------------------------------
# safetensors

_ST_DTYPES = {
    "F64": (torch.float64, "<f8"), "F32": (torch.float32, "<f4"), "F16": (torch.float16, "<f2"),
    "BF16": (torch.bfloat16, "<i2"), "I64": (torch.int64, "<i8"), "I32": (torch.int32, "<i4"),
    "I16": (torch.int16, "<i2"), "U8": (torch.uint8, "u1"),
}
_ST_NAMES = {v[0]: k for k, v in _ST_DTYPES.items()}


def _to_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(_ST_DTYPES[_ST_NAMES[t.dtype]][1]).tobytes()


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (names in sorted order) with optional str->str metadata."""
    header, blobs, offset = {}, [], 0
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _ST_NAMES:
            raise TypeError(f"safetensors: tensor '{name}' has unsupported dtype {t.dtype}")
        b = _to_bytes(t)
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path):
    """Returns ({name: tensor}, metadata dict); validates offsets, dtypes and sizes."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"safetensors {path}: shorter than its 8-byte header length")
    (hlen,) = struct.unpack("<Q", data[:8])
    if 8 + hlen > len(data):
        raise ValueError(f"safetensors {path}: header length {hlen} exceeds the file")
    try:
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"safetensors {path}: header is not JSON ({e})") from None
    meta = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + hlen:]
    out = {}
    for name, info in header.items():
        dt = info.get("dtype")
        if dt not in _ST_DTYPES:
            raise ValueError(f"safetensors {path}: tensor '{name}' dtype {dt} unsupported")
        tdt, npdt = _ST_DTYPES[dt]
        shape = [int(s) for s in info["shape"]]
        b, e = (int(v) for v in info["data_offsets"])
        numel = int(np.prod(shape)) if shape else 1
        if not 0 <= b <= e <= len(body) or e - b != numel * np.dtype(npdt).itemsize:
            raise ValueError(f"safetensors {path}: tensor '{name}' offsets [{b}, {e}) do not "
                             f"fit shape {shape} of {dt} in {len(body)} data bytes")
        arr = np.frombuffer(body[b:e], dtype=npdt).copy()
        arr = arr.astype(arr.dtype.newbyteorder("="))  # native byte order for torch
        t = torch.from_numpy(arr)
        if tdt == torch.bfloat16:
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(shape)
    return out, dict(meta)
