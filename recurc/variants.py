"""Families of variants: a template spec plus a `sweep:` section → many concrete specs, scored by the
torch-free estimator, filtered by constraints, ranked, deduplicated by canonical Plan.

    sweep:
      loop_windows: {layers: 11, width: [1, 3], repeats: [2, 4]}   # every contiguous window looped
      prelude_loop_coda: {prelude: [0, 2], shared: [2, 4], loops: [2, 4], coda: [0, 2]}
      sharing: [block, attention]
      model.dim: [512, 576]                                         # any spec field by dotted path
      quant.groups.mlp.bits: [5, 6]
      constraints: {max_total_bytes: budget, depth: [9, 20], max_flops_per_token: 2.0e8,
                    min_unique_params: 1.0e7}
      rank: -unique_params                                          # "-" = descending
      top: 50

Two-element lists in a generator are inclusive ranges; axis lists are the values themselves.
docs/variants.md describes the format. The per-variant path is kept lean: dict edits
(copy-on-write along the edited paths), one `Spec.model_validate`, `make_plan` (parsed orders are
cached), one call of the scorer, and the canonical data for deduplication.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from .atomic import atomic_write
from .errors import SpecError
from .order import format_order
from .plan import Plan, make_plan, with_settings
from .safeio import safe_component
from .spec import Spec, apply_overrides, resolve_root, validate

RESERVED = {"constraints", "rank", "top", "loop_windows", "prelude_loop_coda", "axes"}
# generic last keys that say little on their own: `quant.groups.mlp.bits` is labelled `mlp`
GENERIC_KEYS = {"bits", "value", "kind", "name", "level", "scheme", "base", "dims", "gptq",
                "clip", "activation", "at", "repeats", "byte_shuffle", "scale_dtype"}
METRIC_ALIASES = {"flops_per_token": "flops_per_token_train", "bytes": "total_bytes", "params": "unique_params"}
PARALLEL_MIN = 2000          # sweeps at least this big use all cores
MAX_VARIANTS = 100_000       # a bigger sweep is refused before anything is generated (`--max` raises it)
MAX_GEN_VALUE = 512          # largest layer count, width, repeat or block count a generator takes


# ---------------------------------------------------------------- plain data out
@dataclass
class Variant:
    name: str                          # stable, from the axis values: loop4-5x2_dim512_mlp6
    values: dict[str, Any]             # axis → value
    order: str                         # canonical main order
    metrics: dict[str, Any]            # depth, blocks, unique_params, ..., total_bytes, fits
    passed: bool                       # meets every constraint
    failed: list[str] = field(default_factory=list)   # the constraints it misses
    rank: int | None = None            # 1-based among the variants that passed
    spec: dict = field(default_factory=dict, repr=False)   # the spec data written to <name>.yaml

    def to_dict(self) -> dict:
        return {"name": self.name, "rank": self.rank, "passed": self.passed, "failed": self.failed,
                "values": self.values, "order": self.order, "metrics": self.metrics, "spec": self.spec}


# ---------------------------------------------------------------- scoring
def count_score(plan: Plan) -> dict:
    """A scorer from Plan counts and FLOPs alone (no bytes): used when the size model is not wanted
    and in tests. FLOPs are recurc.estimate's (the one definition)."""
    from .estimate import forward_flops
    eff = plan.effective_by_group()
    return {"unique_params": plan.unique_params, "effective_params": sum(eff.values()),
            "flops_per_token_train": 3.0 * forward_flops(plan, "main"),
            "flops_per_token_eval": forward_flops(plan, plan.eval_path)}


def default_scorer() -> Callable[[Plan], Any]:
    """recurc.estimate.estimate when it exists, else count_score (no byte figures)."""
    try:
        from .estimate import estimate as _estimate  # type: ignore[attr-defined]
    except ImportError:
        return count_score

    def estimate(plan: Plan):
        return _estimate(plan, suggest=False)     # no over-budget suggestions: they re-estimate many times
    estimate.__module__ = "recurc.estimate"
    return estimate


def _metrics(plan: Plan, scored: Any) -> dict:
    out: dict[str, Any] = {"depth": plan.main.depth, "blocks": len(plan.blocks),
                           "unique_params": plan.unique_params}
    if scored is None:
        return out
    if isinstance(scored, dict):
        d = scored
    elif hasattr(scored, "__dict__"):
        d = vars(scored)                  # a dataclass: its fields, without to_dict()'s deep copy
    else:
        d = scored.to_dict()
    for k, v in d.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
            out[k] = dict(v)
    return out


# ---------------------------------------------------------------- template parsing
@dataclass
class _Axis:
    label: str
    entries: list[tuple[str, Any, list[tuple[tuple[str, ...], Any]]]]   # (name fragment, value, edits)


def _range(v: Any, what: str, where: str | None) -> list[int]:
    if isinstance(v, bool):
        raise SpecError(f"{what} takes a number or [lo, hi], got {v!r}", where=where)
    if isinstance(v, int):
        v = [v, v]
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        lo, hi = v
        if hi < lo:
            raise SpecError(f"{what}: range [{lo}, {hi}] runs backwards", where=where)
        if lo < 0 or hi > MAX_GEN_VALUE:      # checked before the list is made: [0, 1e12] stays cheap
            raise SpecError(f"{what}: values must lie in 0..{MAX_GEN_VALUE}, got {lo if lo < 0 else hi:,}",
                            where=where)
        return list(range(lo, hi + 1))
    raise SpecError(f"{what} takes a number or an inclusive range [lo, hi], got {v!r}", where=where,
                    hint="e.g. width: [1, 3] means widths 1, 2 and 3")


def _gen_args(spec: Any, keys: dict[str, bool], gen: str, where: str | None) -> dict[str, list[int]]:
    if not isinstance(spec, dict):
        raise SpecError(f"sweep.{gen} takes a mapping of {', '.join(keys)}", where=where)
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise SpecError(f"sweep.{gen}: unknown key {unknown[0]!r}", where=where,
                        hint=f"{gen} takes {', '.join(keys)}")
    out = {}
    for k, required in keys.items():
        if k not in spec:
            if required:
                raise SpecError(f"sweep.{gen} needs {k}", where=where)
            continue
        out[k] = _range(spec[k], f"sweep.{gen}.{k}", where)
    return out


def loop_windows_count(layers: Iterable[int], width: Iterable[int], repeats: Iterable[int]) -> int:
    """How many entries loop_windows makes (before duplicates), without making them."""
    width, r = list(width), len(list(repeats))
    return sum((n - w + 1) * r for n in layers for w in width if n - w + 1 > 0)


def _check_total(total: int, limit: int | None, where: str | None) -> None:
    limit = MAX_VARIANTS if limit is None else limit
    if total > limit:
        raise SpecError(f"the sweep makes {total:,} variants, more than the limit of {limit:,}", where=where,
                        hint=f"narrow an axis, or raise the limit with --max {total} (max_variants= from Python)")


def loop_windows(layers: Iterable[int], width: Iterable[int], repeats: Iterable[int]) -> list[tuple[str, str, int]]:
    """(label, canonical order, blocks) for every window of `width` contiguous layers looped
    `repeats` times inside a flat stack of `layers` layers. Windows wider than the stack are skipped."""
    out = []
    layers = list(layers)
    for n in layers:
        for w in width:
            for start in range(0, n - w + 1):
                end = start + w - 1
                for r in repeats:
                    seq = tuple(range(start)) + tuple(range(start, end + 1)) * r + tuple(range(end + 1, n))
                    text = format_order(seq, len(seq) // 2)
                    win = f"{start}" if w == 1 else f"{start}-{end}"
                    label = f"loop{win}x{r}" if r > 1 else "flat"
                    if len(layers) > 1:
                        label = f"n{n}-{label}"
                    out.append((label, text, n))
    return out


def prelude_loop_coda(prelude: Iterable[int], shared: Iterable[int], loops: Iterable[int],
                      coda: Iterable[int]) -> list[tuple[str, str, int]]:
    """(label, canonical order, blocks) for every `p+s×k+c`: p prelude blocks, s shared blocks run k
    times, c coda blocks."""
    out = []
    for p in prelude:
        for s in shared:
            if s < 1:
                continue
            for k in loops:
                for c in coda:
                    n = p + s + c
                    seq = tuple(range(p)) + tuple(range(p, p + s)) * k + tuple(range(p + s, n))
                    out.append((f"{p}+{s}x{k}+{c}", format_order(seq, len(seq) // 2), n))
    return out


def _short_label(keys: tuple[str, ...]) -> str:
    if len(keys) >= 2 and keys[-1] in GENERIC_KEYS:
        return keys[-2]
    return keys[-1]


def _frag(label: str, value: Any) -> str:
    if isinstance(value, bool):
        v = "on" if value else "off"
    elif isinstance(value, float) and value.is_integer():
        v = str(int(value))
    elif isinstance(value, (dict, list)):
        v = json.dumps(value, sort_keys=True, separators=(",", ":"))
    else:
        v = str(value)
    v = re.sub(r"[^A-Za-z0-9.+-]+", "-", v).strip("-") or "none"
    return f"{label}{v}" if not v[0].isalpha() or label == "" else f"{label}-{v}"


def _parse_sweep(sweep: Any, where: dict[tuple, str], origin: str,
                 limit: int | None = None) -> tuple[list[_Axis], dict, Any, int | None]:
    pos = lambda *k: where.get(("sweep", *k)) or where.get(("sweep",)) or origin
    if not isinstance(sweep, dict) or not sweep:
        raise SpecError("`sweep:` must be a mapping of axes", where=pos(),
                        hint="e.g. sweep: {model.dim: [512, 576], loop_windows: {layers: 11, width: [1, 3], "
                             "repeats: [2, 4]}}")
    items = dict(sweep)
    if isinstance(items.get("axes"), dict):
        items = {**items.pop("axes"), **items}
    items.pop("axes", None)
    orders: list[tuple[str, str, int]] = []
    axes: list[_Axis] = []
    order_pos = None
    for key, val in items.items():
        if key in ("constraints", "rank", "top"):
            continue
        if key == "loop_windows":
            a = _gen_args(val, {"layers": True, "width": True, "repeats": True}, key, pos(key))
            _check_total(len(orders) + loop_windows_count(a["layers"], a["width"], a["repeats"]), limit, pos(key))
            orders += loop_windows(a["layers"], a["width"], a["repeats"])
            order_pos = order_pos if order_pos is not None else len(axes)
            continue
        if key == "prelude_loop_coda":
            a = _gen_args(val, {"prelude": False, "shared": True, "loops": True, "coda": False}, key, pos(key))
            _check_total(len(orders) + len(a.get("prelude", [0])) * len(a["shared"]) * len(a["loops"])
                         * len(a.get("coda", [0])), limit, pos(key))
            orders += prelude_loop_coda(a.get("prelude", [0]), a["shared"], a["loops"], a.get("coda", [0]))
            order_pos = order_pos if order_pos is not None else len(axes)
            continue
        if not isinstance(key, str) or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in key.split(".")):
            raise SpecError(f"sweep axis {key!r} is not a dotted field path", where=pos(key))
        keys = tuple(key.split("."))
        if keys[0] not in Spec.model_fields:
            raise SpecError(f"sweep axis {key!r}: {keys[0]!r} is not a spec field", where=pos(key),
                            hint=f"spec fields: {', '.join(Spec.model_fields)}; generators: loop_windows, "
                                 "prelude_loop_coda")
        values = val if isinstance(val, list) else [val]
        if not values:
            raise SpecError(f"sweep axis {key!r} has no values", where=pos(key))
        label = "share" if keys == ("sharing",) else _short_label(keys)
        axes.append(_Axis(key, [(_frag(label, v), v, [(keys, v)]) for v in values]))
    # make labels of value axes unique (two axes ending in the same key use their full path)
    shorts = [a.entries[0][0] for a in axes]
    for a in axes:
        keys = tuple(a.label.split("."))
        if sum(1 for b in axes if _short_label(tuple(b.label.split("."))) == _short_label(keys)) > 1:
            label = "-".join(keys[1:] if len(keys) > 1 else keys)
            a.entries = [(_frag(label, v), v, e) for _, v, e in a.entries]
    del shorts
    if orders:
        seen: dict[str, int] = {}
        entries = []
        for label, text, n in orders:
            if (text, n) in seen:
                continue
            seen[(text, n)] = 1
            entries.append((label, text, [(("order",), text), (("blocks",), n)]))
        axes.insert(0, _Axis("order", entries))
    constraints = items.get("constraints", {}) or {}
    if not isinstance(constraints, dict):
        raise SpecError("sweep.constraints must be a mapping", where=pos("constraints"))
    top = items.get("top")
    if top is not None and (not isinstance(top, int) or top < 1):
        raise SpecError("sweep.top must be a positive integer", where=pos("top"))
    return axes, constraints, items.get("rank"), top


# ---------------------------------------------------------------- constraints and ranking
def _constraint_checks(constraints: dict, where: str | None) -> list[tuple[str, str, Callable[[dict], bool]]]:
    """(description, metric, predicate on metrics)."""
    checks = []
    for key, val in constraints.items():
        if key == "depth":
            lo, hi = (val if isinstance(val, list) and len(val) == 2 else (None, None))
            if lo is None and isinstance(val, int):
                lo = hi = val
            if lo is None or not all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, hi)):
                raise SpecError("constraints.depth takes [min, max]", where=where)
            checks.append((f"depth in [{lo}, {hi}]", "depth", lambda m, lo=lo, hi=hi: lo <= m["depth"] <= hi))
            continue
        kind, _, metric = key.partition("_")
        if kind not in ("max", "min") or not metric:
            raise SpecError(f"unknown constraint {key!r}", where=where,
                            hint="constraints are depth: [min, max], max_<metric> or min_<metric>, e.g. "
                                 "max_total_bytes: budget, max_flops_per_token: 2e8, min_unique_params: 1e7")
        metric = METRIC_ALIASES.get(metric, metric)
        if val == "budget":
            if metric != "total_bytes":
                raise SpecError(f"`budget` only bounds total_bytes, not {metric}", where=where)
            checks.append(("total_bytes ≤ budget", metric,
                           lambda m: m["total_bytes"] <= m.get("budget", 16_000_000)))
            continue
        if isinstance(val, str):          # YAML 1.1 reads 1.0e7 (no sign in the exponent) as a string
            try:
                val = float(val.replace("_", ""))
            except ValueError:
                pass
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise SpecError(f"constraint {key} takes a finite number, got {str(val)[:40]!r}", where=where)
        if kind == "max":
            checks.append((f"{metric} ≤ {val:,}", metric, lambda m, k=metric, v=val: m[k] <= v))
        else:
            checks.append((f"{metric} ≥ {val:,}", metric, lambda m, k=metric, v=val: m[k] >= v))
    return checks


TIE_BREAK = ("total_bytes", "flops_per_token_train")


def _rank_keys(rank: Any) -> list[tuple[str, bool]]:
    if rank is None:
        return []
    keys = rank if isinstance(rank, list) else [k for k in str(rank).split(",") if k.strip()]
    out = []
    for k in keys:
        k = str(k).strip()
        desc = k.startswith("-")
        k = k.lstrip("+-")
        out.append((METRIC_ALIASES.get(k, k), desc))
    return out


# ---------------------------------------------------------------- the per-variant path
_CTX: dict[str, Any] = {}


def _with(data: dict, keys: tuple[str, ...], value: Any, defaults: dict) -> dict:
    """A copy of data with keys set to value, copying only the dicts along the path; a section that
    the template leaves out is filled from the defaults so that setting one key keeps the others."""
    out = dict(data)
    node, dnode = out, defaults
    for k in keys[:-1]:
        child = node.get(k)
        dchild = dnode.get(k) if isinstance(dnode, dict) else None
        if isinstance(child, dict):
            child = dict(child)
        else:
            child = copy.deepcopy(dchild) if isinstance(dchild, dict) else {}
        node[k] = child
        node, dnode = child, dchild
    node[keys[-1]] = value
    return out


# Spec sections make_plan never reads: variants that differ only here share one Plan skeleton
# (tests/test_variants.py checks that make_plan's output does not change with them).
PLAN_INDEPENDENT = ("quant", "budget", "code", "train", "name", "description")
_PLAN_CACHE_MAX = 4096


class _SharedPlan(Plan):
    """A Plan whose structure-only counts are computed once and shared by every variant with the same
    skeleton (variants that differ only in PLAN_INDEPENDENT sections). Behaves exactly like a Plan."""

    @classmethod
    def of(cls, plan: Plan, spec: Spec, shared: dict) -> "_SharedPlan":
        base = with_settings(plan, spec)
        p = cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(Plan)})
        p.__dict__["_shared"] = shared
        for k in ("unique_params", "by_owner", "param_by_name"):
            if k not in shared:
                shared[k] = getattr(plan, k)
            p.__dict__[k] = shared[k]
        return p

    def unique_by_group(self) -> dict[str, int]:
        c = self._shared.get(("u",))
        if c is None:
            c = self._shared[("u",)] = Plan.unique_by_group(self)
        return dict(c)

    def effective_by_group(self, path: str = "main") -> dict[str, int]:
        c = self._shared.get(("e", path))
        if c is None:
            c = self._shared[("e", path)] = Plan.effective_by_group(self, path)
        return dict(c)


def _evaluate(task: tuple[str, dict, list]) -> tuple[str, Any]:
    """(name, values, edits) → ("ok", (order, metrics, dedup key)) or ("invalid", message)."""
    name, values, edits = task
    ctx = _CTX
    data = ctx["base"]
    for keys, v in edits:
        data = _with(data, keys, v, ctx["defaults"])
    data = {**data, "name": name}
    skey = repr([(k, v) for k, v in edits if k[0] not in PLAN_INDEPENDENT])
    cache = ctx["plans"]
    try:
        spec = Spec.model_validate(data)
        hit = cache.get(skey)
        if hit is None:
            plan = make_plan(spec)
            canon = plan.canonical()
            struct = json.dumps({k: v for k, v in canon.items() if k not in PLAN_INDEPENDENT}, sort_keys=True,
                                separators=(",", ":"))
            shared: dict = {}
            if len(cache) < _PLAN_CACHE_MAX:
                cache[skey] = (plan, struct, shared)
            plan = _SharedPlan.of(plan, spec, shared)
        else:
            skeleton, struct, shared = hit
            plan = _SharedPlan.of(skeleton, spec, shared)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return "invalid", f"{name}: {loc}: {err['msg'].removeprefix('Value error, ')}"
    except SpecError as exc:
        return "invalid", f"{name}: {exc.message}"
    scored = ctx["score"](plan) if ctx["score"] is not None else None
    metrics = _metrics(plan, scored)
    key = struct + "|" + "|".join(getattr(spec, k).model_dump_json() if k in ("quant", "code", "train")
                                  else repr(getattr(spec, k)) for k in ("quant", "budget", "code", "train"))
    return "ok", (plan.canonical_order(), metrics, key)     # kept small: results cross process boundaries


def _bounded_name(name: str, limit: int = 160) -> str:
    """A variant name short enough for a spec name and a file name; a long one keeps a hash of the whole."""
    if len(name) <= limit:
        return name
    import hashlib
    return f"{name[:limit - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _tasks(axes: list[_Axis]) -> Iterable[tuple[str, dict, list]]:
    for combo in itertools.product(*(a.entries for a in axes)):
        name = _bounded_name("_".join(frag for frag, _, _ in combo))
        values = {a.label: v for a, (_, v, _) in zip(axes, combo)}
        edits = [e for _, _, es in combo for e in es]
        yield name, values, edits


def _load_template(template: str | Path | dict, overrides: Iterable[str]) -> tuple[dict, dict, str]:
    if isinstance(template, dict):
        data, where, origin = copy.deepcopy(template), {}, "<template>"
        if "extends" in data:
            raise SpecError("`extends` needs a template loaded from a file", where=origin)
    else:
        p = Path(template)
        origin = str(p)
        data, where = resolve_root(p)
    data = apply_overrides(data, where, list(overrides))
    return data, where, origin


def variants(template: str | Path | dict, *, overrides: Iterable[str] = (), score: Callable[[Plan], Any] | None
             | str = "default", rank: Any = None, top: int | None = None, keep_failed: bool = False,
             workers: int | None = None, progress: bool = False, with_stats: bool = False,
             max_variants: int | None = None, announce: Callable[[int], None] | None = None):
    """Expand, score, filter, deduplicate and rank the variants of a template.

    template: a path to a spec YAML with a `sweep:` section, or the same as a dict.
    score:    Plan → Estimate/dict/object with metric attributes; default recurc.estimate.estimate
              (count_score while the estimator is missing); None scores nothing beyond Plan counts.
    rank, top: override the template's `rank:` / `top:`.
    keep_failed: also return variants that miss a constraint (passed=False, rank=None).
    workers:  processes; default 1 for small sweeps and all cores from PARALLEL_MIN variants.
    max_variants: refuse a sweep of more variants (default MAX_VARIANTS), counted before any is made.
    announce: called with the variant count before they are made (the CLI prints it).
    Returns list[Variant] (ranked, passing first), or (list, stats) with with_stats=True.
    """
    data, where, origin = _load_template(template, overrides)
    sweep = data.pop("sweep", None)
    base_name = data.get("name") or Path(origin).stem
    if sweep is None:
        raise SpecError("the template has no `sweep:` section", where=origin,
                        hint="add e.g. sweep: {model.dim: [512, 576]}; docs/variants.md has the format")
    axes, constraints, t_rank, t_top = _parse_sweep(sweep, where, origin, max_variants)
    rank_keys = _rank_keys(rank if rank is not None else t_rank)
    top = top if top is not None else t_top
    checks = _constraint_checks(constraints, where.get(("sweep", "constraints")) or origin)
    scorer = default_scorer() if score == "default" else score
    # the template's model section alone, with a bad value reported where it is (file or override)
    defaults = validate({**{k: v for k, v in data.items() if k in ("model",)}, "order": "0"}, where,
                        origin).to_data()
    total = 1
    for a in axes:
        total *= len(a.entries)
    _check_total(total, max_variants, where.get(("sweep",)) or origin)
    if announce is not None:
        announce(total)

    # the first variant validates eagerly so a misspelt field is one error, not N invalid variants
    _CTX.update(base=data, defaults=defaults, score=scorer, plans={})
    first = next(iter(_tasks(axes)))
    fdata = data
    for keys, v in first[2]:
        fdata = _with(fdata, keys, v, defaults)
    try:
        Spec.model_validate({**fdata, "name": first[0]})
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "extra_forbidden":
            validate({**fdata, "name": first[0]}, where, origin)   # raises a SpecError with the position

    cores = os.cpu_count() or 1
    if workers is None:
        workers = cores if total >= PARALLEL_MIN else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"--workers takes a positive number of processes, got {workers}", where="<command line>")
    workers = min(workers, cores)       # never more processes than cores (100,000 would fork-bomb)
    results = _run(axes, total, workers, progress)

    stats = {"generated": total, "invalid": 0, "duplicates": 0, "scored": 0, "passed": 0, "returned": 0,
             "invalid_examples": [], "constraints": [c[0] for c in checks],
             "rank": [("-" if d else "") + k for k, d in rank_keys], "scorer": getattr(scorer, "__name__", None)
             if scorer is not None else None}
    seen: set[str] = set()
    out: list[Variant] = []
    for (name, values, edits), (status, payload) in zip(_tasks(axes), results):
        if status == "invalid":
            stats["invalid"] += 1
            if len(stats["invalid_examples"]) < 5:
                stats["invalid_examples"].append(payload)
            continue
        order, metrics, key = payload
        if key in seen:
            stats["duplicates"] += 1
            continue
        seen.add(key)
        stats["scored"] += 1
        failed = []
        for desc, metric, pred in checks:
            if metric not in metrics:
                raise SpecError(f"constraint `{desc}` needs the metric {metric!r}, which the scorer does not give",
                                where=where.get(("sweep", "constraints")) or origin,
                                hint="byte figures come from recurc.estimate; metrics available: "
                                     + ", ".join(sorted(metrics)))
            if not pred(metrics):
                failed.append(desc)
        if failed and not keep_failed:
            continue
        spec_data = data
        for keys, val in edits:
            spec_data = _with(spec_data, keys, val, defaults)
        desc = f"{base_name} variant: " + ", ".join(f"{k}={json.dumps(x)}" for k, x in values.items())
        out.append(Variant(name, values, order, metrics, not failed, failed, None,
                           {**spec_data, "name": name, "description": desc}))
    if stats["scored"] == 0 and stats["invalid"]:
        raise SpecError(f"every variant is invalid; the first: {stats['invalid_examples'][0]}", where=origin)
    for k, _ in rank_keys:
        if out and k not in out[0].metrics:
            raise SpecError(f"cannot rank by {k!r}: no such metric", where=where.get(("sweep", "rank")) or origin,
                            hint="metrics: " + ", ".join(sorted(out[0].metrics)))

    # ties on the rank keys go to the smaller artifact, then the cheaper step, then the name
    tie_keys = [(k, False) for k in TIE_BREAK if all(k != r for r, _ in rank_keys) and out and k in out[0].metrics]
    stats["tie_break"] = [k for k, _ in tie_keys] + ["name"]

    def sort_key(v: Variant):
        ks = [not v.passed]
        for k, desc in [*rank_keys, *tie_keys]:
            x = v.metrics.get(k)
            x = float(x) if isinstance(x, (int, float)) else 0.0
            ks.append(-x if desc else x)
        ks.append(v.name)
        return ks
    out.sort(key=sort_key)
    passed = [v for v in out if v.passed]
    stats["passed"] = len(passed)
    if top is not None:
        keep = set(id(v) for v in passed[:top])
        out = [v for v in out if id(v) in keep or not v.passed]
    for i, v in enumerate(v for v in out if v.passed):
        v.rank = i + 1
    _unique_names(out)
    stats["returned"] = len(out)
    return (out, stats) if with_stats else out


def _unique_names(vs: list[Variant]) -> None:
    count: dict[str, int] = {}
    for v in vs:
        n = count.get(v.name, 0) + 1
        count[v.name] = n
        if n > 1:
            v.name = f"{v.name}-{n}"
            v.spec = {**v.spec, "name": v.name}


def _run(axes: list[_Axis], total: int, workers: int, progress: bool) -> list:
    tasks = _tasks(axes)
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        bar = Progress(TextColumn("variants"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       transient=True)
        bar.start()
        tid = bar.add_task("variants", total=total)
    results = []
    try:
        if workers > 1:
            import multiprocessing as mp
            ctx = mp.get_context("fork")
            with ctx.Pool(workers) as pool:
                for i, r in enumerate(pool.imap(_evaluate, tasks, chunksize=64)):
                    results.append(r)
                    if bar is not None and i % 128 == 127:
                        bar.update(tid, completed=i + 1)
        else:
            for i, t in enumerate(tasks):
                results.append(_evaluate(t))
                if bar is not None and i % 128 == 127:
                    bar.update(tid, completed=i + 1)
    finally:
        if bar is not None:
            bar.update(tid, completed=total)
            bar.stop()
    return results


# ---------------------------------------------------------------- outputs
def spec_yaml(v: Variant) -> str:
    import yaml
    head = (f"# recurc variant {v.name} (rank {v.rank})\n# " +
            ", ".join(f"{k}={json.dumps(x)}" for k, x in v.values.items()) + "\n")
    data = {"name": v.name, **{k: x for k, x in v.spec.items() if k != "name"}}
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def write_specs(vs: list[Variant], folder: str | Path, *, include_failed: bool = False) -> list[Path]:
    """One `<name>.yaml` per variant (each written atomically); returns the paths."""
    folder = Path(folder)
    paths = []
    used: set[str] = set()
    for v in vs:
        if not v.passed and not include_failed:
            continue
        stem = base = safe_component(v.name)       # a name never leaves the folder
        n = 1
        while stem in used:
            n += 1
            stem = f"{base}-{n}"
        used.add(stem)
        p = folder / f"{stem}.yaml"
        atomic_write(p, spec_yaml(v))
        paths.append(p)
    return paths


def write_json(vs: list[Variant], path: str | Path, stats: dict | None = None) -> None:
    atomic_write(Path(path), json.dumps({"stats": stats or {}, "variants": [v.to_dict() for v in vs]},
                                         indent=2, default=str))


def print_table(vs: list[Variant], stats: dict | None = None, limit: int = 40, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    cols = ["depth", "blocks", "unique_params", "effective_params", "flops_per_token_train", "total_bytes",
            "headroom"]
    present = [c for c in cols if any(c in v.metrics for v in vs)]
    t = Table(show_edge=False, title=f"{sum(v.passed for v in vs)} variants" if stats is None else
              f"{stats['passed']} of {stats['generated']} variants pass "
              f"({stats['invalid']} invalid, {stats['duplicates']} duplicates)")
    t.add_column("#", justify="right")
    t.add_column("name")
    t.add_column("order")
    for c in present:
        t.add_column(c.replace("_per_token_train", "/tok").replace("_params", " params"), justify="right")
    # variants equal on every rank and tie-break metric share a mark: "3=" is tied with a neighbour
    keys = [k.lstrip("+-") for k in (stats or {}).get("rank", [])] + list((stats or {}).get("tie_break", []))
    tie = [tuple(v.metrics.get(k) for k in keys if k != "name") for v in vs]
    for i, v in enumerate(vs[:limit]):
        tied = bool(keys) and v.passed and any(0 <= j < len(vs) and vs[j].passed and tie[j] == tie[i]
                                               for j in (i - 1, i + 1))
        row = [f"{v.rank}{'=' if tied else ''}" if v.rank else "✗", v.name, v.order]
        for c in present:
            x = v.metrics.get(c)
            row.append(f"{x:,.3g}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else "")
        t.add_row(*row, style=None if v.passed else "dim")
    con.print(t)
    if len(vs) > limit:
        con.print(f"… {len(vs) - limit} more (see --json or the written specs)")
    if stats and stats.get("constraints"):
        con.print("constraints: " + "; ".join(stats["constraints"]))
    if stats and stats.get("rank"):
        con.print("ranked by " + ", ".join(stats["rank"]) + "; ties by " + ", ".join(stats.get("tie_break", ["name"]))
                  + " (n= : equal on all of them but the name)")

