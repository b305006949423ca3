"""Plan → nn.Module.

The module owns each tensor once: physical blocks in `blocks.<name>`, per-pass parameters in
`passes.<virtual index>`, model-level ones at the top. Virtual layers are not modules: each path of
the Plan becomes a tuple of `LayerRun` records holding *references* to the modules they run, fixed
at build time. Forward walks that tuple — static unrolling, so torch.compile traces one graph per
path with no data-dependent control flow, and a shared block is one object reached twice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn.layers import MLP, Attention, Rotary, add_block_scalars, rms_norm, sinusoidal_table
from .plan import Plan, make_plan
from .spec import Spec


class Block(nn.Module):
    """A physical block's own tensors: scalars (unless per pass), attention and MLP (unless borrowed)."""


class PassParams(nn.Module):
    """Tensors owned by one virtual layer (a pass of a block)."""


@dataclass(frozen=True, eq=False)
class LayerRun:
    """Everything one virtual layer needs, resolved at build time."""
    index: int
    attn: Attention
    mlp: MLP
    scalars: nn.Module          # holds attn_scale, mlp_scale, resid_mix
    own: nn.Module | None       # PassParams with per-pass tensors
    parallel: bool
    xsa: bool
    skip_slot: int | None
    skip_from: int | None
    prev_pass: int | None
    norm_scale: float
    residual_scale: float
    depth_row: int | None       # row of the sinusoidal depth encoding to add, if any
    cross_repeat: bool


class RecurrentLM(nn.Module):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        spec = plan.spec
        m, pp = spec.model, spec.per_pass
        by_name = plan.param_by_name
        n_skips = by_name["skip_weights"].shape[0] if "skip_weights" in by_name else 0
        if n_skips:
            self.skip_weights = nn.Parameter(torch.ones(n_skips, m.dim))
            if "skip_gates" in by_name:
                self.skip_gates = nn.Parameter(torch.zeros(n_skips, m.dim))
        self.gated = "skip_gates" in by_name
        self.tok_emb = nn.Embedding(m.vocab_size, m.dim)
        nn.init.normal_(self.tok_emb.weight, std=0.005)

        def attention() -> Attention:
            return Attention(m.dim, m.heads, m.kv_heads, m.q_gain_init)

        def mlp(hidden: int, activation: str) -> MLP:
            return MLP(m.dim, hidden, activation, m.mlp.negative_slope)

        self.blocks = nn.ModuleDict()
        for blk in plan.blocks:
            mod = Block()
            prefix = f"blocks.{blk.name}"
            if f"{prefix}.attn_scale" in by_name:
                add_block_scalars(mod, m.dim)
            if blk.attn == f"{prefix}.attn":
                mod.attn = attention()
            if blk.mlp == f"{prefix}.mlp":
                mod.mlp = mlp(blk.mlp_hidden, blk.activation)
            self.blocks[blk.name] = mod

        self.passes = nn.ModuleDict()
        for layer in plan.layers:
            own = f"passes.{layer.index}"
            if not any(name.startswith(own + ".") for name in by_name):
                continue
            mod = PassParams()
            if f"{own}.attn_scale" in by_name:
                add_block_scalars(mod, m.dim)
            if f"{own}.iter_emb" in by_name:
                mod.iter_emb = nn.Parameter(torch.zeros(m.dim))
            if f"{own}.film_scale" in by_name:
                mod.film_scale = nn.Parameter(torch.zeros(m.dim))
                mod.film_shift = nn.Parameter(torch.zeros(m.dim))
            if f"{own}.gamma" in by_name:
                mod.gamma = nn.Parameter(torch.ones(m.dim))
            if f"{own}.cross_repeat" in by_name:
                mod.cross_repeat = nn.Parameter(torch.zeros(m.dim))
            if f"{own}.attn.c_q.weight" in by_name:
                mod.attn = attention()
            if f"{own}.mlp.fc.weight" in by_name:
                blk = plan.blocks[layer.block]
                mod.mlp = mlp(blk.mlp_hidden, blk.activation)
            self.passes[str(layer.index)] = mod

        if not m.tied_embeddings:
            self.lm_head = nn.Linear(m.dim, m.vocab_size, bias=False)
            nn.init.zeros_(self.lm_head.weight)
        # marks the head's input, so export can hook it for GPTQ of a tied embedding (no tensors)
        self.head_in = nn.Identity()

        head_dim = m.head_dim
        self.rotary = Rotary(m.rope.dims or head_dim, m.rope.base, m.seq_len)
        max_depth = max(p.depth for p in plan.paths.values())
        self.sinusoidal = pp.iteration_embedding == "sinusoidal"
        if self.sinusoidal:
            self.register_buffer("depth_table", sinusoidal_table(max_depth, m.dim), persistent=False)
        self.softcap = m.logit_softcap
        self.timestep_cap = pp.timestep_cap
        self.runs: dict[str, tuple[LayerRun, ...]] = {name: self._runs(name) for name in plan.paths}

    # ---- build-time resolution of module paths
    def _module(self, path: str) -> nn.Module:
        return self.get_submodule(path)

    def _runs(self, path: str) -> tuple[LayerRun, ...]:
        out = []
        for layer in self.plan.paths[path].layers:
            own = self._module(layer.per_pass) if layer.per_pass else None
            out.append(LayerRun(
                index=layer.index, attn=self._module(layer.attn), mlp=self._module(layer.mlp),
                scalars=self._module(layer.scalars), own=own, parallel=layer.parallel, xsa=layer.xsa,
                skip_slot=layer.skip_slot, skip_from=layer.skip_from, prev_pass=layer.prev_pass,
                norm_scale=layer.norm_scale, residual_scale=layer.residual_scale,
                depth_row=layer.depth_index if self.sinusoidal else None,
                cross_repeat=own is not None and layer.prev_pass is not None and hasattr(own, "cross_repeat"),
            ))
        return tuple(out)

    # ---- forward
    def forward(self, idx: Tensor, targets: Tensor | None = None, path: str = "main") -> Tensor:
        x = x0 = rms_norm(self.tok_emb(idx))
        outs: list[Tensor] = []
        for run in self.runs[path]:
            if run.skip_slot is not None:
                x = self._skip(x, outs[run.skip_from], run.skip_slot)
            x = self._layer(run, x, x0, outs)
            outs.append(x)
        return self._head(x, targets)

    def _skip(self, x: Tensor, skip: Tensor, slot: int) -> Tensor:
        scaled = self.skip_weights[slot].to(x.dtype) * skip
        if self.gated:
            # sigmoid gate per channel between the running stream and the weighted skip
            return torch.lerp(scaled, x, torch.sigmoid(self.skip_gates[slot].to(x.dtype)))
        return x + scaled

    def _layer(self, run: LayerRun, x: Tensor, x0: Tensor, outs: list[Tensor]) -> Tensor:
        own = run.own
        if run.depth_row is not None:
            x = x + self.depth_table[run.depth_row].to(x.dtype)
        if own is not None:
            if hasattr(own, "iter_emb"):
                x = x + own.iter_emb.to(x.dtype)
            if hasattr(own, "film_scale"):
                x = x * (1 + own.film_scale.to(x.dtype)) + own.film_shift.to(x.dtype)
        x_in = x
        s = run.scalars
        mix = s.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        attn_scale, mlp_scale = s.attn_scale.to(x.dtype), s.mlp_scale.to(x.dtype)
        if run.parallel:
            h = rms_norm(x) * run.norm_scale if run.norm_scale != 1.0 else rms_norm(x)
            update = attn_scale * run.attn(h, self.rotary, run.xsa) + mlp_scale * run.mlp(h)
            x = x + update * run.residual_scale if run.residual_scale != 1.0 else x + update
        else:
            x = x + self._scaled(attn_scale * run.attn(self._norm(x, run), self.rotary, run.xsa), run)
            x = x + self._scaled(mlp_scale * run.mlp(self._norm(x, run)), run)
        if own is not None and hasattr(own, "gamma"):
            gamma = own.gamma.clamp(-self.timestep_cap, self.timestep_cap).to(x.dtype)
            x = x_in + gamma * (x - x_in)
        if run.cross_repeat:
            x = x + own.cross_repeat.to(x.dtype) * outs[run.prev_pass]
        return x

    @staticmethod
    def _norm(x: Tensor, run: LayerRun) -> Tensor:
        return rms_norm(x) * run.norm_scale if run.norm_scale != 1.0 else rms_norm(x)

    @staticmethod
    def _scaled(update: Tensor, run: LayerRun) -> Tensor:
        return update * run.residual_scale if run.residual_scale != 1.0 else update

    def _head(self, x: Tensor, targets: Tensor | None) -> Tensor:
        x = self.head_in(rms_norm(x))
        weight = self.lm_head.weight if hasattr(self, "lm_head") else self.tok_emb.weight
        logits = F.linear(x, weight.to(x.dtype)).float()
        if self.softcap is not None:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def build(spec_or_plan: Spec | Plan, device: str | torch.device | None = None) -> RecurrentLM:
    """Build the module for a spec (or an existing Plan); parameters are fp32."""
    plan = spec_or_plan if isinstance(spec_or_plan, Plan) else make_plan(spec_or_plan)
    if device is not None and str(device) == "meta":
        with torch.device("meta"):
            return RecurrentLM(plan)
    model = RecurrentLM(plan)
    return model.to(device) if device is not None else model


# `recurc.build(...)`: the module itself is callable (see recurc/_callable.py).
from ._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, build)
