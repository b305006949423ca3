"""Predict, from a Plan alone, what a spec costs: parameters, FLOPs per token, artifact bytes.

`estimate(plan) -> Estimate`. No torch is imported, directly or indirectly (tested): the byte
figures come from recurc.sizemodel (shapes + QuantSpec → compressed bytes per group, with a
confidence band), the counts from the Plan.

FLOPs per token (forward) of an execution path:
    2 × (weights of the 2-D matrices every executed layer runs: q, k, v, out-proj, MLP fc/proj)
  + 2 × 2 × dim × (T + 1)/2 per layer   (QKᵀ and AV over the causal average context, T = seq_len)
  + 2 × vocab × dim                     (the head, tied or not)
Training ≈ 3 × forward of the main path (forward + backward); evaluation = forward of the eval
path. Elementwise work (norms, RoPE, scales, softcap, per-pass vectors) is left out (< 1 %).

Budget guard: when the predicted total exceeds the budget, `suggestions` lists the cheapest
single changes that make it fit (each re-estimated on a modified spec, with the `key=value`
overrides that reproduce it), ranked by an expected-quality cost, then by how little they change.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SpecError
from .plan import Plan
from .quantspec import GROUPS, Compressor

# Expected-quality cost classes of the budget guard's changes (lower = try first).
COST = {
    "compressor": 0,      # lossless
    "container": 0,
    "dtype": 1,           # fp32 → fp16 control / passthrough tensors
    "clip": 2,            # larger std clip k: more clipping error, same bits
    "int8": 3,            # a passthrough group quantized to int8
    "bits.mlp": 4,
    "bits.attention": 5,
    "mlp_width": 6,
    "bits.embeddings": 7,
    "loops": 8,
    "combined": 9,
}


@dataclass
class Suggestion:
    change: str                    # for people: "mlp int8 → int7"
    overrides: list[str]           # `recurc estimate SPEC <overrides>` reproduces it
    kind: str                      # a COST key
    model_bytes: int
    total_bytes: int
    headroom: int
    model_bytes_high: int
    cost: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Estimate:
    name: str
    unique_params: int
    effective_params: int
    unique_by_group: dict[str, int]
    effective_by_group: dict[str, int]
    flops_per_token_train: float
    flops_per_token_eval: float
    raw_bytes_by_group: dict[str, int]
    bytes_by_group: dict[str, int]           # predicted compressed bytes of each group's streams
    container_bytes: int                     # serialization + container overhead, compressed
    model_bytes: int                         # = sum(bytes_by_group) + container_bytes (rounded)
    model_bytes_low: int
    model_bytes_high: int
    code_bytes: int
    total_bytes: int
    budget: int
    headroom: int                            # budget - total_bytes (negative: over)
    fits: bool
    fits_high: bool                          # the high end of the band fits too
    raw_bytes: int = 0
    flops_forward_by_path: dict[str, float] = field(default_factory=dict)
    flops_per_token_train_schedule: float = 0.0   # phases weighted by training fraction
    code_source: str = "code.bytes"
    compressor: str = ""
    weights: str = ""                        # the trained-weight profile of the size model
    suggestions: list[Suggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["suggestions"] = [s.to_dict() for s in self.suggestions]
        return d


# ---------------------------------------------------------------- FLOPs
def _matrix_weights_by_owner(plan: Plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in plan.params:
        if len(p.shape) == 2 and p.group in ("attention", "mlp"):
            out[p.owner] = out.get(p.owner, 0) + p.numel
    return out


def forward_flops(plan: Plan, path: str = "main") -> float:
    """Forward FLOPs per token of one execution path (see the module docstring)."""
    m = plan.spec.model
    mats = _matrix_weights_by_owner(plan)
    attn_ctx = 2 * 2 * m.dim * (m.seq_len + 1) / 2
    total = 2.0 * m.vocab_size * m.dim
    for layer in plan.paths[path].layers:
        total += 2.0 * (mats.get(layer.attn, 0) + mats.get(layer.mlp, 0)) + attn_ctx
    return total


# ---------------------------------------------------------------- code bytes
def code_bytes(plan: Plan) -> tuple[int, str]:
    code = plan.spec.code
    if code.bytes is not None:
        return int(code.bytes), "code.bytes"
    try:
        from .emit import emitted_code_bytes  # type: ignore[attr-defined]
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name not in ("recurc.emit", None):
            raise
        raise SpecError(f"code.emit={code.emit} needs recurc.emit (emitted_code_bytes) to count the script's bytes, "
                        "and it is not available", where=plan.spec.where("code"),
                        hint="give the script's size instead: code: {bytes: N}") from None
    return int(emitted_code_bytes(plan)), f"recurc emit ({code.emit})"


# ---------------------------------------------------------------- the estimate
def _tensors(plan: Plan) -> list[tuple[str, tuple[int, ...], str]]:
    return [(p.name, p.shape, p.group) for p in plan.params]


def _bytes(plan: Plan):
    # Sweeps score many variants with the same tensors and quant settings (a loop window moves,
    # the stored weights do not): the prediction is a pure function of those two.
    from .sizemodel import predict
    tensors = tuple(_tensors(plan))
    key = (tensors, plan.spec.quant.model_dump_json())
    hit = _PREDICTIONS.get(key)
    if hit is None:
        if len(_PREDICTIONS) > 4096:
            _PREDICTIONS.clear()
        hit = _PREDICTIONS[key] = predict(list(tensors), plan.spec.quant)
    return hit


_PREDICTIONS: dict = {}


def estimate(plan: Plan, *, suggest: bool = True) -> Estimate:
    """Counts, FLOPs and predicted artifact bytes of a Plan; suggestions when over budget."""
    spec = plan.spec
    size = _bytes(plan)
    cbytes, csource = code_bytes(plan)
    by_group = {g: int(round(size.groups[g].compressed)) for g in GROUPS}
    model = int(round(size.total))
    total = model + cbytes
    eff = plan.effective_by_group("main")
    fwd = {name: forward_flops(plan, name) for name in plan.paths}
    # training FLOPs over the schedule: each phase's path weighted by its fraction of training
    sched = 0.0
    phases = sorted(plan.phases, key=lambda ph: ph.start)
    for i, ph in enumerate(phases):
        end = phases[i + 1].start if i + 1 < len(phases) else 1.0
        sched += 3.0 * fwd[ph.path] * max(end - ph.start, 0.0)
    notes = []
    if spec.quant.compressor.name == "zstd" and spec.quant.container == "torch":
        notes.append("zstd-22 in the torch container runs ~8 % above this estimate: the pickle ahead of the "
                     "values spoils zstd's statistics (docs/size-model.md); container: recurc does not")
    comp = spec.quant.compressor
    if comp.name != "none" and comp.level is not None and comp.level != Compressor(name=comp.name).effective_level:
        notes.append(f"the size model is calibrated at {comp.name}'s maximum level; at level {comp.level} "
                     "expect more bytes (brotli-9 measured ~18 % above brotli-11 on int6 values)")
    if any(g.scheme == "ternary" for g in spec.quant.groups.values()):
        notes.append("ternary values sharing the artifact with int8 values come out ~2 % above this "
                     "estimate with brotli (docs/size-model.md, known gap)")
    est = Estimate(
        name=spec.name,
        unique_params=plan.unique_params,
        effective_params=sum(eff.values()),
        unique_by_group=plan.unique_by_group(),
        effective_by_group=eff,
        flops_per_token_train=3.0 * fwd["main"],
        flops_per_token_eval=fwd[plan.eval_path],
        raw_bytes_by_group={g: int(size.groups[g].raw_bytes) for g in GROUPS},
        bytes_by_group=by_group,
        container_bytes=model - sum(by_group.values()),
        model_bytes=model,
        model_bytes_low=int(math.floor(size.low)),
        model_bytes_high=int(math.ceil(size.high)),
        code_bytes=cbytes,
        total_bytes=total,
        budget=spec.budget,
        headroom=spec.budget - total,
        fits=total <= spec.budget,
        fits_high=int(math.ceil(size.high)) + cbytes <= spec.budget,
        raw_bytes=int(size.raw_bytes),
        flops_forward_by_path=fwd,
        flops_per_token_train_schedule=sched,
        code_source=csource,
        compressor=_compressor_label(spec.quant.compressor),
        weights=spec.quant.weights,
        notes=notes,
    )
    if suggest and not est.fits:
        est.suggestions = suggestions(plan, est)
    return est


def _compressor_label(c) -> str:
    return f"{c.name}-{c.effective_level}" + (" + byte shuffle" if c.byte_shuffle else "")


# ---------------------------------------------------------------- budget guard
class _Trial:
    """Re-estimates a Plan's spec under overrides (cached), without suggestions."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.data = plan.spec.to_data()
        self.cache: dict[tuple[str, ...], Estimate | None] = {}

    def __call__(self, overrides: list[str]) -> Estimate | None:
        key = tuple(overrides)
        if key not in self.cache:
            from .plan import make_plan
            from .spec import apply_overrides, validate
            try:
                data = apply_overrides(self.data, {}, list(overrides))
                spec = validate(data, {}, "<suggestion>")
                self.cache[key] = estimate(make_plan(spec), suggest=False)
            except SpecError:
                self.cache[key] = None
        return self.cache[key]


def _suggestion(kind: str, change: str, overrides: list[str], e: Estimate) -> Suggestion:
    return Suggestion(change=change, overrides=list(overrides), kind=kind, model_bytes=e.model_bytes,
                      total_bytes=e.total_bytes, headroom=e.headroom, model_bytes_high=e.model_bytes_high,
                      cost=COST[kind])


def _int_groups(plan: Plan) -> dict[str, Any]:
    """Groups stored as int that actually hold quantized tensors."""
    from .quantspec import plan_tensor
    q = plan.spec.quant
    out = {}
    for p in plan.params:
        tp = plan_tensor(p.shape, "float32", p.group, q)
        if tp.kind == "int" and p.group not in out:
            out[p.group] = tp.gq
    return out


def _passthrough_groups(plan: Plan) -> dict[str, int]:
    """Groups with tensors above the passthrough threshold that are stored as floats: bytes of them."""
    from .quantspec import plan_tensor
    q = plan.spec.quant
    out: dict[str, int] = {}
    for p in plan.params:
        tp = plan_tensor(p.shape, "float32", p.group, q)
        if tp.kind == "passthrough" and p.numel > q.passthrough_max_numel:
            out[p.group] = out.get(p.group, 0) + p.numel
        elif tp.kind == "passthrough" and q.groups.get(p.group) is not None \
                and q.groups[p.group].scheme in ("fp16", "fp32"):  # type: ignore[call-overload]
            out[p.group] = out.get(p.group, 0) + p.numel
    return out


def _fmt_k(k: float) -> str:
    return f"{k:.2f}".rstrip("0").rstrip(".")


def suggestions(plan: Plan, base: Estimate, *, limit: int = 10) -> list[Suggestion]:
    """The cheapest single changes that bring the predicted total within the budget."""
    spec = plan.spec
    q = spec.quant
    trial = _Trial(plan)
    out: list[Suggestion] = []

    def fits(ov: list[str]) -> Estimate | None:
        e = trial(ov)
        return e if e is not None and e.fits else None

    # 1. a stronger compressor / leaner container (lossless)
    c = q.compressor
    for name, shuffle, label in (("brotli", True, "brotli-11 + byte shuffle"), ("lzma", False, "lzma-9"),
                                 ("lzma", True, "lzma-9 + byte shuffle")):
        if (c.name, c.effective_level, c.byte_shuffle) == (name, 11 if name == "brotli" else 9, shuffle):
            continue
        ov = [f"quant.compressor.name={name}", "quant.compressor.level=null",
              f"quant.compressor.byte_shuffle={str(shuffle).lower()}"]
        e = fits(ov)
        if e:
            out.append(_suggestion("compressor", f"compressor {_compressor_label(c)} → {label}", ov, e))
    if q.container == "torch":
        ov = ["quant.container=recurc"]
        e = fits(ov)
        if e:
            out.append(_suggestion("container", "container torch.save → recurc flat format", ov, e))
    # 2. fp32 control / passthrough tensors → fp16
    for key, label in (("control_dtype", "control tensors"), ("passthrough_dtype", "small passthrough tensors")):
        if getattr(q, key) == "fp32":
            ov = [f"quant.{key}=fp16"]
            e = fits(ov)
            if e:
                out.append(_suggestion("dtype", f"{label} fp32 → fp16", ov, e))
    ints = _int_groups(plan)
    # 3. a larger std-clip k (smallest on a ladder that fits)
    for g, gq in ints.items():
        if gq.clip.kind != "std":
            continue
        k0 = float(gq.clip.value)
        for f in (1.1, 1.25, 1.5, 2.0, 3.0, 4.0):
            k = round(k0 * f, 2)
            ov = [f"quant.groups.{g}.clip.value={_fmt_k(k)}"]
            e = fits(ov)
            if e:
                out.append(_suggestion("clip", f"{g} std clip k {_fmt_k(k0)} → {_fmt_k(k)}", ov, e))
                break
    # 4. int8 instead of a float passthrough for a group
    for g in _passthrough_groups(plan):
        cur = q.groups.get(g)  # type: ignore[call-overload]
        ov = [f"quant.groups.{g}.scheme=int", f"quant.groups.{g}.bits=8"]
        e = fits(ov)
        if e:
            was = cur.scheme if cur is not None else (q.control_dtype if g in ("scalars", "per_pass")
                                                       else q.passthrough_dtype)
            out.append(_suggestion("int8", f"{g} {was} → int8 per row", ov, e))
    # 5. fewer bits for a quantized group (the smallest reduction that fits)
    for g in ("mlp", "attention", "embeddings"):
        gq = ints.get(g)
        if gq is None or gq.scheme != "int":
            continue
        for b in range(gq.bits - 1, 1, -1):
            ov = [f"quant.groups.{g}.bits={b}"]
            e = fits(ov)
            if e:
                out.append(_suggestion(f"bits.{g}", f"{g} int{gq.bits} → int{b}", ov, e))
                break
    # 6. a narrower MLP (the widest multiple of 64 that fits)
    width = spec.model.mlp.width(spec.model.dim)
    if width > 64:
        lo, hi = 1, (width - 1) // 64     # candidate widths 64·lo .. 64·hi
        if fits([f"model.mlp.hidden={64 * lo}"]):
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fits([f"model.mlp.hidden={64 * mid}"]):
                    lo = mid
                else:
                    hi = mid - 1
            ov = [f"model.mlp.hidden={64 * lo}"]
            out.append(_suggestion("mlp_width", f"MLP hidden {width} → {64 * lo}", ov, trial(ov)))
    # 7. one loop fewer (orders with exactly one loop)
    loops = plan.main.order.loops
    if len(loops) == 1 and loops[0].count >= 2:
        k = loops[0].count
        for n in range(k - 1, 0, -1):
            try:
                order = plan.main.order.with_loop_count(n).canonical(plan.block_names)
            except SpecError:
                break
            ov = [f'order="{order}"']
            e = fits(ov)
            if e:
                out.append(_suggestion("loops", f"loop ×{k} → ×{n}" + (f" ({k - n} fewer)" if k - n > 1 else ""),
                                       ov, e))
                break
    if not out:
        comb = _combined(plan, trial, ints)
        if comb is not None:
            out.append(comb)
    out.sort(key=lambda s: (s.cost, -s.total_bytes))
    return out[:limit]


def _combined(plan: Plan, trial: _Trial, ints: dict[str, Any]) -> Suggestion | None:
    """No single change fits: greedily stack one-step changes, cheapest first, until it does."""
    q = plan.spec.quant
    bits = {g: gq.bits for g, gq in ints.items() if gq.scheme == "int"}
    applied: list[str] = []
    labels: list[str] = []
    if (q.compressor.name, q.compressor.byte_shuffle) != ("brotli", True):
        applied += ["quant.compressor.name=brotli", "quant.compressor.level=null", "quant.compressor.byte_shuffle=true"]
        labels.append(f"compressor {_compressor_label(q.compressor)} → brotli-11 + byte shuffle")
    if q.control_dtype == "fp32":
        applied.append("quant.control_dtype=fp16")
        labels.append("control tensors fp32 → fp16")
    e = trial(applied) if applied else None
    if e is not None and e.fits:
        return _suggestion("combined", "; ".join(labels), applied, e)
    order = [g for g in ("mlp", "attention", "embeddings") if g in bits]
    floor = {"mlp": 3, "attention": 3, "embeddings": 4}
    while True:
        moved = False
        for g in order:   # one bit off each group in turn
            if bits[g] <= floor[g]:
                continue
            bits[g] -= 1
            moved = True
            ov = applied + [f"quant.groups.{x}.bits={bits[x]}" for x in order if bits[x] != ints[x].bits]
            e = trial(ov)
            if e is not None and e.fits:
                change = [f"{x} int{ints[x].bits} → int{bits[x]}" for x in order if bits[x] != ints[x].bits]
                return _suggestion("combined", "; ".join(labels + change), ov, e)
        if not moved:
            return None


# `recurc.estimate(...)`: the module itself is callable (see recurc/_callable.py).
from ._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, estimate)
