"""Plain-data views of a Plan for `recurc show` (tables for people, JSON for scripts)."""
from __future__ import annotations

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
        if layer.attn.kind == "pass":
            feats.append("own-attn")
        rows.append({"virtual": layer.index, "block": plan.blocks[layer.block].name, "pass": layer.pass_index,
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
        "phases": [{"from": ph.start, "path": ph.path} for ph in plan.phases],
        "eval_path": plan.eval_path,
        "layers": layer_rows(plan),
        "params": {
            "unique": plan.unique_params,
            "effective": plan.effective_params(),
            "by_group": {g: {"unique": unique[g], "effective": effective[g]} for g in GROUPS},
        },
    }


def print_show(plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    d = show_data(plan)
    con = Console()
    con.print(f"[bold]{d['name']}[/]  order [cyan]{d['order']}[/]  "
              f"{d['physical_blocks']} physical → {d['virtual_layers']} virtual layers, "
              f"encoder {d['encoder_layers']}, {d['skips']} skips")
    if len(d["paths"]) > 1 or d["eval_path"] != "main":
        sched = ", ".join(f"from {ph['from']:.0%}: {d['paths'][ph['path']]['order']}" for ph in d["phases"])
        con.print(f"schedule: {sched}; eval: {d['paths'][d['eval_path']]['order']}")
    t = Table(title="virtual layers", show_edge=False)
    for col in ("virtual", "block", "pass", "side", "features"):
        t.add_column(col, justify="right" if col in ("virtual", "pass") else "left")
    for r in d["layers"]:
        t.add_row(str(r["virtual"]), r["block"], f"{r['pass'] + 1}/{r['passes']}", r["side"], " ".join(r["features"]))
    con.print(t)
    p = Table(title="parameters", show_edge=False)
    for col in ("group", "unique", "effective"):
        p.add_column(col, justify="left" if col == "group" else "right")
    for g, v in d["params"]["by_group"].items():
        p.add_row(g, f"{v['unique']:,}", f"{v['effective']:,}")
    p.add_row("[bold]total[/]", f"[bold]{d['params']['unique']:,}[/]", f"[bold]{d['params']['effective']:,}[/]")
    con.print(p)
