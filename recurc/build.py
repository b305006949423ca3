"""Plan → nn.Module.

The module owns each tensor once: physical blocks in `blocks.<name>`, per-pass parameters in
`passes.<virtual index>`, token-level components under their name, model-level ones at the top.
Every tensor is created where the Plan's owner says and initialised as the Plan's `init` says.
Virtual layers are not modules: each path of the Plan becomes a tuple of `LayerRun` records
holding *references* to the modules they run, fixed at build time. Forward walks that tuple —
static unrolling, so torch.compile traces one graph per path with no data-dependent control
flow, and a shared block is one object reached twice.

Components come in through `torch_component(name)`: the torch side a component names
(recurc/components). The emitted script defines that lookup as a table of the classes it carries.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ir import ComponentUse, Owner, Plan, VirtualLayer
from .nn.layers import (Attention, CastedLinear, Projections, Rotary, document_mask, init_tensor, rms_norm,
                        sinusoidal_table)


def torch_component(name: str):
    """The torch side of a component ("module:attr" of its registry entry), imported on demand."""
    from .components import lookup
    module, _, attr = lookup(name).torch.partition(":")
    return getattr(importlib.import_module(module), attr)


class Holder(nn.Module):
    """A block's or a pass's own tensors and sub-modules."""


@dataclass(frozen=True, eq=False)
class LayerRun:
    """Everything one virtual layer needs, resolved at build time."""
    index: int
    attn: Attention | None      # None: this layer runs no attention
    mlp: nn.Module
    q_gain: Tensor | None       # a per-pass q_gain (per_pass.q_gain), else the attention's own
    mlp_down: nn.Module | None  # a pass's own MLP down projection (sharing: mlp_down)
    scalars: nn.Module          # holds attn_scale, mlp_scale, resid_mix
    own: nn.Module | None       # the pass's module (per-pass tensors)
    hooks: tuple                # per-pass component hooks (pre/post) this layer runs
    values: tuple               # (value component module, its name, slot) adding to v
    parallel: bool
    xsa: bool
    skip_slot: int | None
    skip_from: int | None
    prev_pass: int | None
    norm_scale: float
    residual_scale: float
    depth_row: int | None       # row of the sinusoidal depth encoding to add, if any
    block: int                  # physical index (the two-lane mixing row)
    adapt: Projections | None = None   # adapters on this layer's projections (LoRA, Legendre), if any


@dataclass(frozen=True, eq=False)
class LayerSite:
    """What a hook's `adapters(site)` sees of one virtual layer, at build time."""
    layer: VirtualLayer
    passes: int                 # K: how often the main order runs the layer's block
    own: nn.Module | None       # the pass's module (per-pass tensors)
    linears: dict               # "attn.c_q", "mlp.proj", ... → the linear module this layer runs


class RecurrentLM(nn.Module):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        m = plan.model
        self.tok_emb = nn.Embedding(m.vocab_size, m.embed_rank or m.dim)
        if m.embed_rank:     # factorized embedding: r → d into the stack (and d → r into a tied head)
            self.emb_up = CastedLinear(m.embed_rank, m.dim)
            if m.tied_embeddings:
                self.head_down = CastedLinear(m.dim, m.embed_rank)
        self.factorized = m.embed_rank > 0
        self.document_mask = m.attention.document_mask
        self.bos_id = m.attention.bos_id
        # token-level components, in spec order, each at its stage
        self.embed_stage: tuple[str, ...] = ()
        self.input_stage: tuple[str, ...] = ()
        self.logits_stage: tuple[str, ...] = ()
        for use in plan.components:
            if use.kind == "token":
                self.add_module(use.name, torch_component(use.name)(m, use))
                self._add_stage(use)
            elif use.kind == "value":
                slots = plan.param_by_name[f"{use.name}.layer_scales"].shape[0]
                self.add_module(use.name, torch_component(use.name)(m, use, slots))
        self.value_names = tuple(u.name for u in plan.components if u.kind == "value")
        self.blocks = nn.ModuleDict({b.name: Holder() for b in plan.blocks})
        # one holder per pass that owns anything: tensors, or a per-pass hook with no tensors
        self.passes = nn.ModuleDict()
        pass_owners = [p.owner for p in plan.params] + [l.per_pass for l in plan.layers if l.per_pass]
        for owner in pass_owners:
            if owner.kind == "pass" and owner.key not in self.passes:
                self.passes[owner.key] = Holder()
        for blk in plan.blocks:
            if blk.attn.kind == "block" and blk.attn.key == blk.name and self._has(blk.attn):
                self.blocks[blk.name].attn = self._attention(blk.attn)
            if blk.mlp.kind == "block" and blk.mlp.key == blk.name:
                self.blocks[blk.name].mlp = torch_component(blk.activation)(m.dim, blk.mlp_settings)
        for layer in plan.layers:
            for owner, part in ((layer.attn, "attn"), (layer.mlp, "mlp")):
                if owner is not None and owner.kind == "pass" and owner.part == part \
                        and not hasattr(self.passes[owner.key], part):
                    blk = plan.blocks[layer.block]
                    mod = self._attention(owner) if part == "attn" else \
                        torch_component(blk.activation)(m.dim, blk.mlp_settings)
                    setattr(self.passes[owner.key], part, mod)
            if layer.mlp_down is not None and not hasattr(self.passes[layer.mlp_down.key], "mlp_down"):
                blk = plan.blocks[layer.block]
                self.passes[layer.mlp_down.key].mlp_down = CastedLinear(blk.mlp_hidden, m.dim, zero_init=True)
        # loose tensors (block scalars, per-pass tensors, skips): created from the Plan
        for p in plan.params:
            parent, _, leaf = p.name.rpartition(".")
            holder = self.get_submodule(parent) if parent else self
            if not hasattr(holder, leaf):
                holder.register_parameter(leaf, nn.Parameter(torch.empty(p.shape)))
        if not m.tied_embeddings:
            self.lm_head = nn.Linear(m.dim, m.vocab_size, bias=False)
        for p in plan.params:
            if not p.init.startswith("copy:"):
                init_tensor(self.get_parameter(p.name), p.init)
        self.copy_untied()
        # marks the head's input, so export can hook it for GPTQ of a tied embedding (no tensors)
        self.head_in = nn.Identity()

        self.rotary = Rotary(m.rope.dims, m.rope.base, m.seq_len)
        self.sinusoidal = plan.per_pass.iteration_embedding == "sinusoidal"
        if self.sinusoidal:
            max_depth = max(p.depth for p in plan.paths.values())
            self.register_buffer("depth_table", sinusoidal_table(max_depth, m.dim), persistent=False)
        self.softcap = m.logit_softcap
        self.gated = "skip_gates" in plan.param_by_name
        self.lanes = m.residual.form if m.residual.form != "gptj" else None
        self.lane_final = m.residual.lane_final
        self.hooks = {u.name: torch_component(u.name)(u) for u in plan.components if u.kind in ("per_pass", "block")}
        self.runs: dict[str, tuple[LayerRun, ...]] = {name: self._runs(name) for name in plan.paths}

    @torch.no_grad()
    def copy_untied(self) -> None:
        """Set every pass-owned copy (init "copy:NAME") to the shared tensor it copies: at build,
        and again by the trainer when loops switch on."""
        for p in self.plan.params:
            if p.init.startswith("copy:"):
                self.get_parameter(p.name).copy_(self.get_parameter(p.init[5:]))

    def _add_stage(self, use: ComponentUse) -> None:
        if use.stage == "embed":
            self.embed_stage += (use.name,)
        elif use.stage == "logits":
            self.logits_stage += (use.name,)
        else:
            self.input_stage += (use.name,)

    def _has(self, owner: Owner) -> bool:
        return f"{owner.path}.c_q.weight" in self.plan.param_by_name

    def _attention(self, owner: Owner) -> Attention:
        m = self.plan.model
        return Attention(m.dim, m.heads, m.kv_heads, m.q_gain_init, m.attention,
                         own_q_gain=f"{owner.path}.q_gain" in self.plan.param_by_name)

    # ---- build-time resolution of owners
    def _module(self, owner: Owner) -> nn.Module:
        return self if owner.kind == "model" and not owner.part else self.get_submodule(owner.path)

    def _adapters(self, layer: VirtualLayer, own: nn.Module | None) -> Projections | None:
        """The projection adapters the layer's hooks put on it (hooks with an `adapters` method)."""
        hooks = [self.hooks[h] for h in layer.hooks if hasattr(self.hooks[h], "adapters")]
        if not hooks:
            return None
        linears: dict[str, nn.Module] = {}
        for part, owner in (("attn", layer.attn), ("mlp", layer.mlp)):
            if owner is not None:
                for name, mod in self._module(owner).named_children():
                    if isinstance(mod, nn.Linear):
                        linears[f"{part}.{name}"] = mod
        if layer.mlp_down is not None:
            linears["mlp.proj"] = self._module(layer.mlp_down)
        passes = sum(1 for l in self.plan.layers if l.block == layer.block)
        site = LayerSite(layer, passes, own, linears)
        table: dict[str, tuple] = {}
        for hook in hooks:
            for name, adapter in hook.adapters(site).items():
                table[name] = table.get(name, ()) + (adapter,)
        return Projections(table) if table else None

    def _runs(self, path: str) -> tuple[LayerRun, ...]:
        out = []
        for layer in self.plan.paths[path].layers:
            own = self._module(layer.per_pass) if layer.per_pass else None
            out.append(LayerRun(
                index=layer.index, attn=self._module(layer.attn) if layer.attn is not None else None,
                mlp=self._module(layer.mlp),
                mlp_down=self._module(layer.mlp_down) if layer.mlp_down is not None else None,
                q_gain=getattr(self._module(layer.per_pass), "q_gain", None) if layer.per_pass else None,
                scalars=self._module(layer.scalars),
                own=own,
                hooks=tuple(self.hooks[h] for h in layer.hooks),
                values=tuple((getattr(self, name), name, slot) for name, slot in layer.values),
                parallel=layer.parallel, xsa=layer.xsa,
                skip_slot=layer.skip_slot, skip_from=layer.skip_from, prev_pass=layer.prev_pass,
                norm_scale=layer.norm_scale, residual_scale=layer.residual_scale,
                depth_row=layer.depth_index if self.sinusoidal else None, block=layer.block,
                adapt=self._adapters(layer, own),
            ))
        return tuple(out)

    # ---- forward
    def forward(self, idx: Tensor, targets: Tensor | None = None, path: str = "main") -> Tensor:
        x = self.tok_emb(idx)
        if self.factorized:
            x = self.emb_up(x)
        mask = document_mask(idx, self.bos_id) if self.document_mask else None
        for name in self.embed_stage:
            x = getattr(self, name)(x, idx)
        x = rms_norm(x)
        for name in self.input_stage:
            x = getattr(self, name)(x, idx)
        x0 = x
        prepared = {name: getattr(self, name).prepare(idx, x.dtype) for name in self.value_names}
        outs: list[Tensor] = []
        lane1: Tensor | None = None       # the MLP lane of a two-lane residual, once it has split
        for run in self.runs[path]:
            if run.skip_slot is not None:   # skips add to the stream (lane 0 once the lanes split)
                x = self._skip(x, outs[run.skip_from], run.skip_slot)
            if run.parallel and self.lanes is not None:
                x, lane1 = self._lanes(run, x, x if lane1 is None else lane1, x0, mask, prepared)
            else:
                x = self._layer(run, x, x0, outs, mask, prepared)
            outs.append(x)
        if lane1 is not None:
            x = self._merge(x, lane1)
        return self._head(x, targets, idx)

    def _merge(self, lane0: Tensor, lane1: Tensor) -> Tensor:
        if self.lanes == "lane_merge":
            return torch.lerp(lane1, lane0, self.lane_merge.to(lane0.dtype))
        return lane1 if self.lane_final == "mlp" else 0.5 * (lane0 + lane1)

    def _lanes(self, run: LayerRun, lane0: Tensor, lane1: Tensor, x0: Tensor, mask: Tensor | None,
               prepared: dict) -> tuple[Tensor, Tensor]:
        """A parallel-residual layer on two lanes: attention reads lane 0 (mixed with x0), the MLP
        reads lane 1. two_lane: both updates go to both lanes through P and r of the physical layer;
        lane_merge: attention updates lane 0 only, the MLP lane 1 only."""
        s = run.scalars
        mix = s.resid_mix.to(lane0.dtype)
        m = s.mlp_scale.to(lane0.dtype) * self._mlp(run, self._norm(lane1, run))
        if run.attn is None:
            a = torch.zeros_like(m)
        else:
            a = s.attn_scale.to(lane0.dtype) * run.attn(self._norm(mix[0] * lane0 + mix[1] * x0, run), self.rotary,
                                                       run.xsa, mask, self._v_extra(run, prepared), run.q_gain,
                                                       run.adapt)
        a, m = self._scaled(a, run), self._scaled(m, run)
        if self.lanes == "lane_merge":
            return lane0 + a, lane1 + m
        P = self.lane_post[run.block].to(lane0.dtype)
        r = self.lane_resid[run.block].to(lane0.dtype)
        return (r[0] * lane0 + P[0, 0] * a + P[1, 0] * m,
                r[1] * lane1 + P[0, 1] * a + P[1, 1] * m)

    @staticmethod
    def _v_extra(run: LayerRun, prepared: dict) -> Tensor | None:
        v_extra = None
        for mod, name, slot in run.values:
            e = mod.extra(prepared[name], slot)
            v_extra = e if v_extra is None else v_extra + e
        return v_extra

    def _skip(self, x: Tensor, skip: Tensor, slot: int) -> Tensor:
        scaled = self.skip_weights[slot].to(x.dtype) * skip
        if self.gated:
            # sigmoid gate per channel between the running stream and the weighted skip
            return torch.lerp(scaled, x, torch.sigmoid(self.skip_gates[slot].to(x.dtype)))
        return x + scaled

    def _layer(self, run: LayerRun, x: Tensor, x0: Tensor, outs: list[Tensor], mask: Tensor | None,
               prepared: dict) -> Tensor:
        own = run.own
        if run.depth_row is not None:
            x = x + self.depth_table[run.depth_row].to(x.dtype)
        for hook in run.hooks:
            x = hook.pre(own, x)
        x_in = x
        s = run.scalars
        mix = s.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        attn_scale, mlp_scale = s.attn_scale.to(x.dtype), s.mlp_scale.to(x.dtype)
        v_extra = self._v_extra(run, prepared)
        if run.parallel:
            h = self._norm(x, run)
            update = mlp_scale * self._mlp(run, h)
            if run.attn is not None:
                update = update + attn_scale * run.attn(h, self.rotary, run.xsa, mask, v_extra, run.q_gain, run.adapt)
            x = x + self._scaled(update, run)
        else:       # a layer without attention (features.no_attention) still runs its MLP
            if run.attn is not None:
                a = run.attn(self._norm(x, run), self.rotary, run.xsa, mask, v_extra, run.q_gain, run.adapt)
                x = x + self._scaled(attn_scale * a, run)
            x = x + self._scaled(mlp_scale * self._mlp(run, self._norm(x, run)), run)
        prev = outs[run.prev_pass] if run.prev_pass is not None else None
        for hook in run.hooks:
            x = hook.post(own, x_in, x, prev)
        return x

    @staticmethod
    def _mlp(run: LayerRun, h: Tensor) -> Tensor:
        # adapters only where the layer has some: an MLP component without them keeps forward(x, down)
        return run.mlp(h, run.mlp_down) if run.adapt is None else run.mlp(h, run.mlp_down, run.adapt)

    @staticmethod
    def _norm(x: Tensor, run: LayerRun) -> Tensor:
        return rms_norm(x) * run.norm_scale if run.norm_scale != 1.0 else rms_norm(x)

    @staticmethod
    def _scaled(update: Tensor, run: LayerRun) -> Tensor:
        return update * run.residual_scale if run.residual_scale != 1.0 else update

    def _head(self, x: Tensor, targets: Tensor | None, idx: Tensor | None = None) -> Tensor:
        x = rms_norm(x)
        if self.factorized and not hasattr(self, "lm_head"):
            x = self.head_down(x)
        x = self.head_in(x)
        weight = self.lm_head.weight if hasattr(self, "lm_head") else self.tok_emb.weight
        # the product and the softcap in the matmul's dtype (bf16 under autocast), cross-entropy in
        # fp32: the challenge's casts, and bf16 rather than fp32 logits kept for the backward
        logits = F.linear(x, weight.to(x.dtype))
        for name in self.logits_stage:      # e.g. a per-vocabulary bias, before the softcap
            logits = getattr(self, name)(logits, idx)
        if self.softcap is not None:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        logits = logits.float()
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def build(plan: Plan, device: str | torch.device | None = None) -> RecurrentLM:
    """Build the module of a Plan; parameters are fp32. ("meta": shapes only, no memory.)"""
    if device is not None and str(device) == "meta":
        with torch.device("meta"):
            return RecurrentLM(plan)
    model = RecurrentLM(plan)
    return model.to(device) if device is not None else model
