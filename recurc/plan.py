"""Spec → Plan: the one intermediate representation every output is derived from.

`make_plan(spec)` resolves a validated spec into the records of recurc/ir.py: the physical
blocks with their resolved MLP settings, the expanded virtual layers of each execution path (the
main training order, the schedule's other orders, the evaluation order), the owner of every
parameter (a block, a block's borrowed sub-module, or a virtual layer) with its state-dict name,
shape, role, storage and init, and the components in use. After this, nothing reads the spec:
build, estimate, emit, measure, export, diff and render read the Plan.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # networkx costs ~0.3 s to import; only the graph needs it
    import networkx as nx

from .components import Site, lookup
from .errors import SpecError
from .ir import (GROUPS, AttentionSettings, Block, CodeSettings, ComponentUse, ExecPath, MLPSettings,  # noqa: F401
                 ModelShape, Owner, ResidualSettings,
                 ParamInfo, PerPassSettings, Phase, Plan, QuantSettings, Rope, TrainSettings, VirtualLayer,
                 from_data)
from .order import Order, Ref, parse_order
from .quantspec import plan_tensor
from .spec import BlockSpec, MLPSpec, Spec

MODEL = Owner("model")


# ---------------------------------------------------------------- construction
def _resolve_blocks(spec: Spec, refs: set[Ref]) -> tuple[list[BlockSpec], dict[str, int]]:
    if isinstance(spec.blocks, list):
        blocks = list(spec.blocks)
        index = {b.name: i for i, b in enumerate(blocks)}
        return blocks, index
    ints = [r for r in refs if isinstance(r, int)]
    names = sorted(r for r in refs if isinstance(r, str))
    if names:
        raise SpecError(f"the order names block {names[0]} but the spec declares no named blocks",
                        where=spec.where("order"), hint="list them: blocks: [A, B, C]")
    count = spec.blocks if isinstance(spec.blocks, int) else max(ints) + 1
    return [BlockSpec(name=f"N{i}") for i in range(count)], {}


def _check_refs(order: Order, n: int, names: dict[str, int], where: str | None, text: str) -> tuple[int, ...]:
    def error(message: str, ref: Ref, hint: str) -> SpecError:
        col = order.column_of(ref)
        if col is None or not text:
            return SpecError(f"order {text!r} {message}", where=where, hint=hint)
        return SpecError(f"the order {message}", where=f"{where or '<order>'}:{col}",
                         snippet=f"  {text}\n  {' ' * (col - 1)}^", hint=hint)

    out = []
    for ref in order.layers:
        if isinstance(ref, str):
            if ref not in names:
                raise error(f"names block {ref}, which does not exist", ref,
                            f"declared blocks: {', '.join(names) or 'none'}")
            out.append(names[ref])
        else:
            if ref >= n:
                raise error(f"runs block {ref}, but there are only {n} blocks (0..{n - 1})", ref,
                            "raise `blocks:` or fix the index")
            out.append(ref)
    return tuple(out)


def _parse(text: str, spec: Spec, *path: str) -> Order:
    origin = spec.where(*path) or "<order>"
    return parse_order(text, origin=origin)


def make_plan(spec: Spec) -> Plan:
    """Spec → Plan. Raises SpecError for anything inconsistent across fields."""
    m = spec.model
    sched = spec.schedule
    main = _parse(spec.order, spec, "order")
    uses = _component_uses(spec)
    orders: dict[str, Order] = {"main": main}
    phases: list[Phase] = []
    if sched.progressive:
        for i, step in enumerate(sched.progressive):
            if step.order is not None:
                order = _parse(step.order, spec, "schedule", "progressive", i, "order")
                name = "main" if order.canonical() == main.canonical() else f"step{i}"
            else:
                order, name = _with_count(main, step.repeats, spec), f"repeats{step.repeats}"
            orders[name] = order
            phases.append(Phase(step.at, name))
    elif isinstance(sched.loops_at, int):
        # a step: the fraction is what the estimate weights the phases by
        phases = [Phase(0.0, "before"), Phase(min(sched.loops_at / spec.train.iterations, 1.0), "main",
                                              step=sched.loops_at)]
    elif sched.loops_at is not None:
        phases = [Phase(0.0, "before"), Phase(sched.loops_at, "main")]
    else:
        phases = [Phase(0.0, "main")]
    if sched.eval_repeats is not None:
        orders["eval"] = _with_count(main, sched.eval_repeats, spec)
    elif sched.eval_order is not None:
        orders["eval"] = _parse(sched.eval_order, spec, "schedule", "eval_order")
    phases, sampled = _sampled_phases(spec, uses, main, orders, phases)

    # the physical blocks
    refs = {r for o in orders.values() for r in o.layers}
    named = isinstance(spec.blocks, list)
    if sched.loops_at is not None and sched.before is not None:
        orders["before"] = _parse(sched.before, spec, "schedule", "before")
        refs |= set(orders["before"].layers)
    block_specs, name_index = _resolve_blocks(spec, refs)
    n_blocks = len(block_specs)
    if sched.loops_at is not None and sched.before is None:
        flat = ",".join(b.name for b in block_specs) if named else f"0..{n_blocks - 1}" if n_blocks > 1 else "0"
        orders["before"] = parse_order(flat, origin="<flat order>")
    sources = {k: (spec.order, spec.where("order")) for k in orders}  # loop-count rewrites of `order`
    if sched.before is not None:
        sources["before"] = (sched.before, spec.where("schedule", "before"))
    if sched.eval_order is not None:
        sources["eval"] = (sched.eval_order, spec.where("schedule", "eval_order"))
    if sched.loops_at is not None and sched.before is None:
        sources["before"] = (orders["before"].canonical(), "<flat order>")
    resolved = {k: _check_refs(o, n_blocks, name_index, sources[k][1], sources[k][0]) for k, o in orders.items()}
    used = set().union(*resolved.values())
    unused = [i for i in range(n_blocks) if i not in used]
    if unused:
        label = block_specs[unused[0]].name if named else str(unused[0])
        raise SpecError(f"block {label} is declared but never runs", where=spec.where("blocks") or spec.where("order"),
                        hint="remove it from `blocks:` or add it to the order")

    blocks = _make_blocks(spec, block_specs, name_index, named)
    counts_main = _pass_counts(resolved["main"])
    looped = {b for b, k in counts_main.items() if k > 1}
    pp = spec.per_pass
    in_scope = (lambda b: True) if pp.scope == "all" else (lambda b: b in looped)
    for name, seq in resolved.items():
        missing = sorted({b for b in seq if b not in counts_main})
        if missing:
            label = blocks[missing[0]].name
            raise SpecError(f"the {name} order runs block {label}, which the main order never runs",
                            where=sources[name][1], hint="per-pass tensors and skips are defined by `order`; "
                            "every block a schedule runs must appear there")
    _check_features(spec, n_blocks, len(main))

    model = _model_shape(spec)
    ctx = _Context(spec, model, blocks, n_blocks, in_scope, counts_main, resolved["main"], uses)
    if spec.skip_count == "flat":
        n_skips = n_blocks // 2 if spec.skips != "none" else 0
        paths = {name: ctx.path(name, orders[name], seq, skip_cap=n_skips) for name, seq in resolved.items()}
    else:
        paths = {name: ctx.path(name, orders[name], seq) for name, seq in resolved.items()}
        capped = {"eval"} | sampled      # orders that do not size the skips
        n_skips = max((p.n_skips for k, p in paths.items() if k not in capped), default=0)
        for k in sorted(capped & paths.keys()):
            if paths[k].n_skips > n_skips:
                # More passes (at evaluation, or a deeper random-depth draw) move the U-Net split; only
                # the trained skips exist, and the decoder layers nearest the split use them.
                paths[k] = ctx.path(k, orders[k], resolved[k], skip_cap=n_skips)

    quant = from_data(QuantSettings, spec.quant.model_dump(mode="json"))
    params = tuple(ParamInfo(name, shape, group, owner, plan_tensor(shape, "float32", group, quant, name), init, comp)
                   for name, shape, group, owner, init, comp in ctx.tensors(paths, n_skips))
    return Plan(
        name=spec.name, description=spec.description, model=model, blocks=tuple(blocks), paths=paths,
        phases=tuple(phases), eval_path="eval" if "eval" in paths else "main",
        params=params, components=uses,
        per_pass=PerPassSettings(pp.scope, pp.block_scalars, pp.q_gain, pp.iteration_embedding, pp.timestep_cap,
                                 pp.residual_scale),
        sharing=spec.sharing, skips=spec.skips, named_blocks=named, quant=quant,
        train=from_data(TrainSettings, spec.train.model_dump(mode="json")),
        code=from_data(CodeSettings, spec.code.model_dump(mode="json")), budget=spec.budget,
        source=spec.to_data())


def _sampled_phases(spec: Spec, uses: tuple[ComponentUse, ...], main: Order, orders: dict[str, Order],
                    phases: list[Phase]) -> tuple[list[Phase], set[str]]:
    """Schedule components (random_depth): the main phase draws its path each training step from
    the orders they give. Each distinct order is one path (named by its depth, or an existing
    path's name when another part of the schedule already runs it). Returns the phases and the
    names of the drawn paths that are not the main order."""
    sched = [u for u in uses if u.kind == "schedule"]
    if not sched:
        return phases, set()
    if len(sched) > 1:
        raise SpecError(f"two schedule components ({sched[0].name}, {sched[1].name}) would both pick the "
                        "training path", where=spec.where("components"))
    use = sched[0]
    where = spec.where("components")
    by_canonical = {o.canonical(): name for name, o in orders.items() if name != "eval"}
    choices: list[tuple[str, float]] = []
    sampled: set[str] = set()
    for order, p in lookup(use.name).depth_choices(use, main, where):
        name = by_canonical.get(order.canonical()) or f"depth{len(order)}"
        if name not in orders:
            orders[name] = order
            by_canonical[order.canonical()] = name
            sampled.add(name)
        choices.append((name, p))
    if not any(ph.path == "main" for ph in phases):
        raise SpecError(f"{use.name} samples the main phase, and no phase of the schedule runs the main order",
                        where=where, hint="let the last progressive step run `order`")
    return [dataclasses.replace(ph, choices=tuple(choices)) if ph.path == "main" else ph for ph in phases], sampled


def _with_count(main: Order, k: int, spec: Spec) -> Order:
    try:
        return main.with_loop_count(k)
    except SpecError as e:
        raise SpecError(e.message, where=spec.where("schedule") or spec.where("order"), hint=e.hint) from None


def _pass_counts(seq: tuple[int, ...]) -> dict[int, int]:
    out: dict[int, int] = {}
    for b in seq:
        out[b] = out.get(b, 0) + 1
    return out


def with_settings(plan: Plan, spec: Spec) -> Plan:
    """`plan` with the sections of `spec` that do not change its structure (quant, train, code,
    budget, name, description) taken from `spec`: what make_plan(spec) returns when `spec` differs
    from the plan's own spec in those sections only. Variant sweeps share one skeleton this way."""
    quant = from_data(QuantSettings, spec.quant.model_dump(mode="json"))
    params = tuple(dataclasses.replace(p, storage=plan_tensor(p.shape, "float32", p.group, quant, p.name))
                   for p in plan.params) if quant != plan.quant else plan.params
    return dataclasses.replace(
        plan, name=spec.name, description=spec.description, quant=quant, params=params,
        train=from_data(TrainSettings, spec.train.model_dump(mode="json")),
        code=from_data(CodeSettings, spec.code.model_dump(mode="json")), budget=spec.budget,
        source=spec.to_data())


def _model_shape(spec: Spec) -> ModelShape:
    m = spec.model
    return ModelShape(vocab_size=m.vocab_size, dim=m.dim, heads=m.heads, kv_heads=m.kv_heads,
                      tied_embeddings=m.tied_embeddings, rope=Rope(m.rope.base, m.rope.dims or m.head_dim),
                      logit_softcap=m.logit_softcap, q_gain_init=m.q_gain_init, norm_scale=m.norm_scale,
                      seq_len=m.seq_len, attention=from_data(AttentionSettings, m.attention.model_dump(mode="json")),
                      norm_scale_index=m.norm_scale_index, embed_rank=m.embed_rank,
                      residual=ResidualSettings(spec.features.residual_form, spec.features.lane_final,
                                                spec.features.lane_resid_init))


# the per_pass section's switches, spelled as the components they turn on (in the order they apply)
def _component_uses(spec: Spec) -> tuple[ComponentUse, ...]:
    pp = spec.per_pass
    named: list[tuple[str, dict]] = []
    if pp.iteration_embedding == "learned":
        named.append(("iteration_embedding", {}))
    if pp.film:
        named.append(("film", {}))
    if pp.timestep_scale:
        named.append(("timestep_scale", {"cap": pp.timestep_cap}))
    if pp.cross_repeat_scale:
        named.append(("cross_repeat_scale", {}))
    named += [(c["use"], {k: v for k, v in c.items() if k != "use"}) for c in spec.components]
    out = []
    for i, (name, cfg) in enumerate(named):
        comp = lookup(name, where=spec.where("components", i) if i >= len(named) - len(spec.components) else None)
        if comp.kind == "mlp":
            raise SpecError(f"{name} is an MLP component: name it in model.mlp.activation",
                            where=spec.where("components"))
        use = ComponentUse(name, comp.kind, comp.config(cfg))
        out.append(dataclasses.replace(use, stage=comp.stage_of(use)) if comp.kind == "token" else use)
    seen = [u.name for u in out]
    dup = next((n for n in seen if seen.count(n) > 1), None)
    if dup:
        raise SpecError(f"component {dup} is named twice", where=spec.where("components"),
                        hint="per_pass switches (film, timestep_scale, ...) already turn their component on")
    return tuple(out)


def _mlp_settings(mlp: MLPSpec, dim: int) -> MLPSettings:
    slope = mlp.negative_slope if mlp.activation == "leaky_relu2" else 0.0
    return MLPSettings(mlp.width(dim), mlp.activation, slope)


def _make_blocks(spec: Spec, block_specs: list, name_index: dict[str, int], named: bool) -> list[Block]:
    blocks: list[Block] = []
    for i, bs in enumerate(block_specs):
        name = bs.name if named else str(i)
        mlp: MLPSpec = (bs.mlp if named and bs.mlp is not None else spec.model.mlp)
        lookup(mlp.activation, "mlp", where=spec.where("blocks", i, "mlp") if named and bs.mlp is not None
               else spec.where("model", "mlp", "activation"))
        attn, mlp_owner = Owner("block", name, "attn"), Owner("block", name, "mlp")
        if named:
            for attr, kind in (("attention_from", "attn"), ("mlp_from", "mlp")):
                src = getattr(bs, attr)
                if src is None:
                    continue
                where = spec.where("blocks", i, attr) or spec.where("blocks")
                if src not in name_index:
                    raise SpecError(f"block {name} takes its {kind} from block {src}, which does not exist",
                                    where=where)
                src_spec = block_specs[name_index[src]]
                if getattr(src_spec, attr) is not None:
                    raise SpecError(f"block {name} borrows from {src}, which itself borrows its {kind}",
                                    where=where, hint=f"point {name} at the block that owns the {kind}")
                if src == name:
                    raise SpecError(f"block {name} cannot borrow from itself", where=where)
                if kind == "attn":
                    attn = Owner("block", src, "attn")
                else:
                    src_mlp = src_spec.mlp or spec.model.mlp
                    if bs.mlp is not None and bs.mlp != src_mlp:
                        raise SpecError(f"block {name} shares the MLP of {src} but overrides its shape",
                                        where=where, hint="drop the mlp override of one of them")
                    mlp, mlp_owner = src_mlp, Owner("block", src, "mlp")
        blocks.append(Block(i, name, _mlp_settings(mlp, spec.model.dim), attn, mlp_owner))
    return blocks


def _check_features(spec: Spec, n_blocks: int, n_virtual: int) -> None:
    f = spec.features
    limit = n_virtual if f.index == "virtual" else n_blocks
    what = "virtual layers" if f.index == "virtual" else "physical blocks"
    if f.parallel_residual_from is not None and f.parallel_residual_from >= limit:
        raise SpecError(f"parallel_residual_from={f.parallel_residual_from} selects no layer: there are {limit} "
                        f"{what}", where=spec.where("features", "parallel_residual_from"))
    if f.xsa_last > limit:
        raise SpecError(f"xsa_last={f.xsa_last} exceeds the {limit} {what}", where=spec.where("features", "xsa_last"))


class _Context:
    """What building the paths and the parameter table of one spec shares."""

    def __init__(self, spec: Spec, model: ModelShape, blocks: list[Block], n_blocks: int, in_scope,
                 counts_main: dict[int, int], main_seq: tuple[int, ...], uses: tuple[ComponentUse, ...]) -> None:
        self.spec, self.model, self.blocks, self.n_blocks = spec, model, blocks, n_blocks
        self.in_scope, self.counts_main = in_scope, counts_main
        self.per_pass_uses = [u for u in uses if u.kind == "per_pass"]
        self.token_uses = [u for u in uses if u.kind == "token"]
        self.value_uses = [u for u in uses if u.kind == "value"]
        self.block_uses = [u for u in uses if u.kind == "block"]
        # layer slots of each value component, counted on the main order (or the physical blocks)
        self.value_slots = {u.name: lookup(u.name).slots(u, len(main_seq), n_blocks) for u in self.value_uses}
        for i, u in enumerate(self.value_uses):
            layers = u.get("layers")
            limit = len(main_seq) if u.get("index") == "virtual" else n_blocks
            if layers != "all" and max(layers) >= limit:
                raise SpecError(f"{u.name} lists layer {max(layers)}, but there are only {limit} "
                                f"{u.get('index')} layers", where=spec.where("components"))
        self.untie = {"attention": "mlp", "mlp": "attn", "mlp_down": "mlp_down"}.get(spec.sharing)
        # per-pass owners are keyed by (block, pass) of the main order
        self.main_owner: dict[tuple[int, int], int] = {}
        seen: dict[int, int] = {}
        for v, b in enumerate(main_seq):
            self.main_owner[(b, seen.get(b, 0))] = v
            seen[b] = seen.get(b, 0) + 1
        self.main_layers: tuple[VirtualLayer, ...] = ()

    def path(self, name: str, order: Order, seq: tuple[int, ...], skip_cap: int | None = None) -> ExecPath:
        spec, f, pp = self.spec, self.spec.features, self.spec.per_pass
        n = len(seq)
        split = order.split
        pairs = min(split, n - split) if spec.skips != "none" else 0
        n_skips = min(pairs, skip_cap) if skip_cap is not None else pairs
        share = spec.skip_past_last == "share" and n_skips > 0
        counts = _pass_counts(seq)
        seen: dict[int, int] = {}
        last_v: dict[int, int] = {}
        layers = []
        for v, b in enumerate(seq):
            k = seen.get(b, 0)
            seen[b] = k + 1
            idx = v if f.index == "virtual" else b
            limit = n if f.index == "virtual" else self.n_blocks
            decoder_i = v - split
            skip_slot = (decoder_i if 0 <= decoder_i < n_skips else
                         n_skips - 1 if share and n_skips <= decoder_i < pairs else None)
            main_k = min(k, self.counts_main[b] - 1)     # a pass beyond the main order's K reuses the last
            owner_v = self.main_owner[(b, main_k)]
            scoped = self.in_scope(b)
            own = Owner("pass", str(owner_v))
            blk = self.blocks[b]
            attn, mlp = blk.attn, blk.mlp
            if idx in f.no_attention:
                attn = None
            # a later pass runs its own sub-module only where the main order has one for it
            if self.untie == "mlp" and main_k > 0 and scoped:
                mlp = own.sub("mlp")
            if self.untie == "attn" and main_k > 0 and scoped and attn is not None:
                attn = own.sub("attn")
            mlp_down = own.sub("mlp_down") if self.untie == "mlp_down" and main_k > 0 and scoped else None
            site = Site(self.model, own, blk, VirtualLayer(
                owner_v, b, main_k, self.counts_main[b], "encoder", None, None, False, False,
                attn, mlp, own, None, None, 1.0, 1.0, None), passes=self.counts_main[b])
            owned = [u for u in self.per_pass_uses if scoped and lookup(u.name).applies(u, site)]
            prev = last_v.get(b)
            hooks = tuple(u.name for u in owned if prev is not None or not lookup(u.name).needs_previous_pass)
            # block components act on every layer that runs a block they apply to
            hooks += tuple(u.name for u in self.block_uses if lookup(u.name).applies(u, site))
            layers.append(VirtualLayer(
                index=v, block=b, pass_index=k, passes=counts[b],
                side="encoder" if v < split else "decoder",
                skip_slot=skip_slot, skip_from=(split - 1 - decoder_i) if skip_slot is not None else None,
                parallel=f.parallel_residual_from is not None and idx >= f.parallel_residual_from,
                xsa=f.xsa_last > 0 and idx >= limit - f.xsa_last,
                attn=attn, mlp=mlp,
                scalars=own if (pp.block_scalars and scoped) else Owner("block", blk.name),
                per_pass=own if owned or ((pp.block_scalars or pp.q_gain) and scoped) else None,
                prev_pass=prev,
                norm_scale=(1 / math.sqrt((v if self.model.norm_scale_index == "virtual" else b) + 1)
                            if self.model.norm_scale == "inv_sqrt_layer" else 1.0),
                # K of the main order, so a schedule's other orders run the scale the model ends with
                residual_scale=1 / math.sqrt(self.counts_main[b]) if pp.residual_scale == "inv_sqrt_k" else 1.0,
                depth_index=owner_v if scoped else None,
                hooks=hooks,
                mlp_down=mlp_down,
                values=tuple((u.name, slot) for u in self.value_uses
                             if (slot := lookup(u.name).layer_slot(u, v, b)) is not None
                             and slot < self.value_slots[u.name]),
            ))
            last_v[b] = v
        return ExecPath(name, order.canonical(self._names()), order.split, tuple(layers), n_skips)

    def _names(self) -> dict[int, str] | None:
        return {b.index: b.name for b in self.blocks} if isinstance(self.spec.blocks, list) else None

    # ---- the parameter table
    def tensors(self, paths: dict[str, ExecPath], n_skips: int):
        """Every stored tensor exactly once, in the order the built module registers them:
        (name, shape, group, owner, init, component)."""
        layers = [l for p in paths.values() for l in p.layers]
        # attention modules some layer runs, and those some layer runs with the module's own q_gain
        self.attention_runs = {l.attn for l in layers if l.attn is not None}
        self.attention_q_gain = {l.attn for l in layers if l.attn is not None
                                 and not (self.spec.per_pass.q_gain and self.in_scope(l.block))}
        m = self.model
        d, pp = m.dim, self.spec.per_pass
        r = m.embed_rank
        out = [("tok_emb.weight", (m.vocab_size, r or d), "embeddings", MODEL, "normal:0.005", "")]
        if r:   # factorized: r → d into the stack, d → r into a tied head
            out.append(("emb_up.weight", (d, r), "embeddings", MODEL, "module", ""))
            if m.tied_embeddings:
                out.append(("head_down.weight", (r, d), "embeddings", MODEL, "module", ""))
        for u in self.token_uses + self.value_uses:
            comp = lookup(u.name)
            owner = Owner("model", "", u.name)
            site = Site(m, owner, slots=self.value_slots.get(u.name, 0))
            out += [(f"{u.name}.{t.name}", t.shape, t.group, owner, t.init, u.name)
                    for t in comp.tensors(u, site)]
        for blk in self.blocks:
            pre = Owner("block", blk.name)
            if blk.attn == pre.sub("attn") and blk.attn in self.attention_runs:
                out += self._attention(blk.attn, q_gain=blk.attn in self.attention_q_gain)
            if blk.mlp == pre.sub("mlp"):
                out += self._mlp(blk.mlp, blk)
            if not (pp.block_scalars and self.in_scope(blk.index)):
                out += self._scalars(pre, "scalars")
            owns = tuple(part for part, mine in (
                ("attn", blk.attn == pre.sub("attn") and blk.attn in self.attention_runs),
                ("mlp", blk.mlp == pre.sub("mlp"))) if mine)
            site = Site(m, pre, blk, passes=self.counts_main.get(blk.index, 0), modules=owns)
            for u in self.block_uses:
                comp = lookup(u.name)
                if comp.applies(u, site):
                    out += [(f"{pre.path}.{t.name}", t.shape, t.group, pre, t.init, u.name)
                            for t in comp.tensors(u, site)]
        for layer in paths["main"].layers:
            own = Owner("pass", str(layer.index))
            blk = self.blocks[layer.block]
            if layer.attn == own.sub("attn"):
                out += self._copied(self._attention(layer.attn, q_gain=layer.attn in self.attention_q_gain),
                                    blk.attn)
            if layer.mlp == own.sub("mlp"):
                out += self._copied(self._mlp(layer.mlp, blk), blk.mlp)
            if layer.mlp_down is not None:
                out += self._copied([(f"{layer.mlp_down.path}.weight", (d, blk.mlp_hidden), "mlp", layer.mlp_down,
                                      "zeros", blk.activation)], blk.mlp, {"weight": "proj.weight"})
            if layer.scalars == own:
                out += self._scalars(own, "per_pass")
            if pp.q_gain and self.in_scope(layer.block) and layer.per_pass == own:
                out.append((f"{own.path}.q_gain", (m.heads,), "per_pass", own, f"const:{m.q_gain_init}", ""))
            if layer.per_pass == own:
                site = Site(m, own, blk, layer, passes=self.counts_main[layer.block])
                for u in self.per_pass_uses:
                    comp = lookup(u.name)
                    if comp.applies(u, site):
                        out += [(f"{own.path}.{t.name}", t.shape, t.group, own, t.init, u.name)
                                for t in comp.tensors(u, site)]
        form = m.residual.form
        if form == "two_lane" and any(l.parallel for p in paths.values() for l in p.layers):
            # sized by every physical layer and indexed by it, shared across passes (as the records)
            out += [("lane_post", (self.n_blocks, 2, 2), "scalars", MODEL, "ones", ""),
                    ("lane_resid", (self.n_blocks, 2), "scalars", MODEL, f"const:{m.residual.lane_resid_init}", "")]
        if form == "lane_merge" and any(l.parallel for p in paths.values() for l in p.layers):
            out.append(("lane_merge", (1,), "scalars", MODEL, "const:0.5", ""))
        if n_skips:
            out.append(("skip_weights", (n_skips, d), "scalars", MODEL, "ones", ""))
            if self.spec.skips == "gated_unet":
                out.append(("skip_gates", (n_skips, d), "scalars", MODEL, "zeros", ""))
        if not m.tied_embeddings:
            out.append(("lm_head.weight", (m.vocab_size, d), "embeddings", MODEL, "zeros", ""))
        return out

    def _attention(self, owner: Owner, q_gain: bool = True) -> list:
        m = self.model
        kv = m.kv_heads * m.head_dim
        p, a = owner.path, m.attention
        out = [(f"{p}.c_q.weight", (m.dim, m.dim), "attention", owner, "module", "")]
        if a.k_rank:
            out += [(f"{p}.c_k_down.weight", (a.k_rank, m.dim), "attention", owner, "module", ""),
                    (f"{p}.c_k.weight", (kv, a.k_rank), "attention", owner, "module", "")]
        else:
            out.append((f"{p}.c_k.weight", (kv, m.dim), "attention", owner, "module", ""))
        out += [(f"{p}.c_v.weight", (kv, m.dim), "attention", owner, "module", ""),
                (f"{p}.proj.weight", (m.dim, m.dim), "attention", owner, "zeros", "")]
        if q_gain:
            out.append((f"{p}.q_gain", (m.heads,), "scalars", owner, f"const:{m.q_gain_init}", ""))
        if a.gate != "none":
            width = m.dim if a.gate == "dense" else a.gate_window
            out.append((f"{p}.gate.weight", (m.heads, width), "scalars", owner, "zeros", ""))
        return out

    def _mlp(self, owner: Owner, blk: Block) -> list:
        comp = lookup(blk.activation, "mlp")
        use = ComponentUse(blk.activation, "mlp")
        site = Site(self.model, owner, blk, hidden=blk.mlp_hidden)
        return [(f"{owner.path}.{t.name}", t.shape, t.group, owner, t.init, blk.activation)
                for t in comp.tensors(use, site)]

    def _copied(self, tensors: list, shared: Owner, rename: dict[str, str] | None = None) -> list:
        """A later pass's own tensors; with `untie_init: copy`, initialised as copies of the shared
        sub-module's (init "copy:NAME", applied by build and again when loops switch on)."""
        if self.spec.untie_init != "copy":
            return tensors
        out = []
        for name, shape, group, owner, init, comp in tensors:
            leaf = name[len(owner.path) + 1:]
            out.append((name, shape, group, owner, f"copy:{shared.path}.{(rename or {}).get(leaf, leaf)}", comp))
        return out

    def _scalars(self, owner: Owner, group: str) -> list:
        d, p = self.model.dim, owner.path
        return [(f"{p}.attn_scale", (d,), group, owner, "ones", ""),
                (f"{p}.mlp_scale", (d,), group, owner, "ones", ""),
                (f"{p}.resid_mix", (2, d), group, owner, "rows:1,0", "")]


# ---------------------------------------------------------------- graph
def build_graph(plan: Plan, path: str = "main") -> nx.MultiDiGraph:
    """Data flow of one path: embed → v0 → … → head, U-Net skip edges, blocks as shared nodes.

    A multigraph: a skip or cross-repeat edge can join the same two layers as a residual edge."""
    import networkx as nx

    g = nx.MultiDiGraph(spec=plan.name, path=path)
    g.add_node("embed", kind="embed")
    for blk in plan.blocks:
        g.add_node(f"block:{blk.name}", kind="block", name=blk.name, index=blk.index)
    prev = "embed"
    for layer in plan.paths[path].layers:
        node = f"v{layer.index}"
        g.add_node(node, kind="layer", index=layer.index, block=plan.blocks[layer.block].name,
                   pass_index=layer.pass_index, side=layer.side, parallel=layer.parallel, xsa=layer.xsa)
        g.add_edge(prev, node, kind="residual")
        g.add_edge(f"block:{plan.blocks[layer.block].name}", node, kind="weights")
        if layer.skip_from is not None:
            g.add_edge(f"v{layer.skip_from}", node, kind="skip", slot=layer.skip_slot)
        if layer.prev_pass is not None and "cross_repeat_scale" in layer.hooks:
            g.add_edge(f"v{layer.prev_pass}", node, kind="cross_repeat")
        prev = node
    g.add_node("head", kind="head")
    g.add_edge(prev, "head", kind="residual")
    return g
