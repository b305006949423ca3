"""Torch building blocks: the pieces a virtual layer runs. Small and static on purpose, so
torch.compile traces one graph with no breaks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import AttentionSettings, ComponentUse, MLPSettings


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMSNorm over the last dimension (eps from the dtype, as the baseline)."""
    return F.rms_norm(x, (x.size(-1),))


class PassHook:
    """A component acting around a block on each pass that owns its tensors: `pre(own, x)` on the
    block's input, `post(own, x_in, x, prev)` on its output (`x_in` the input after the `pre`
    hooks, `prev` the same block's output on its previous pass, None on a first pass). Identity on
    both sides; a component overrides the side it acts on. It keeps only its ComponentUse (name
    and validated settings) and reads its tensors from `own`, the pass's module, so one hook
    serves every pass and torch.compile sees plain attribute reads."""

    def __init__(self, use: ComponentUse) -> None:
        self.use = use

    def pre(self, own: nn.Module, x: Tensor) -> Tensor:
        return x

    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        return x


class CastedLinear(nn.Linear):
    """fp32 master weights, cast to the activation dtype at use (bf16 under autocast)."""

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class Projections:
    """The adapters on one virtual layer's projections, fixed at build time: "attn.c_q", "mlp.fc",
    ... → the adapters (per-pass LoRA, Legendre sharing) in spec order. An adapter has
    `weight(w) -> w` (forms the weight the layer multiplies by) and `output(x, y) -> y` (adds to
    the product). Static tables and plain method calls: torch.compile inlines them."""

    def __init__(self, table: dict[str, tuple]) -> None:
        self.table = table
        self.forms = {name: any(a.forms_weight for a in adapters) for name, adapters in table.items()}

    def __call__(self, name: str, linear: nn.Module, x: Tensor) -> Tensor:
        adapters = self.table.get(name, ())
        if self.forms.get(name, False):
            w = linear.weight
            for a in adapters:
                w = a.weight(w)
            y = F.linear(x, w.to(x.dtype))
        else:       # the module itself: its forward hooks (export's Hessians) still see the input
            y = linear(x)
        for a in adapters:
            y = a.output(x, y)
        return y


def project(adapt: Projections | None, name: str, linear: nn.Module, x: Tensor) -> Tensor:
    """One projection of a layer, through its adapters where it has any."""
    return linear(x) if adapt is None else adapt(name, linear, x)


class Rotary(nn.Module):
    """RoPE tables for the first `dims` of each head (all of it when dims == head_dim)."""

    def __init__(self, dims: int, base: float, max_len: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32) / dims))
        t = torch.arange(max_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        self.dims = dims
        self.register_buffer("cos", freqs.cos()[None, None], persistent=False)
        self.register_buffer("sin", freqs.sin()[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        T = x.size(-2)
        cos, sin = self.cos[..., :T, :].to(x.dtype), self.sin[..., :T, :].to(x.dtype)
        rot, rest = x[..., : self.dims], x[..., self.dims:]
        half = self.dims // 2
        x1, x2 = rot[..., :half], rot[..., half:]
        rotated = torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), dim=-1)
        return rotated if rest.size(-1) == 0 else torch.cat((rotated, rest), dim=-1)


class Attention(nn.Module):
    """GQA causal self-attention with q/k RMS-norm, RoPE, per-head q_gain and optional XSA, output
    gates (model.attention.gate), a low-rank key projection and document masking."""

    def __init__(self, dim: int, heads: int, kv_heads: int, q_gain_init: float,
                 settings: AttentionSettings = AttentionSettings(), own_q_gain: bool = True) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        if own_q_gain:      # else each virtual layer passes its own (per_pass.q_gain)
            self.q_gain = nn.Parameter(torch.full((heads,), float(q_gain_init)))
        kv = kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        if settings.k_rank:
            self.c_k_down = CastedLinear(dim, settings.k_rank)
            self.c_k = CastedLinear(settings.k_rank, kv)
        else:
            self.c_k = CastedLinear(dim, kv)
        self.c_v = CastedLinear(dim, kv)
        self.proj = CastedLinear(dim, dim, zero_init=True)
        self.low_rank_k = settings.k_rank > 0
        self.gate_kind = settings.gate
        self.gate_window = settings.gate_window
        self.gate_scale = settings.gate_scale
        if settings.gate != "none":
            self.gate = CastedLinear(dim if settings.gate == "dense" else settings.gate_window, heads, zero_init=True)

    def _gate(self, x: Tensor) -> Tensor:
        """Per-head output gate (B, T, H, 1) from the attention input."""
        if self.gate_kind == "dense":
            g = torch.sigmoid(self.gate(x))
        elif self.gate_kind == "sparse":
            g = torch.sigmoid(self.gate_scale * self.gate(x[..., : self.gate_window]))
        else:   # sigmoid2: 2·σ(W·x[:w]), 1 at zero init
            g = 2 * torch.sigmoid(self.gate(x[..., : self.gate_window]))
        return g.unsqueeze(-1)

    def forward(self, x: Tensor, rotary: Rotary, xsa: bool, mask: Tensor | None = None,
                v_extra: Tensor | None = None, q_gain: Tensor | None = None,
                adapt: Projections | None = None) -> Tensor:
        B, T, C = x.shape
        q = project(adapt, "attn.c_q", self.c_q, x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k_in = project(adapt, "attn.c_k_down", self.c_k_down, x) if self.low_rank_k else x
        k = project(adapt, "attn.c_k", self.c_k, k_in).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = project(adapt, "attn.c_v", self.c_v, x)
        if v_extra is not None:       # value embeddings (recurc/components/value.py)
            v = v + v_extra
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotary(rms_norm(q)), rotary(rms_norm(k))
        q = q * (self.q_gain if q_gain is None else q_gain).to(q.dtype)[None, :, None, None]
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.heads)
        else:   # causal and within the document (mask: B×1×T×T, True = attend)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.heads)
        if xsa:
            y = exclusive(y, v, self.heads // self.kv_heads)
        y = y.transpose(1, 2)
        if self.gate_kind != "none":
            y = y * self._gate(x).to(y.dtype)
        return project(adapt, "attn.proj", self.proj, y.reshape(B, T, C))


def document_mask(idx: Tensor, bos_id: int) -> Tensor:
    """B×1×T×T: causal attention within documents, a document starting at each `bos_id` token."""
    doc = torch.cumsum((idx == bos_id).to(torch.int32), dim=1)
    T = idx.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    return (causal[None] & (doc[:, :, None] == doc[:, None, :]))[:, None]


def exclusive(y: Tensor, v: Tensor, group: int) -> Tensor:
    """XSA: remove from each head's output its component along the token's own value vector.

    Works per KV group so the value heads are never materialised `group` times."""
    B, H, T, D = y.shape
    yg = y.view(B, H // group, group, T, D)
    vn = F.normalize(v, dim=-1).unsqueeze(2)
    yg = yg - (yg * vn).sum(-1, keepdim=True) * vn
    return yg.view(B, H, T, D)


class MLP(nn.Module):
    """relu2: fc → relu(·)² → proj (the `relu2` component)."""

    def __init__(self, dim: int, settings: MLPSettings) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, settings.hidden)
        self.proj = CastedLinear(settings.hidden, dim, zero_init=True)

    def activation(self, h: Tensor) -> Tensor:
        return torch.relu(h)

    def forward(self, x: Tensor, down: nn.Module | None = None, adapt: Projections | None = None) -> Tensor:
        """`down`: a pass's own down projection in place of `proj` (sharing: mlp_down); `adapt`:
        the layer's projection adapters (the component's `projections`: fc, proj)."""
        h = self.activation(project(adapt, "mlp.fc", self.fc, x)).square()
        return project(adapt, "mlp.proj", self.proj if down is None else down, h)


class LeakyMLP(MLP):
    """leaky_relu2: fc → leaky_relu(·, negative_slope)² → proj (the `leaky_relu2` component)."""

    def __init__(self, dim: int, settings: MLPSettings) -> None:
        super().__init__(dim, settings)
        self.negative_slope = settings.negative_slope

    def activation(self, h: Tensor) -> Tensor:
        return F.leaky_relu(h, self.negative_slope)


def add_block_scalars(module: nn.Module, dim: int) -> None:
    """attn_scale, mlp_scale and resid_mix: owned by a block, or by a virtual layer."""
    module.attn_scale = nn.Parameter(torch.ones(dim))
    module.mlp_scale = nn.Parameter(torch.ones(dim))
    module.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))))


def sinusoidal_table(rows: int, dim: int) -> Tensor:
    """Depth encoding with no stored bytes: row d encodes virtual layer d."""
    pos = torch.arange(rows, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = pos / (10000 ** (i / dim))
    table = torch.zeros(rows, dim)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table / math.sqrt(dim)


def init_tensor(t: Tensor, how: str) -> None:
    """Initialise a parameter as its Plan entry says (`ParamInfo.init`); "module" keeps the
    module's own initialisation (nn.Linear's)."""
    kind, _, arg = how.partition(":")
    with torch.no_grad():
        if kind == "zeros":
            t.zero_()
        elif kind == "ones":
            t.fill_(1.0)
        elif kind == "const":
            t.fill_(float(arg))
        elif kind == "rows":        # row i filled with the i-th value (resid_mix: "rows:1,0")
            for i, v in enumerate(arg.split(",")):
                t[i].fill_(float(v))
        elif kind == "normal":
            t.normal_(0.0, float(arg))
        elif kind != "module":
            raise ValueError(f"unknown init {how!r}")
