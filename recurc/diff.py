"""Semantic diff of two Plans: what runs, what is shared, what is stored, what it costs.

Two specs are equal when their Plans' canonical() data are equal, so spelling (`(4,5)x2` vs
`4,5,4,5`, key order, name, description) never shows up as a difference. The execution orders
are aligned virtual layer by virtual layer (difflib on the block sequences), so a loop that gains
a pass shows as inserted layers that are extra passes of blocks already there.

    from recurc.diff import diff
    d = diff("specs/baseline.yaml", "specs/loop45x2.yaml")   # Plans, Specs or paths
    d.equal, d.to_dict()
"""
from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .plan import Plan, make_plan
from .quantspec import GROUPS
from .spec import Spec, load_spec

# canonical() sections → the heading a change is reported under
SECTIONS = {
    "order": "order", "blocks": "blocks",
    "sharing": "sharing & per-pass", "per_pass": "sharing & per-pass",
    "schedule": "schedule", "features": "features", "skips": "features",
    "model": "model", "quant": "quantization & compression",
    "budget": "artifact", "code": "artifact", "train": "training",
    "named_blocks": "blocks", "components": "components",
    "paths": "execution paths", "phases": "schedule", "eval_path": "schedule", "params": "tensors",
}


@dataclass
class LayerOp:
    """One aligned stretch of the two main orders (virtual indices are half-open ranges)."""
    op: str                      # "same", "inserted", "removed", "replaced"
    a: tuple[int, int]
    b: tuple[int, int]
    a_blocks: list[str]
    b_blocks: list[str]
    note: str = ""


@dataclass
class Change:
    path: str                    # dotted path into canonical() data, e.g. "quant.groups.mlp.bits"
    a: Any
    b: Any
    section: str


@dataclass
class PlanDiff:
    a_name: str
    b_name: str
    equal: bool
    a_order: str
    b_order: str
    alignment: list[LayerOp]
    depth: tuple[int, int]
    encoder: tuple[int, int]
    skips: tuple[int, int]
    blocks: tuple[int, int]
    paths: dict[str, tuple[str | None, str | None]]      # schedule paths whose order differs
    changes: list[Change]
    unique_by_group: dict[str, tuple[int, int]]
    effective_by_group: dict[str, tuple[int, int]]
    estimate: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # flops, bytes (when available)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alignment"] = [asdict(o) for o in self.alignment]
        d["changes"] = [asdict(c) for c in self.changes]
        for key in ("unique_by_group", "effective_by_group"):
            d[key] = {g: {"a": a, "b": b, "delta": b - a} for g, (a, b) in getattr(self, key).items()}
        d["estimate"] = {k: {"a": a, "b": b, "delta": _delta(a, b)} for k, (a, b) in self.estimate.items()}
        for key in ("depth", "encoder", "skips", "blocks"):
            a, b = getattr(self, key)
            d[key] = {"a": a, "b": b, "delta": b - a}
        d["paths"] = {k: {"a": a, "b": b} for k, (a, b) in self.paths.items()}
        return d

    def by_section(self) -> dict[str, list[Change]]:
        out: dict[str, list[Change]] = {}
        for c in self.changes:
            out.setdefault(c.section, []).append(c)
        return out


def _delta(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return b - a
    return None


def _as_plan(x: Plan | Spec | str | Path) -> Plan:
    if isinstance(x, Plan):
        return x
    if isinstance(x, Spec):
        return make_plan(x)
    return make_plan(load_spec(x))


def _record_key(items: list) -> str | None:
    """The field that identifies each record of a list of records (tensors and blocks by name,
    virtual layers by index), when every record has it and no two share it."""
    if not items or not all(isinstance(x, dict) for x in items):
        return None
    for key in ("name", "index"):
        values = [x.get(key) for x in items]
        if None not in values and len(set(map(str, values))) == len(values):
            return key
    return None


def deep_diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, a value, b value) for every leaf that differs; missing keys read as None.
    Lists of records (params, blocks, layers) are matched by their name or index, so one changed
    tensor reads `params[blocks.0.mlp.fc.weight].shape`, not the whole list."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += deep_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and a != b:
        key = _record_key(a)
        if key is not None and key == _record_key(b):
            ka, kb = {str(x[key]): x for x in a}, {str(x[key]): x for x in b}
            out = []
            for k in list(ka) + [k for k in kb if k not in ka]:
                if k in ka and k in kb:
                    out += deep_diff(ka[k], kb[k], f"{prefix}[{k}]")
                elif ka.get(k) != kb.get(k):
                    out.append((f"{prefix}[{k}]", ka.get(k), kb.get(k)))
            return out
    if a != b:
        return [(prefix, a, b)]
    return []


def _align(a: Plan, b: Plan) -> list[LayerOp]:
    sa = [a.blocks[l.block].name for l in a.layers]
    sb = [b.blocks[l.block].name for l in b.layers]
    # element-wise alignment: ("same", i, j), ("inserted", None, j), ("removed", i, None); replaced stretches
    # stay whole
    elems: list[list] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, sa, sb, autojunk=False).get_opcodes():
        if tag == "equal":
            elems += [["same", i1 + k, j1 + k] for k in range(i2 - i1)]
        elif tag == "insert":
            elems += [["inserted", None, j] for j in range(j1, j2)]
        elif tag == "delete":
            elems += [["removed", i, None] for i in range(i1, i2)]
        else:
            elems.append(["replaced", (i1, i2), (j1, j2)])
    # slide each gap as far right as it goes, so that a loop that gains a pass shows its *later*
    # passes as the inserted ones (0..5,6.. vs 0..5,4,5,6..: the second 4,5 are new, not the first)
    changed = True
    while changed:
        changed = False
        k = 0
        while k < len(elems):
            tag = elems[k][0]
            if tag not in ("inserted", "removed"):
                k += 1
                continue
            end = k
            while end + 1 < len(elems) and elems[end + 1][0] == tag:
                end += 1
            nxt = end + 1
            if nxt < len(elems) and elems[nxt][0] == "same":
                i, j = elems[nxt][1], elems[nxt][2]
                if tag == "inserted" and sb[elems[k][2]] == sb[j]:
                    run = [e[2] for e in elems[k:end + 1]]
                    elems[k:nxt + 1] = [["same", i, run[0]]] + [["inserted", None, x] for x in run[1:] + [j]]
                    changed = True
                elif tag == "removed" and sa[elems[k][1]] == sa[i]:
                    run = [e[1] for e in elems[k:end + 1]]
                    elems[k:nxt + 1] = [["same", run[0], j]] + [["removed", x, None] for x in run[1:] + [i]]
                    changed = True
            k = end + 1
    ops: list[LayerOp] = []
    ia = ib = 0
    for e in elems:
        tag = e[0]
        if tag == "replaced":
            (i1, i2), (j1, j2) = e[1], e[2]
            ops.append(LayerOp("replaced", (i1, i2), (j1, j2), sa[i1:i2], sb[j1:j2]))
            ia, ib = i2, j2
            continue
        di, dj = (1 if e[1] is not None else 0), (1 if e[2] is not None else 0)
        if ops and ops[-1].op == tag:
            o = ops[-1]
            o.a, o.b = (o.a[0], o.a[1] + di), (o.b[0], o.b[1] + dj)
        else:
            ops.append(LayerOp(tag, (ia, ia + di), (ib, ib + dj), [], []))
        ia, ib = ia + di, ib + dj
    for o in ops:
        o.a_blocks, o.b_blocks = sa[o.a[0]:o.a[1]], sb[o.b[0]:o.b[1]]
        if o.op == "inserted":
            o.note = _pass_note(b, *o.b)
        elif o.op == "removed":
            o.note = _pass_note(a, *o.a)
    return ops


def _pass_note(p: Plan, lo: int, hi: int) -> str:
    """Describe layers lo..hi-1 of one plan: extra passes of blocks that also run elsewhere?"""
    parts = []
    for layer in p.layers[lo:hi]:
        name = p.blocks[layer.block].name
        if layer.passes > 1:
            parts.append(f"{name}: pass {layer.pass_index + 1} of {layer.passes}")
        else:
            parts.append(f"{name}: only pass")
    repeats = all(l.passes > 1 for l in p.layers[lo:hi])
    head = "repeated blocks (extra passes)" if repeats else "layers"
    return f"{head}: " + ", ".join(parts)


def _estimate_fn() -> Callable | None:
    try:
        from .estimate import estimate  # type: ignore[attr-defined]
    except ImportError:
        return None
    return estimate


def _estimates(a: Plan, b: Plan) -> dict[str, tuple[Any, Any]]:
    est = _estimate_fn()
    if est is None:
        return {}
    try:
        try:
            ea, eb = est(a, suggest=False), est(b, suggest=False)
        except TypeError:
            ea, eb = est(a), est(b)
    except Exception:  # the estimator is optional here; a diff must still print
        return {}
    out: dict[str, tuple[Any, Any]] = {}
    for key in ("flops_per_token_train", "flops_per_token_eval", "model_bytes", "code_bytes", "total_bytes",
                "headroom", "fits"):
        if hasattr(ea, key):
            out[key] = (getattr(ea, key), getattr(eb, key))
    ga, gb = getattr(ea, "bytes_by_group", {}) or {}, getattr(eb, "bytes_by_group", {}) or {}
    for g in list(ga) + [g for g in gb if g not in ga]:
        out[f"bytes.{g}"] = (ga.get(g, 0), gb.get(g, 0))
    return out


def _size_model_changes(pa: Plan, pb: Plan) -> list[Change]:
    """What the size model assumes is no part of a Plan's identity (it changes neither the model nor
    its artifact), but two specs that predict differently differ: the stated profile, the profile
    it resolves to (`auto` follows the training budget) and the anchor."""
    from .estimate import resolve_profile
    out = [Change(f"quant.{k}", getattr(pa.quant, k), getattr(pb.quant, k), "size model")
           for k in ("weights", "anchor") if getattr(pa.quant, k) != getattr(pb.quant, k)]
    ra, rb = resolve_profile(pa)[0].name, resolve_profile(pb)[0].name
    if ra != rb:
        out.append(Change("size model profile", ra, rb, "size model"))
    return out


def diff(a: Plan | Spec | str | Path, b: Plan | Spec | str | Path, *, estimates: bool = True) -> PlanDiff:
    """Semantic difference of two Plans (or Specs, or spec paths)."""
    pa, pb = _as_plan(a), _as_plan(b)
    ca, cb = pa.canonical(), pb.canonical()
    changes = [Change(p, x, y, SECTIONS.get(re.split(r"[.\[]", p)[0], "other")) for p, x, y in deep_diff(ca, cb)]
    size_changes = _size_model_changes(pa, pb)
    paths = {}
    for name in list(pa.paths) + [n for n in pb.paths if n not in pa.paths]:
        oa = pa.canonical_order(name) if name in pa.paths else None
        ob = pb.canonical_order(name) if name in pb.paths else None
        if oa != ob:
            paths[name] = (oa, ob)
    ua, ub = pa.unique_by_group(), pb.unique_by_group()
    ea, eb = pa.effective_by_group(), pb.effective_by_group()
    return PlanDiff(
        a_name=pa.name, b_name=pb.name, equal=ca == cb and not size_changes,
        a_order=pa.canonical_order(), b_order=pb.canonical_order(),
        alignment=_align(pa, pb),
        depth=(pa.main.depth, pb.main.depth), encoder=(pa.main.split, pb.main.split),
        skips=(pa.main.n_skips, pb.main.n_skips), blocks=(len(pa.blocks), len(pb.blocks)),
        paths=paths, changes=changes + size_changes,
        unique_by_group={g: (ua[g], ub[g]) for g in GROUPS} | {"total": (sum(ua.values()), sum(ub.values()))},
        effective_by_group={g: (ea[g], eb[g]) for g in GROUPS} | {"total": (sum(ea.values()), sum(eb.values()))},
        estimate=_estimates(pa, pb) if estimates else {},
    )


# ---------------------------------------------------------------- text for people
def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "—"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.4e}"
    return str(v)


def _signed(a: Any, b: Any) -> str:
    d = _delta(a, b)
    if d is None:
        return ""
    if isinstance(d, int):
        return f"{d:+,}"
    return f"{d:+,.4g}" if abs(d) < 1e6 else f"{d:+,.4e}"


_SHORT = 60      # a value longer than this prints as a summary ("12 fields", "9 items")
_SAME_FIELD = 1  # one field changing in several records prints as one row


def _cell(v: Any) -> str:
    text = _fmt(v)
    if len(text) <= _SHORT:
        return text
    if isinstance(v, dict):
        label = v.get("name", v.get("index"))
        return f"{label} ({len(v)} fields)" if label is not None else f"{{{len(v)} fields}}"
    if isinstance(v, list):
        return f"[{len(v)} items]"
    return text[:_SHORT - 1] + "…"


def _grouped_rows(items: list[Change]) -> list[tuple[str, str, str]]:
    """Table rows for people: the same field changing in many records (every tensor's shape after
    a width change) reads as one row with a count and the first example; the JSON keeps them all."""
    groups: dict[str, list[Change]] = {}
    for c in items:
        groups.setdefault(re.sub(r"\[[^\]]*\]", "[*]", c.path), []).append(c)
    rows = []
    for pattern, changes in groups.items():
        if len(changes) <= _SAME_FIELD:
            rows += [(c.path, _cell(c.a), _cell(c.b)) for c in changes]
            continue
        first = changes[0]
        example = re.findall(r"\[([^\]]*)\]", first.path)[-1]
        if pattern.endswith("[*]"):           # whole records: say how many each side lacks
            only_a, only_b = sum(c.b is None for c in changes), sum(c.a is None for c in changes)
            sides = ", ".join(x for x in (f"{only_a} only in a" * bool(only_a), f"{only_b} only in b" * bool(only_b)) if x)
            label = f"{pattern} ({len(changes)}: {sides}; e.g. {example})"
        else:
            label = f"{pattern} ({len(changes)} records, e.g. {example})"
        rows.append((label, _cell(first.a), _cell(first.b)))
    return rows


def print_diff(d: PlanDiff, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console()
    if d.equal:
        con.print(f"[bold green]equal[/]: {d.a_name} and {d.b_name} compile to the same Plan "
                  f"(order {d.a_order})")
        return
    con.print(f"[bold]{d.a_name}[/] → [bold]{d.b_name}[/]")
    con.print(f"order  [red]{d.a_order}[/]  →  [green]{d.b_order}[/]")
    con.print(f"depth {d.depth[0]} → {d.depth[1]} virtual layers, {d.blocks[0]} → {d.blocks[1]} physical "
              f"blocks, encoder {d.encoder[0]} → {d.encoder[1]}, skips {d.skips[0]} → {d.skips[1]}")
    if any(o.op != "same" for o in d.alignment):
        t = Table(title="execution order, aligned", show_edge=False)
        for col in ("", "a virtual", "a blocks", "b virtual", "b blocks", "note"):
            t.add_column(col)
        style = {"same": "dim", "inserted": "green", "removed": "red", "replaced": "yellow"}
        mark = {"same": " ", "inserted": "+", "removed": "-", "replaced": "~"}
        for o in d.alignment:
            rng = lambda r: f"{r[0]}..{r[1] - 1}" if r[1] - r[0] > 1 else (str(r[0]) if r[1] > r[0] else "")
            t.add_row(mark[o.op], rng(o.a), ",".join(o.a_blocks), rng(o.b), ",".join(o.b_blocks), o.note,
                      style=style[o.op])
        con.print(t)
    if d.paths:
        for name, (a, b) in d.paths.items():
            if name != "main":
                con.print(f"path [bold]{name}[/]: {a or '—'} → {b or '—'}")
    sections = d.by_section()
    for section, items in sections.items():
        if section == "order":
            continue
        t = Table(title=section, show_edge=False)
        for col in ("field", "a", "b"):
            t.add_column(col)
        for row in _grouped_rows(items):
            t.add_row(*map(escape, row))   # tensor names in brackets are not rich markup
        con.print(t)
    t = Table(title="parameters", show_edge=False)
    for col in ("group", "unique a", "unique b", "Δ", "effective a", "effective b", "Δ"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for g, (ua, ub) in d.unique_by_group.items():
        ea, eb = d.effective_by_group[g]
        if (ua, ub, ea, eb) == (0, 0, 0, 0):
            continue
        t.add_row(g, _fmt(ua), _fmt(ub), _signed(ua, ub), _fmt(ea), _fmt(eb), _signed(ea, eb))
    con.print(t)
    if d.estimate:
        t = Table(title="estimate", show_edge=False)
        for col in ("", "a", "b", "Δ"):
            t.add_column(col, justify="left" if not col else "right")
        for k, (a, b) in d.estimate.items():
            t.add_row(k, _fmt(a), _fmt(b), _signed(a, b))
        con.print(t)

