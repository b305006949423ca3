"""Plain-data views of a Plan for `recurc show` (tables for people, JSON for scripts)."""
from __future__ import annotations

import sys

from .plan import Plan
from .quantspec import GROUPS


def layer_rows(plan: Plan, path: str = "main") -> list[dict]:
    rows = []
    for layer in plan.paths[path].layers:
        feats = [name for name, on in (("parallel", layer.parallel), ("xsa", layer.xsa)) if on]
        if layer.skip_slot is not None:
            feats.append(f"skip<-v{layer.skip_from}")
        if layer.per_pass:
            feats.append("per-pass")
        if layer.mlp.kind == "pass":
            feats.append("own-mlp")
        if layer.attn is not None and layer.attn.kind == "pass":
            feats.append("own-attn")
        # passes count from 1, as the table prints them ("pass 1/2")
        rows.append({"virtual": layer.index, "block": plan.blocks[layer.block].name, "pass": layer.pass_index + 1,
                     "passes": layer.passes, "side": layer.side, "features": feats})
    return rows


def show_data(plan: Plan) -> dict:
    unique = plan.unique_by_group()
    effective = plan.effective_by_group()
    return {
        "name": plan.name,
        "order": plan.canonical_order(),
        "physical_blocks": len(plan.blocks),
        "virtual_layers": len(plan.layers),
        "encoder_layers": plan.main.split,
        "skips": plan.main.n_skips,
        "paths": {name: {"order": plan.canonical_order(name), "depth": p.depth} for name, p in plan.paths.items()},
        "phases": [{"from": ph.start, "path": ph.path, **({"choices": dict(ph.choices)} if ph.choices else {})}
                   for ph in plan.phases],
        "eval_path": plan.eval_path,
        "layers": layer_rows(plan),
        "params": {
            "unique": plan.unique_params,
            "effective": plan.effective_params(),
            "by_group": {g: {"unique": unique[g], "effective": effective[g]} for g in GROUPS},
        },
    }


def console():
    """Where tables go. In a terminal, a rich Console whose tables never cut numbers (text
    columns fold instead); piped or redirected, plain aligned columns with no box lines, colour,
    width limit or trailing blanks, so `| grep` and `| awk` see whole values."""
    return _Out(sys.stdout.isatty())


class _Out:
    def __init__(self, terminal: bool) -> None:
        from rich.console import Console
        self.is_terminal = terminal
        self._con = Console(highlight=False) if terminal else None

    def print(self, *objects, **kwargs) -> None:
        import io

        from rich.console import Console
        from rich.measure import Measurement
        from rich.table import Table
        for o in objects:
            if isinstance(o, Table):
                _fit(o, terminal=self.is_terminal)
        if self._con is not None:
            con = self._con
            for o in objects:
                need = Measurement.get(con, con.options.update_width(100_000), o).maximum \
                    if isinstance(o, Table) else 0
                if need > con.width:
                    # wider than the terminal: print it whole and let the terminal wrap its lines
                    # rather than cut cells to "38,9…"
                    con = Console(highlight=False, width=need, force_terminal=True)
            con.print(*objects, **kwargs)
            return
        buf = io.StringIO()
        Console(file=buf, width=100_000, no_color=True, highlight=False, emoji=False).print(*objects, **kwargs)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines()))


def _fit(table, terminal: bool) -> None:
    """Right-aligned (numeric) columns keep their width; the others wrap or fold."""
    from rich import box
    from rich.text import Text
    for col in table.columns:
        if col.justify == "right":
            col.no_wrap = True
            col.min_width = max(Text.from_markup(c).cell_len if isinstance(c, str) else len(str(c))
                                for c in [*col._cells, str(col.header)])
        else:
            col.overflow = "fold"
    if not terminal:
        table.box = box.SIMPLE_HEAD if table.show_header else None
        table.title_justify = "left"


def print_show(plan: Plan) -> None:
    from rich.markup import escape
    from rich.table import Table

    d = show_data(plan)
    con = console()
    con.print(f"[bold]{escape(d['name'])}[/]  order [cyan]{escape(d['order'])}[/]")
    con.print(f"{d['physical_blocks']} physical blocks → {d['virtual_layers']} virtual layers, "
              f"encoder {d['encoder_layers']}, {d['skips']} skips")
    if len(d["paths"]) > 1 or d["eval_path"] != "main":
        sched = ", ".join(f"from {ph['from']:.0%}: " + (
            "one drawn each step of " + " | ".join(f"{d['paths'][n]['order']} ({p:.0%})" for n, p in ph["choices"].items())
            if "choices" in ph else d['paths'][ph['path']]['order']) for ph in d["phases"])
        con.print(escape(f"schedule: {sched}; eval: {d['paths'][d['eval_path']]['order']}"))
    t = Table(title="virtual layers", show_edge=False)
    for col in ("virtual", "block", "pass", "side", "features"):
        t.add_column(col, justify="right" if col in ("virtual", "pass") else "left")
    for r in d["layers"]:
        t.add_row(str(r["virtual"]), escape(r["block"]), f"{r['pass']}/{r['passes']}", r["side"],
                  " ".join(r["features"]))
    con.print(t)
    p = Table(title="parameters", show_edge=False)
    for col in ("group", "unique", "effective"):
        p.add_column(col, justify="left" if col == "group" else "right")
    for g, v in d["params"]["by_group"].items():
        p.add_row(g, f"{v['unique']:,}", f"{v['effective']:,}")
    p.add_row("[bold]total[/]", f"[bold]{d['params']['unique']:,}[/]", f"[bold]{d['params']['effective']:,}[/]")
    con.print(p)


# ---------------------------------------------------------------- `recurc build`
def build_summary(plan: Plan, model, device: str) -> dict:
    """What a person checks after building: where, how many tensors and parameters (against the
    Plan), the top-level modules, and each execution path's depth."""
    top: dict[str, dict] = {}
    for name, t in model.state_dict().items():
        head = name.split(".")[0]
        entry = top.setdefault(head, {"tensors": 0, "params": 0})
        entry["tensors"] += 1
        entry["params"] += t.numel()
    total = sum(t.numel() for t in model.parameters())
    return {"name": plan.name, "module": type(model).__name__, "device": str(device),
            "tensors": len(model.state_dict()), "params": total, "plan_params": plan.unique_params,
            "modules": top,
            "paths": {name: len(runs) for name, runs in model.runs.items()}}


def print_build(s: dict) -> None:
    from rich.table import Table
    con = console()
    same = "equal to the Plan" if s["params"] == s["plan_params"] else f"Plan: {s['plan_params']:,}"
    con.print(f"[bold]{s['name']}[/]: {s['module']} on {s['device']}, {s['tensors']} tensors, "
              f"{s['params']:,} parameters ({same})")
    t = Table(show_edge=False)
    for col, just in (("module", "left"), ("tensors", "right"), ("parameters", "right")):
        t.add_column(col, justify=just)
    for name, v in s["modules"].items():
        t.add_row(name, str(v["tensors"]), f"{v['params']:,}")
    con.print(t)
    con.print("paths: " + ", ".join(f"{n} {d} virtual layers" for n, d in s["paths"].items())
              + "   (--repr prints the full torch module)")
