"""Hand-written reference models for the parameter-golf naive baseline.

This file is deliberately independent of recurc: it is written from the
description in FACTS.md only, in the style of nanoGPT's model.py, so that a
compiled recurc module can be checked against it (same weights in, same
logits/loss out).

Two models:

* ``Reference``       -- the challenge's naive baseline: 9 blocks, U-Net skips
                          (encoder = first 4 blocks, decoder = last 5).
                          17,059,912 parameters at full size.
* ``LoopedReference`` -- 11 physical blocks run in the order
                          0,1,2,3,4,5,4,5,6,7,8,9,10 (13 virtual layers).
                          Blocks 4 and 5 run twice with the same weights,
                          including their scalars. U-Net over the 13 virtual
                          layers: encoder = first 6, decoder = last 7, 6 skips.

Conventions (choices FACTS.md leaves open, fixed here and stated once):

* RMS_EPS = None: ``F.rms_norm(..., eps=None)``, i.e. torch uses
  ``torch.finfo(x.dtype).eps`` (1.19e-7 in fp32).
* RoPE: base 10000 over the full head dim, "rotate-half" layout: the head dim
  is split into a first and a second half, pair j = (x[j], x[j + D/2]) is
  rotated with frequency inv_freq[j] = base ** (-2j / D). The rotation is
      y1 = x1 * cos + x2 * sin
      y2 = -x1 * sin + x2 * cos
  i.e. by angle -theta (the modded-nanogpt form). The GPT-NeoX / HF form
  rotates by +theta (y1 = x1*cos - x2*sin); the two give different logits.
* q_gain multiplies q after RoPE (it is a per-head scalar, so the order
  only matters at rounding level).
* Attention scale is SDPA's default 1/sqrt(head_dim).
* Logits are computed in fp32, then softcapped: 30 * tanh(z / 30).

Parameter names (state_dict keys):
    tok_emb.weight
    blocks.{i}.attn.c_q.weight / c_k.weight / c_v.weight / proj.weight
    blocks.{i}.attn.q_gain                      (num_heads,)
    blocks.{i}.mlp.fc.weight / proj.weight
    blocks.{i}.attn_scale, blocks.{i}.mlp_scale (dim,)
    blocks.{i}.resid_mix                        (2, dim)
    skip_weights                                (num_skips, dim)
The RoPE cos/sin tables are non-persistent buffers (not in the state_dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

RMS_EPS = None  # None -> torch.finfo(dtype).eps inside F.rms_norm
ROPE_BASE = 10000.0
LOGIT_SOFTCAP = 30.0
Q_GAIN_INIT = 1.5
EMB_INIT_STD = 0.005

# the looped model's order of physical blocks over virtual layers
LOOP_ORDER = (0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10)


@dataclass
class RefConfig:
    vocab_size: int = 1024
    dim: int = 512
    num_layers: int = 9  # physical blocks (Reference); LoopedReference needs 11
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: int = 2
    seq_len: int = 1024  # longest sequence the RoPE table covers


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm over the last dim."""
    return F.rms_norm(x, (x.size(-1),), eps=RMS_EPS)


def rope_tables(seq_len: int, head_dim: int, base: float = ROPE_BASE):
    """cos, sin of shape (seq_len, head_dim // 2), fp32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (T, D/2). Rotate-half layout, angle -theta."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        assert cfg.dim % cfg.num_heads == 0
        assert cfg.num_heads % cfg.num_kv_heads == 0
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.dim // cfg.num_heads
        assert self.head_dim % 2 == 0
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.c_k = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.c_v = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        nn.init.zeros_(self.proj.weight)  # zero-init output projection
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), Q_GAIN_INIT))

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rms_norm(q), rms_norm(k)  # QK-norm per head
        q, k = apply_rope(q, cos[:T], sin[:T]), apply_rope(k, cos[:T], sin[:T])
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        # GQA: each kv head serves num_heads // num_kv_heads consecutive q heads
        gqa = self.num_heads != self.num_kv_heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.dim, cfg.mlp_mult * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.mlp_mult * cfg.dim, cfg.dim, bias=False)
        nn.init.zeros_(self.proj.weight)  # zero-init output projection

    def forward(self, x):
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.dim))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(cfg.dim), torch.zeros(cfg.dim)]))

    def forward(self, x, x0, cos, sin):
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x), cos, sin)
        x = x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))
        return x


class _RefBase(nn.Module):
    """Embedding, RoPE tables and the tied, softcapped head shared by both models."""

    def __init__(self, cfg: RefConfig, num_blocks: int, num_skips: int):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=EMB_INIT_STD)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(num_blocks)])
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.dim))
        cos, sin = rope_tables(cfg.seq_len, cfg.dim // cfg.num_heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def embed(self, idx):
        assert idx.size(1) <= self.cfg.seq_len, "sequence longer than the RoPE table"
        return rms_norm(self.tok_emb(idx))

    def head(self, x, targets):
        x = rms_norm(x)
        logits = F.linear(x, self.tok_emb.weight).float()  # tied head, fp32 logits
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Reference(_RefBase):
    """Naive baseline: num_layers blocks, U-Net skips over them."""

    def __init__(self, cfg: RefConfig | None = None):
        cfg = cfg or RefConfig()
        self.num_encoder = cfg.num_layers // 2  # 4 at full size
        self.num_decoder = cfg.num_layers - self.num_encoder  # 5
        num_skips = min(self.num_encoder, self.num_decoder)  # 4
        super().__init__(cfg, cfg.num_layers, num_skips)

    def forward(self, idx, targets=None):
        cos, sin = self.rope_cos, self.rope_sin
        x = x0 = self.embed(idx)
        skips = []
        for i in range(self.num_encoder):
            x = self.blocks[i](x, x0, cos, sin)
            skips.append(x)
        for i in range(self.num_decoder):
            if i < self.skip_weights.size(0):
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()  # LIFO
            x = self.blocks[self.num_encoder + i](x, x0, cos, sin)
        return self.head(x, targets)


class LoopedReference(_RefBase):
    """11 physical blocks run as 0,1,2,3,4,5,4,5,6,7,8,9,10 (13 virtual layers).

    Virtual layers 0..5 are the encoder (blocks 0,1,2,3,4,5), virtual layers
    6..12 the decoder (blocks 4,5,6,7,8,9,10). Blocks 4 and 5 are the same
    module objects both times they run. 6 skip weights.
    """

    ENCODER = (0, 1, 2, 3, 4, 5)  # physical block of each encoder virtual layer
    DECODER = (4, 5, 6, 7, 8, 9, 10)  # physical block of each decoder virtual layer

    def __init__(self, cfg: RefConfig | None = None):
        cfg = cfg or RefConfig(num_layers=11)
        assert cfg.num_layers == 11, "LoopedReference has exactly 11 physical blocks"
        assert self.ENCODER + self.DECODER == LOOP_ORDER
        super().__init__(cfg, 11, num_skips=6)

    def forward(self, idx, targets=None):
        cos, sin = self.rope_cos, self.rope_sin
        x = x0 = self.embed(idx)
        skips = []
        for b in self.ENCODER:
            x = self.blocks[b](x, x0, cos, sin)
            skips.append(x)
        for i, b in enumerate(self.DECODER):
            if i < 6:
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()  # LIFO
            x = self.blocks[b](x, x0, cos, sin)
        return self.head(x, targets)


if __name__ == "__main__":
    for cls, cfg in ((Reference, RefConfig()), (LoopedReference, RefConfig(num_layers=11))):
        m = cls(cfg)
        print(f"{cls.__name__}: {m.num_params():,} parameters")
