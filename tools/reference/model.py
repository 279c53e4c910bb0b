"""The GPT of SPEC.md in PyTorch: an independent reference for the C++ implementation.

Shapes: B sequences of T tokens, C = heads * head_dim width, H heads, D head dim,
V vocab, L layers. Each row of the [B, T] input is its own packed sequence: its own
document ids (inclusive cumsum of EOT tokens) and its own rotary positions 0..T-1.

Parameter names are SPEC.md's checkpoint names (transformer.wte.weight,
transformer.h.{i}.attn.c_q.weight, ..., lm_head.weight, skip_weights).

Attention backends:
  dense  any torch, any device: the full [T, T] masked softmax (the oracle; O(T^2)).
  block  any torch: query tiles of `tile` tokens against the band of keys a tile can see
         (window and document start), so O(T * window) like FlexAttention; same math.
  flex   torch >= 2.5 with CUDA: torch.nn.attention.flex_attention with a BlockMask from
         create_block_mask (mask_mod = causal & same document & window), as the record.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

RMS_EPS = torch.finfo(torch.float32).eps  # SPEC: fp32 machine epsilon for every dtype


@dataclass
class GPTConfig:
    layers: int = 12
    heads: int = 6
    head_dim: int = 128
    vocab: int = 50304
    eot: int = 50256
    rope_base: float = 10000.0
    softcap: float = 30.0

    @property
    def width(self):
        return self.heads * self.head_dim

    def validate(self):
        if self.layers < 2 or self.layers % 2:
            raise ValueError(f"layers={self.layers}: the U-net needs an even number >= 2")
        if self.heads < 1:
            raise ValueError(f"heads={self.heads}: must be >= 1")
        if self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim}: rotary needs an even head dim >= 2")
        if not 0 <= self.eot < self.vocab:
            raise ValueError(f"eot={self.eot} is outside the vocabulary [0, {self.vocab})")
        return self

    def to_metadata(self):
        return {"layers": str(self.layers), "heads": str(self.heads),
                "head_dim": str(self.head_dim), "vocab": str(self.vocab),
                "eot": str(self.eot), "format": "speedrun-gpt"}


# ---------------------------------------------------------------------------------------
# elementwise pieces

def _math_dtype(dtype):
    """fp32 math for bf16/fp16/fp32 inputs, fp64 for fp64 (gradient checks)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm(x):
    """rms_norm over the last dim, no weight, eps = fp32 machine epsilon, math in fp32.

    On CUDA with torch >= 2.4 this is F.rms_norm exactly as the record calls it (whose
    default eps is the epsilon of the fp32 opmath type). Elsewhere the same formula."""
    if x.is_cuda and hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.size(-1),))
    xf = x.to(_math_dtype(x.dtype))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + RMS_EPS)
    return y.to(x.dtype)


def rotary_inv_freq(head_dim, base=10000.0):
    """inv_freq_j = base^(-2j/D), computed in fp32 as (1/base) ** (arange(0, D, 2) / D)."""
    return (1.0 / base) ** (torch.arange(0, head_dim, 2).float() / head_dim)


def rotary_tables(T, head_dim, base, dtype, device):
    """cos, sin [T, D/2]: angle = t * inv_freq in fp32 (t = 0..T-1), then cast to dtype
    (bf16 in the record's bf16 mode; the activation dtype otherwise)."""
    inv_freq = rotary_inv_freq(head_dim, base).to(device)
    t = torch.arange(T, device=device).float()
    freqs = torch.outer(t, inv_freq)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary(x, cos, sin):
    """x [B, T, H, D]; cos, sin [T, D/2]. y1 = x1 cos + x2 sin, y2 = -x1 sin + x2 cos."""
    d = x.shape[3] // 2
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3).type_as(x)


def document_ids(idx, eot):
    """docs[b, t] = number of EOT tokens in idx[b, 0..t] (inclusive)."""
    return (idx == eot).cumsum(-1)


def visible_mask(docs, window):
    """[B, T, T] bool: key j visible to query i iff j <= i, same doc, i - j < window."""
    T = docs.shape[-1]
    i = torch.arange(T, device=docs.device)[:, None]
    j = torch.arange(T, device=docs.device)[None, :]
    causal = (j <= i) & (i - j < window)
    return causal[None] & (docs[:, :, None] == docs[:, None, :])


# ---------------------------------------------------------------------------------------
# attention backends: q, k, v [B, H, T, D] -> y [B, H, T, D]

def attention_dense(q, k, v, docs, window):
    scale = 1.0 / math.sqrt(q.size(-1))
    md = _math_dtype(q.dtype)
    scores = (q @ k.transpose(-1, -2)).to(md) * scale
    mask = visible_mask(docs, window)[:, None]  # [B, 1, T, T]
    scores = scores.masked_fill(~mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return p.to(v.dtype) @ v


def attention_block(q, k, v, docs, window, tile=128):
    """Same function as attention_dense, computed per query tile over the keys the tile
    can see: from max(q0 - window + 1, first token of q0's document) to the tile's end."""
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D)
    md = _math_dtype(q.dtype)
    pos = torch.arange(T, device=q.device)
    # doc_start[b, t] = index of the first token of t's document in row b
    is_start = torch.ones_like(docs, dtype=torch.bool)
    is_start[:, 1:] = docs[:, 1:] != docs[:, :-1]
    doc_start = torch.cummax(torch.where(is_start, pos.expand_as(docs), torch.zeros_like(docs)),
                             dim=-1).values
    outs = []
    for q0 in range(0, T, tile):
        q1 = min(q0 + tile, T)
        k0 = max(q0 - window + 1, 0, int(doc_start[:, q0].min()))
        qi = pos[q0:q1, None]
        kj = pos[None, k0:q1]
        band = (kj <= qi) & (qi - kj < window)
        mask = band[None] & (docs[:, q0:q1, None] == docs[:, None, k0:q1])  # [B, tq, tk]
        s = (q[:, :, q0:q1] @ k[:, :, k0:q1].transpose(-1, -2)).to(md) * scale
        s = s.masked_fill(~mask[:, None], float("-inf"))
        p = torch.softmax(s, dim=-1)
        outs.append(p.to(v.dtype) @ v[:, :, k0:q1])
    return torch.cat(outs, dim=2)


try:  # torch >= 2.5
    from torch.nn.attention.flex_attention import flex_attention as _flex_raw
except ImportError:
    _flex_raw = None
_flex_compiled = None


def _flex_attention():
    """The record's `flex_attention = torch.compile(flex_attention, dynamic=False)`."""
    global _flex_compiled
    if _flex_raw is None:
        raise RuntimeError(f"attention 'flex' needs torch >= 2.5 (this is {torch.__version__})")
    if _flex_compiled is None:
        _flex_compiled = torch.compile(_flex_raw, dynamic=False)
    return _flex_compiled


def attention_flex(q, k, v, block_mask):
    """Inside a compiled model, flex_attention itself (torch.compile fuses it into the
    graph); in an eager model, the compiled flex_attention (uncompiled it would
    materialise the [T, T] scores)."""
    if torch.compiler.is_compiling():
        return _flex_raw(q, k, v, block_mask=block_mask)
    return _flex_attention()(q, k, v, block_mask=block_mask)


class FlexMaskBuilder:
    """Builds the record's BlockMask for [B, T] token batches on one device.

    One mask_mod function object serves every call: it reads the document ids and the
    window from two tensors that each call overwrites in place, so neither
    create_block_mask (compiled once, as the record compiles it) nor the compiled model
    ever sees a new closure and nothing recompiles when the window changes. Hence a
    returned BlockMask is valid until the next call (use it, forward and backward, first)."""

    def __init__(self, B, T, eot, device, compile_mask=True):
        from torch.nn.attention.flex_attention import create_block_mask
        self.B, self.T, self.eot = B, T, eot
        self.device = torch.device(device)
        self.docs = torch.zeros((T,) if B == 1 else (B, T), dtype=torch.int64, device=device)
        self.window = torch.zeros((), dtype=torch.int32, device=device)
        docs, win = self.docs, self.window
        if B == 1:  # exactly the record's mask_mod: one packed sequence
            def mask_mod(b, h, q_idx, kv_idx):
                causal_mask = q_idx >= kv_idx
                document_mask = docs[q_idx] == docs[kv_idx]
                window_mask = q_idx - kv_idx < win
                return causal_mask & document_mask & window_mask
        else:
            def mask_mod(b, h, q_idx, kv_idx):
                causal_mask = q_idx >= kv_idx
                document_mask = docs[b, q_idx] == docs[b, kv_idx]
                window_mask = q_idx - kv_idx < win
                return causal_mask & document_mask & window_mask
        self.mask_mod = mask_mod
        self.create = torch.compile(create_block_mask, dynamic=False) if compile_mask \
            else create_block_mask
        self.compiled = compile_mask

    def __call__(self, idx, window):
        """idx [B, T] on the device; window: int or 0-dim tensor. Returns a BlockMask."""
        if tuple(idx.shape) != (self.B, self.T):
            raise ValueError(f"FlexMaskBuilder: idx shape {tuple(idx.shape)} != {(self.B, self.T)}")
        d = document_ids(idx, self.eot)
        self.docs.copy_(d[0] if self.B == 1 else d)
        if torch.is_tensor(window):
            self.window.copy_(window)
        else:
            self.window.fill_(int(window))
        Bm = None if self.B == 1 else self.B
        return self.create(self.mask_mod, Bm, None, self.T, self.T, device=self.device)


# ---------------------------------------------------------------------------------------
# modules (the record's structure, so state_dict names are SPEC's checkpoint names)

class CastedLinear(nn.Linear):
    """Linear without bias whose weight is cast to the activation dtype for each matmul."""

    def __init__(self, fan_in, fan_out):
        super().__init__(fan_in, fan_out, bias=False)

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg.width
        self.n_head, self.head_dim = cfg.heads, cfg.head_dim
        self.c_q = CastedLinear(C, C)
        self.c_k = CastedLinear(C, C)
        self.c_v = CastedLinear(C, C)
        self.c_proj = CastedLinear(C, C)
        self.lamb = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, v1, cos, sin, attn):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if v1 is None:
            v1 = v  # first layer: its own v (lamb then has exactly zero gradient)
        v = (1 - self.lamb) * v + self.lamb * v1.view_as(v)
        q, k = rms_norm(q), rms_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        kind, a, b, c = attn  # ("flex", block_mask, _, _) or (dense|block, docs, window, tile)
        if kind == "flex":
            y = attention_flex(q, k, vt, a)
        elif kind == "block":
            y = attention_block(q, k, vt, a, b, c)
        else:
            y = attention_dense(q, k, vt, a, b)
        y = y.transpose(1, 2).contiguous().view_as(x)
        return self.c_proj(y), v1


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg.width
        self.c_fc = CastedLinear(C, 4 * C)
        self.c_proj = CastedLinear(4 * C, C)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.lambdas = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x, v1, x0, cos, sin, attn):
        x = self.lambdas[0] * x + self.lambdas[1] * x0
        y, v1 = self.attn(rms_norm(x), v1, cos, sin, attn)
        x = x + y
        x = x + self.mlp(rms_norm(x))
        return x, v1


class GPT(nn.Module):
    def __init__(self, cfg, attention="dense", tile=128):
        super().__init__()
        self.cfg = cfg.validate()
        self.attention = attention
        self.tile = tile
        if attention == "flex":
            _flex_attention()  # created here, so a compiled forward only reads it
        self.num_encoder_layers = cfg.layers // 2
        self.num_decoder_layers = cfg.layers - self.num_encoder_layers
        self.skip_weights = nn.Parameter(torch.ones(self.num_decoder_layers))
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab, cfg.width),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.layers)]),
        ))
        self.lm_head = CastedLinear(cfg.width, cfg.vocab)
        self._rotary_T = None  # cache of (cos, sin) for one T, like the record's Rotary
        self._rotary = None

    def _rotary_tables(self, T, dtype, device):
        if T != self._rotary_T:
            self._rotary = rotary_tables(T, self.cfg.head_dim, self.cfg.rope_base, dtype, device)
            self._rotary_T = T
        return self._rotary

    def prepare_rotary(self, T, dtype, device):
        """Fills the rotary cache ahead of time, so that a compiled forward only reads it."""
        self._rotary_tables(T, dtype, torch.device(device))

    def forward(self, idx, targets, window, block_mask=None):
        """idx, targets [B, T] int64; window: int (dense/block) or ignored when block_mask
        is given (flex). Returns the mean cross entropy (fp32, or fp64 for fp64 models)."""
        if idx.dim() == 1:
            idx, targets = idx[None], targets[None]
        B, T = idx.shape
        if self.attention == "flex":
            if block_mask is None:
                raise ValueError("attention 'flex' needs a block_mask (see FlexMaskBuilder)")
            attn = ("flex", block_mask, None, None)
        elif self.attention in ("dense", "block"):
            if int(window) < 1:
                raise ValueError(f"attention window {int(window)} must be >= 1")
            attn = (self.attention, document_ids(idx, self.cfg.eot), int(window), self.tile)
        else:
            raise ValueError(f"attention '{self.attention}': expected dense, block or flex")

        x = self.transformer.wte(idx)
        x = rms_norm(x)
        x0 = x
        cos, sin = self._rotary_tables(T, x.dtype, x.device)
        v1 = None
        skips = []
        for i in range(self.num_encoder_layers):
            x, v1 = self.transformer.h[i](x, v1, x0, cos, sin, attn)
            skips.append(x)
        for i in range(self.num_decoder_layers):
            x = x + self.skip_weights[i] * skips.pop()
            x, v1 = self.transformer.h[self.num_encoder_layers + i](x, v1, x0, cos, sin, attn)
        x = rms_norm(x)
        logits = self.lm_head(x)
        cap = self.cfg.softcap
        logits = cap * torch.tanh(logits / cap)
        logits = logits.to(_math_dtype(logits.dtype))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


# ---------------------------------------------------------------------------------------
# initialisation and precision

def linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, CastedLinear)]


@torch.no_grad()
def init_weights_(model, seed):
    """SPEC init: c_q/c_k/c_v/c_fc uniform(+-1/sqrt(fan_in)) (nn.Linear's default), wte
    normal(0, 1), every c_proj and lm_head zero, lambdas [1, 0], lamb 0.5, skip_weights 1;
    then every value rounded to bf16 (the record casts the model to bf16 and back)."""
    g = torch.Generator().manual_seed(int(seed))
    model.transformer.wte.weight.copy_(torch.randn(model.transformer.wte.weight.shape, generator=g))
    for blk in model.transformer.h:
        for lin in (blk.attn.c_q, blk.attn.c_k, blk.attn.c_v, blk.mlp.c_fc):
            bound = 1.0 / math.sqrt(lin.weight.shape[1])
            lin.weight.copy_(torch.rand(lin.weight.shape, generator=g) * (2 * bound) - bound)
        blk.attn.c_proj.weight.zero_()
        blk.mlp.c_proj.weight.zero_()
        blk.lambdas.copy_(torch.tensor([1.0, 0.0]))
        blk.attn.lamb.fill_(0.5)
    model.lm_head.weight.zero_()
    model.skip_weights.fill_(1.0)
    for p in model.parameters():
        p.copy_(p.to(torch.bfloat16).to(p.dtype))
    return model


def set_precision_(model, dtype):
    """fp32 / fp64: every parameter in that dtype. bf16: the record's layout, i.e. the
    whole model in bf16, then the CastedLinear weights back to fp32."""
    if dtype == torch.bfloat16:
        model.bfloat16()
        for m in model.modules():
            if isinstance(m, CastedLinear):
                m.float()
    else:
        model.to(dtype)
    model._rotary_T = None
    return model


def matmul_param_count(cfg):
    """Parameters that take part in matmuls (every linear; not wte, not scalars)."""
    C = cfg.width
    return cfg.layers * (4 * C * C + 8 * C * C) + C * cfg.vocab


def state_dict_fp32(model):
    return {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}


def load_weights_(model, tensors, name="weights"):
    """Copies SPEC-named tensors into the model (converting dtype); every name and shape
    must match exactly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise ValueError(f"{name}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}")
    with torch.no_grad():
        for k, p in own.items():
            t = tensors[k]
            if tuple(t.shape) != tuple(p.shape):
                raise ValueError(f"{name}: '{k}' has shape {tuple(t.shape)}, the model expects "
                                 f"{tuple(p.shape)}")
            p.copy_(t.to(p.dtype))
    return model
