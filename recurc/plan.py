"""The Plan: the one intermediate representation every output is derived from.

A Plan holds the physical blocks, the expanded virtual layers of each execution path (the main
training order, the schedule's other orders, the evaluation order), the owner of every parameter
(a block, a block's borrowed sub-module, or a virtual layer) with its state-dict name, shape and
tensor group, and the data-flow graph. It is plain Python: no torch, so counting parameters,
estimating bytes and diffing specs stay fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # networkx costs ~0.3 s to import; only the graph needs it
    import networkx as nx

from .errors import SpecError
from .order import Order, Ref, parse_order
from .quantspec import GROUPS
from .spec import BlockSpec, MLPSpec, Spec


@dataclass(frozen=True)
class Block:
    """A physical block: the weights one or more virtual layers run."""
    index: int
    name: str            # "4" for numbered blocks, "A" for named ones; the state-dict key
    mlp_hidden: int
    activation: str
    attn: str            # module path of the attention it runs (its own, or a borrowed one)
    mlp: str             # module path of its MLP for the first pass


@dataclass(frozen=True)
class VirtualLayer:
    """One executed layer: a pass of a physical block at a depth position."""
    index: int
    block: int
    pass_index: int              # how many times this block ran earlier in the same order
    passes: int                  # K: how many times this block runs in the order
    side: Literal["encoder", "decoder"]
    skip_slot: int | None        # decoder layers: row of skip_weights added before the block
    skip_from: int | None        # ... and the encoder layer whose output it adds
    parallel: bool               # attention and MLP read the same input
    xsa: bool                    # exclusive self-attention
    attn: str                    # module paths this layer runs
    mlp: str
    scalars: str                 # owner of attn_scale / mlp_scale / resid_mix
    per_pass: str | None         # owner of per-pass parameters (iteration embedding, FiLM, ...)
    prev_pass: int | None        # virtual index of the same block's previous pass
    norm_scale: float            # 1/sqrt(physical index + 1) when model.norm_scale asks for it
    residual_scale: float        # 1/sqrt(K) when per_pass.residual_scale asks for it
    depth_index: int | None      # row of the sinusoidal depth encoding: the main order's (block, pass)


@dataclass(frozen=True)
class ExecPath:
    """A complete execution order; the built module prebuilds one forward per path."""
    name: str
    order: Order
    layers: tuple[VirtualLayer, ...]
    n_skips: int

    @property
    def depth(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class Phase:
    start: float       # training fraction from which `path` runs
    path: str


@dataclass(frozen=True)
class ParamInfo:
    name: str                    # state-dict name
    shape: tuple[int, ...]
    group: str                   # one of quantspec.GROUPS
    owner: str                   # module path that owns it ("blocks.4.attn", "passes.6", "model")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Plan:
    spec: Spec
    blocks: tuple[Block, ...]
    paths: dict[str, ExecPath]
    phases: tuple[Phase, ...]
    eval_path: str
    params: tuple[ParamInfo, ...]
    block_names: dict[int, str] | None = field(default=None)

    # ---- views
    @property
    def main(self) -> ExecPath:
        return self.paths["main"]

    @property
    def layers(self) -> tuple[VirtualLayer, ...]:
        return self.main.layers

    @cached_property
    def param_by_name(self) -> dict[str, ParamInfo]:
        return {p.name: p for p in self.params}

    def canonical_order(self, path: str = "main") -> str:
        return self.paths[path].order.canonical(self.block_names)

    # ---- counts (no torch)
    @cached_property
    def unique_params(self) -> int:
        return sum(p.numel for p in self.params)

    def unique_by_group(self) -> dict[str, int]:
        out = {g: 0 for g in GROUPS}
        for p in self.params:
            out[p.group] += p.numel
        return out

    @cached_property
    def _by_owner(self) -> dict[str, list[ParamInfo]]:
        out: dict[str, list[ParamInfo]] = {}
        for p in self.params:
            out.setdefault(p.owner, []).append(p)
        return out

    def effective_by_group(self, path: str = "main") -> dict[str, int]:
        """Parameters executed per token: a block run K times counts K times."""
        out = {g: 0 for g in GROUPS}
        for layer in self.paths[path].layers:
            for owner in {layer.attn, layer.mlp, layer.scalars, layer.per_pass} - {None}:
                for p in self._by_owner.get(owner, ()):
                    out[p.group] += p.numel
        for p in self._by_owner.get("model", ()):
            out[p.group] += p.numel
        return out

    def effective_params(self, path: str = "main") -> int:
        return sum(self.effective_by_group(path).values())

    # ---- identity
    def canonical(self) -> dict:
        """Everything that defines the architecture and its export, spelling removed; two specs
        with equal canonical() build the same model and the same artifact."""
        data = self.spec.to_data()
        for k in ("name", "description"):
            data.pop(k, None)
        # what the size model assumes about trained weights changes neither the model nor its
        # artifact (and a profile file's absolute path would tie the identity to a checkout)
        data.get("quant", {}).pop("weights", None)
        data["order"] = self.canonical_order()
        data["blocks"] = [b.name for b in self.blocks] if self.block_names else len(self.blocks)
        # widths, not how they were written: `mult: 2` and `hidden: 1024` at dim 512 are one MLP
        model = data["model"]
        model["mlp"] = {"hidden": self.spec.model.mlp.width(self.spec.model.dim),
                        "activation": model["mlp"]["activation"],
                        **({"negative_slope": model["mlp"]["negative_slope"]}
                           if model["mlp"]["activation"] == "leaky_relu2" else {})}
        model["rope"]["dims"] = model["rope"]["dims"] or self.spec.model.head_dim
        if isinstance(data["blocks"], list):
            data["blocks"] = [{"name": b.name, "mlp_hidden": b.mlp_hidden, "activation": b.activation,
                               "attn": b.attn, "mlp": b.mlp} for b in self.blocks]
        sched = data["schedule"]
        for key in ("before", "eval_order"):
            if sched.get(key) is not None:
                sched[key] = self.canonical_order("before" if key == "before" else "eval")
        return data

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        return build_graph(self)


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
    orders: dict[str, Order] = {"main": main}
    phases: list[tuple[float, str]] = []
    if sched.progressive:
        for step in sched.progressive:
            name = f"repeats{step.repeats}"
            orders[name] = _with_count(main, step.repeats, spec)
            phases.append((step.at, name))
    elif sched.loops_at is not None:
        phases = [(0.0, "before"), (sched.loops_at, "main")]
    else:
        phases = [(0.0, "main")]
    if sched.eval_repeats is not None:
        orders["eval"] = _with_count(main, sched.eval_repeats, spec)
    elif sched.eval_order is not None:
        orders["eval"] = _parse(sched.eval_order, spec, "schedule", "eval_order")

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
    # per-pass owners are keyed by (block, pass) of the main order
    main_owner: dict[tuple[int, int], int] = {}
    seen: dict[int, int] = {}
    for v, b in enumerate(resolved["main"]):
        main_owner[(b, seen.get(b, 0))] = v
        seen[b] = seen.get(b, 0) + 1

    for name, seq in resolved.items():
        missing = sorted({b for b in seq if b not in counts_main})
        if missing:
            label = blocks[missing[0]].name
            raise SpecError(f"the {name} order runs block {label}, which the main order never runs",
                            where=sources[name][1], hint="per-pass tensors and skips are defined by `order`; "
                            "every block a schedule runs must appear there")

    # tensors a pass owns besides its block scalars and cross-repeat scale (which only later passes have)
    has_per_pass = pp.iteration_embedding == "learned" or pp.film or pp.timestep_scale
    untie = {"attention": "mlp", "mlp": "attn"}.get(spec.sharing)

    def pass_owner(b: int, k: int) -> tuple[int, int, int]:
        """(owning virtual layer of the main order, its pass index there, the main order's K)."""
        main_k = min(k, counts_main[b] - 1)
        return main_owner[(b, main_k)], main_k, counts_main[b]

    paths: dict[str, ExecPath] = {}
    for name, seq in resolved.items():
        paths[name] = _make_path(name, orders[name], seq, spec, blocks, n_blocks, in_scope, pass_owner,
                                 has_per_pass, untie)
    n_skips = max((p.n_skips for k, p in paths.items() if k != "eval"), default=0)
    if "eval" in paths and paths["eval"].n_skips > n_skips:
        # More passes at evaluation move the U-Net split; only the trained skips exist, and the
        # decoder layers nearest the split use them.
        paths["eval"] = _make_path("eval", orders["eval"], resolved["eval"], spec, blocks, n_blocks, in_scope,
                                   pass_owner, has_per_pass, untie, skip_cap=n_skips)

    _check_features(spec, n_blocks, len(main))
    params = _make_params(spec, blocks, paths, n_skips, in_scope, untie, looped)
    block_names = {b.index: b.name for b in blocks} if named else None
    return Plan(spec=spec, blocks=tuple(blocks), paths=paths,
                phases=tuple(Phase(s, p) for s, p in phases), eval_path="eval" if "eval" in paths else "main",
                params=tuple(params), block_names=block_names)


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


def _make_blocks(spec: Spec, block_specs: list, name_index: dict[str, int], named: bool) -> list[Block]:
    blocks: list[Block] = []
    for i, bs in enumerate(block_specs):
        name = bs.name if named else str(i)
        mlp: MLPSpec = (bs.mlp if named and bs.mlp is not None else spec.model.mlp)
        attn, mlp_path = f"blocks.{name}.attn", f"blocks.{name}.mlp"
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
                    attn = f"blocks.{src}.attn"
                else:
                    src_mlp = src_spec.mlp or spec.model.mlp
                    if bs.mlp is not None and bs.mlp != src_mlp:
                        raise SpecError(f"block {name} shares the MLP of {src} but overrides its shape",
                                        where=where, hint="drop the mlp override of one of them")
                    mlp, mlp_path = src_mlp, f"blocks.{src}.mlp"
        blocks.append(Block(i, name, mlp.width(spec.model.dim), mlp.activation, attn, mlp_path))
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


def _make_path(name, order, seq, spec, blocks, n_blocks, in_scope, pass_owner, has_per_pass, untie,
               skip_cap: int | None = None) -> ExecPath:
    m, f, pp = spec.model, spec.features, spec.per_pass
    n = len(seq)
    split = order.split
    n_skips = min(split, n - split) if spec.skips != "none" else 0
    if skip_cap is not None:
        n_skips = min(n_skips, skip_cap)
    counts = _pass_counts(seq)
    seen: dict[int, int] = {}
    last_v: dict[int, int] = {}
    layers = []
    for v, b in enumerate(seq):
        k = seen.get(b, 0)
        seen[b] = k + 1
        idx = v if f.index == "virtual" else b
        limit = n if f.index == "virtual" else n_blocks
        decoder_i = v - split
        skip_slot = decoder_i if 0 <= decoder_i < n_skips else None
        owner_v, main_k, main_passes = pass_owner(b, k)
        scoped = in_scope(b)
        own = f"passes.{owner_v}"
        blk = blocks[b]
        attn, mlp = blk.attn, blk.mlp
        # a later pass runs its own sub-module only where the main order has one for it
        if untie == "mlp" and main_k > 0 and scoped:
            mlp = f"{own}.mlp"
        if untie == "attn" and main_k > 0 and scoped:
            attn = f"{own}.attn"
        stores = has_per_pass or (pp.cross_repeat_scale and main_k > 0)
        layers.append(VirtualLayer(
            index=v, block=b, pass_index=k, passes=counts[b],
            side="encoder" if v < split else "decoder",
            skip_slot=skip_slot, skip_from=(split - 1 - decoder_i) if skip_slot is not None else None,
            parallel=f.parallel_residual_from is not None and idx >= f.parallel_residual_from,
            xsa=f.xsa_last > 0 and idx >= limit - f.xsa_last,
            attn=attn, mlp=mlp,
            scalars=own if (pp.block_scalars and scoped) else f"blocks.{blk.name}",
            per_pass=own if (stores and scoped) or (pp.block_scalars and scoped) else None,
            prev_pass=last_v.get(b),
            norm_scale=1 / math.sqrt(b + 1) if m.norm_scale == "inv_sqrt_layer" else 1.0,
            # K of the main order, so a schedule's other orders run the scale the model ends with
            residual_scale=1 / math.sqrt(main_passes) if pp.residual_scale == "inv_sqrt_k" else 1.0,
            depth_index=owner_v if scoped else None,
        ))
        last_v[b] = v
    return ExecPath(name, order, tuple(layers), n_skips)


def _attention_params(prefix: str, spec: Spec) -> list[ParamInfo]:
    m = spec.model
    kv = m.kv_heads * m.head_dim
    return [
        ParamInfo(f"{prefix}.c_q.weight", (m.dim, m.dim), "attention", prefix),
        ParamInfo(f"{prefix}.c_k.weight", (kv, m.dim), "attention", prefix),
        ParamInfo(f"{prefix}.c_v.weight", (kv, m.dim), "attention", prefix),
        ParamInfo(f"{prefix}.proj.weight", (m.dim, m.dim), "attention", prefix),
        ParamInfo(f"{prefix}.q_gain", (m.heads,), "scalars", prefix),
    ]


def _mlp_params(prefix: str, hidden: int, spec: Spec) -> list[ParamInfo]:
    d = spec.model.dim
    return [ParamInfo(f"{prefix}.fc.weight", (hidden, d), "mlp", prefix),
            ParamInfo(f"{prefix}.proj.weight", (d, hidden), "mlp", prefix)]


def _scalar_params(prefix: str, group: str, spec: Spec) -> list[ParamInfo]:
    d = spec.model.dim
    return [ParamInfo(f"{prefix}.attn_scale", (d,), group, prefix),
            ParamInfo(f"{prefix}.mlp_scale", (d,), group, prefix),
            ParamInfo(f"{prefix}.resid_mix", (2, d), group, prefix)]


def _make_params(spec, blocks, paths, n_skips, in_scope, untie, looped) -> list[ParamInfo]:
    """Every stored tensor exactly once, in the order the built module registers them."""
    m, pp = spec.model, spec.per_pass
    out = [ParamInfo("tok_emb.weight", (m.vocab_size, m.dim), "embeddings", "model")]
    main = paths["main"].layers
    for blk in blocks:
        pre = f"blocks.{blk.name}"
        if blk.attn == f"{pre}.attn":
            out += _attention_params(blk.attn, spec)
        if blk.mlp == f"{pre}.mlp":
            out += _mlp_params(blk.mlp, blk.mlp_hidden, spec)
        if not (pp.block_scalars and in_scope(blk.index)):
            out += _scalar_params(pre, "scalars", spec)
    for layer in main:
        own = f"passes.{layer.index}"
        if layer.attn == f"{own}.attn":
            out += _attention_params(layer.attn, spec)
        if layer.mlp == f"{own}.mlp":
            out += _mlp_params(layer.mlp, blocks[layer.block].mlp_hidden, spec)
        if layer.scalars == own:
            out += _scalar_params(own, "per_pass", spec)
        if layer.per_pass == own:
            d = m.dim
            if pp.iteration_embedding == "learned":
                out.append(ParamInfo(f"{own}.iter_emb", (d,), "per_pass", own))
            if pp.film:
                out += [ParamInfo(f"{own}.film_scale", (d,), "per_pass", own),
                        ParamInfo(f"{own}.film_shift", (d,), "per_pass", own)]
            if pp.timestep_scale:
                out.append(ParamInfo(f"{own}.gamma", (d,), "per_pass", own))
            if pp.cross_repeat_scale and layer.pass_index > 0:
                out.append(ParamInfo(f"{own}.cross_repeat", (d,), "per_pass", own))
    if n_skips:
        out.append(ParamInfo("skip_weights", (n_skips, m.dim), "scalars", "model"))
        if spec.skips == "gated_unet":
            out.append(ParamInfo("skip_gates", (n_skips, m.dim), "scalars", "model"))
    if not m.tied_embeddings:
        out.append(ParamInfo("lm_head.weight", (m.vocab_size, m.dim), "embeddings", "model"))
    return out


# ---------------------------------------------------------------- graph
def build_graph(plan: Plan, path: str = "main") -> nx.MultiDiGraph:
    """Data flow of one path: embed → v0 → … → head, U-Net skip edges, blocks as shared nodes.

    A multigraph: a skip or cross-repeat edge can join the same two layers as a residual edge."""
    import networkx as nx

    g = nx.MultiDiGraph(spec=plan.spec.name, path=path)
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
        if layer.prev_pass is not None and plan.spec.per_pass.cross_repeat_scale and layer.per_pass:
            g.add_edge(f"v{layer.prev_pass}", node, kind="cross_repeat")
        prev = node
    g.add_node("head", kind="head")
    g.add_edge(prev, "head", kind="residual")
    return g
