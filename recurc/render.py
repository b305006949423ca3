"""Pictures of a Plan's virtual-layer graph: Graphviz DOT and Mermaid text, PNG/SVG drawn with matplotlib.

Everything is read off `build_graph(plan)` (the networkx DiGraph of plan.py) and the Plan's paths:
physical blocks are shared nodes on the top row, each with an edge to every virtual layer that
runs it; the virtual layers run left to right in execution order, grouped into encoder and
decoder clusters; U-Net skips arc between them; parallel-residual, XSA and per-pass layers are
marked; the schedule's paths are listed under the picture.
"""
from __future__ import annotations

import html
from pathlib import Path

from .atomic import atomic_write
from .plan import Plan, build_graph

# colour-blind-safe pastel fills (one per physical block, cycling) and their border colours
FILLS = ["#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#fb9a99", "#ffff99", "#8dd3c7", "#bebada",
         "#fccde5", "#d9d9d9", "#ccebc5", "#ffed6f"]
LINES = ["#1f78b4", "#33a02c", "#ff7f00", "#6a3d9a", "#e31a1c", "#b15928", "#1b9e77", "#7570b3",
         "#e7298a", "#666666", "#4daf4a", "#d95f02"]
SKIP = "#2b5fad"
CROSS = "#d95f02"


def _layer_info(plan: Plan, path: str = "main") -> list[dict]:
    g = build_graph(plan) if path == "main" else None
    out = []
    for layer in plan.paths[path].layers:
        node = g.nodes[f"v{layer.index}"] if g is not None else {}
        marks = []
        if node.get("parallel", layer.parallel):
            marks.append("∥")
        if node.get("xsa", layer.xsa):
            marks.append("xsa")
        if layer.per_pass:
            marks.append("pp")
        own = []
        if layer.attn is not None and layer.attn.kind == "pass":
            own.append("attn")
        if layer.mlp.kind == "pass":
            own.append("mlp")
        if layer.scalars.kind == "pass":
            own.append("scalars")
        out.append({"id": f"v{layer.index}", "index": layer.index, "block": plan.blocks[layer.block].name,
                    "block_index": layer.block, "pass": layer.pass_index + 1, "passes": layer.passes,
                    "side": layer.side, "marks": marks, "own": own, "skip_from": layer.skip_from,
                    "skip_slot": layer.skip_slot})
    return out


def _schedule_lines(plan: Plan) -> list[str]:
    lines: list[str] = []
    phases = list(plan.phases)
    if len(phases) == 1 and plan.eval_path == phases[0].path:
        return lines
    for i, ph in enumerate(phases):
        end = phases[i + 1].start if i + 1 < len(phases) else 1.0
        lines.append(f"{ph.path} ({ph.start:.0%}–{end:.0%} of training): {plan.canonical_order(ph.path)}")
    if plan.eval_path != "main" or len(phases) > 1:
        lines.append(f"evaluation: {plan.canonical_order(plan.eval_path)}")
    return lines


def _title(plan: Plan) -> str:
    m = plan.model
    return (f"{plan.name}: {len(plan.blocks)} physical blocks → {plan.main.depth} virtual layers, "
            f"dim {m.dim}, order {plan.canonical_order()}")


def _legend_items(plan: Plan, layers: list[dict]) -> list[str]:
    items = []
    if any("∥" in l["marks"] for l in layers):
        items.append("∥ parallel residual")
    if any("xsa" in l["marks"] for l in layers):
        items.append("xsa exclusive self-attention")
    if any("pp" in l["marks"] for l in layers):
        items.append("pp per-pass parameters (double border)")
    if any(l["own"] for l in layers):
        items.append("own: sub-modules owned by the pass")
    if plan.main.n_skips:
        items.append(f"blue dashed: {plan.main.n_skips} U-Net skips ({plan.skips})")
    if any(d.get("kind") == "cross_repeat" for _, _, d in build_graph(plan).edges(data=True)):
        items.append("orange: cross-repeat scale")
    return items


# ---------------------------------------------------------------- DOT
def to_dot(plan: Plan) -> str:
    """A U-shaped picture: physical blocks on top, the encoder running left to right below them, the
    decoder running back right to left underneath, so that each U-Net skip is a short vertical edge
    (the last encoder layer feeds the first decoder layer). Ranks are columns (rankdir=LR)."""
    g = build_graph(plan)
    layers = _layer_info(plan)
    e = lambda s: html.escape(str(s), quote=True)
    q = lambda s: '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'
    tied = plan.model.tied_embeddings
    legend = _legend_items(plan, layers)
    foot = [*_schedule_lines(plan), *(["  ·  ".join(legend)] if legend else [])]
    label = f'<<b>{e(_title(plan))}</b>' + "".join(f'<br/><font point-size="10">{e(x)}</font>' for x in foot) + ">"
    out = ["digraph recurc {",
           f'  graph [rankdir=LR, fontname="Helvetica", fontsize=13, labelloc=b, label={label}, '
           'nodesep=0.22, ranksep=0.25, newrank=true, pad=0.2, splines=true];',
           '  node [fontname="Helvetica", fontsize=11, shape=box, style="rounded,filled", penwidth=1.2, '
           'margin="0.08,0.04", height=0.4, width=0.75];',
           '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.6];']
    enc = [l for l in layers if l["side"] == "encoder"]
    dec = [l for l in layers if l["side"] == "decoder"]
    # column of every virtual layer: encoder i at i, decoder j under encoder split-1-j
    split = len(enc)
    shift = max(0, len(dec) - split)
    col = {l["id"]: l["index"] + shift for l in enc}
    col.update({l["id"]: split - 1 - (l["index"] - split) + shift for l in dec})
    by_col: dict[int, list[str]] = {}
    for l in layers:
        by_col.setdefault(col[l["id"]], []).append(l["id"])

    # physical blocks: one shared node each, in the column of its first pass
    first: dict[int, str] = {}
    for l in layers:
        first.setdefault(l["block_index"], l["id"])
    for side, members, fill in (("decoder", dec, "#fbf5ef"), ("encoder", enc, "#f3f6fb")):
        if not members:
            continue
        arrow = "→" if side == "encoder" else "←"
        out.append(f"  subgraph cluster_{side} {{")
        out.append(f'    label="{side} {arrow} ({len(members)} virtual layers)"; labeljust={"l" if side == "encoder" else "r"}; '
                   f'style="rounded,filled"; fillcolor="{fill}"; color="#bbbbbb"; fontsize=11;')
        for l in members:
            i = l["block_index"]
            sub = f"pass {l['pass']}/{l['passes']}" if l["passes"] > 1 else "&#160;"
            extra = " · ".join(x for x in (" ".join(l["marks"]), f"own {'+'.join(l['own'])}" if l["own"] else "") if x)
            lab = (f'<<font point-size="8" color="#555555">v{l["index"]}</font><br/><b>{e(l["block"])}</b>'
                   f'<br/><font point-size="8">{sub}</font>'
                   + (f'<br/><font point-size="8" color="#333333">{e(extra)}</font>' if extra else "") + ">")
            per = ", peripheries=2" if "pp" in l["marks"] or l["own"] else ""
            out.append(f'    {q(l["id"])} [label={lab}, fillcolor="{FILLS[i % len(FILLS)]}", '
                       f'color="{LINES[i % len(LINES)]}"{per}];')
        out.append("  }")
    out.append("  subgraph cluster_blocks {")
    out.append('    label="physical blocks (shared weights)"; labeljust=l; style="rounded,dashed"; color="#999999"; '
               "fontsize=11;")
    blk_nodes = [n for n, d in g.nodes(data=True) if d.get("kind") == "block"]
    for n in blk_nodes:
        d = g.nodes[n]
        i = d["index"]
        b = plan.blocks[i]
        runs = sum(1 for l in layers if l["block_index"] == i)
        extra = []
        if b.attn.key != b.name:
            extra.append(f"attn of {b.attn.key}")
        if b.mlp.key != b.name:
            extra.append(f"mlp of {b.mlp.key}")
        lab = (f'<<b>{e(d["name"])}</b> <font point-size="9">×{runs}</font>'
               + "".join(f'<br/><font point-size="8">{e(x)}</font>' for x in extra) + ">")
        out.append(f'    {q(n)} [label={lab}, fillcolor="{FILLS[i % len(FILLS)]}", color="{LINES[i % len(LINES)]}", '
                   f'penwidth={2.4 if runs > 1 else 1.2}];')
    out.append("  }")
    emb = "embedding\\n(tied head)" if tied else "embedding"
    out.append(f'  embed [label="{emb}", shape=box, style="filled", fillcolor="#eeeeee", color="#888888"];')
    out.append('  head [label="head", shape=box, style="filled", fillcolor="#eeeeee", color="#888888"];')
    # layout skeleton: one rank per column, top to bottom block / encoder / decoder
    for c, ids in sorted(by_col.items()):
        blocks_here = [f"block:{plan.blocks[i].name}" for i, v in first.items() if v in ids]
        column = blocks_here + ids
        out.append("  {rank=same; " + "; ".join(q(x) for x in column) + "}")
    cols = sorted(by_col)
    for a, b in zip(cols, cols[1:]):
        out.append(f"  {q(by_col[a][0])} -> {q(by_col[b][0])} [style=invis, weight=50];")
    if layers:
        out.append(f"  embed -> {q(layers[0]['id'])} [style=invis];")
        out.append(f"  head -> {q(layers[-1]['id'])} [style=invis];" if dec else
                   f"  {q(layers[-1]['id'])} -> head [style=invis];")
    # the edges of the graph
    for a, b, d in g.edges(data=True):
        kind = d.get("kind")
        if kind == "residual":
            backward = (a in col and b in col and col[b] < col[a]) or b == "head" and dec
            ports = ", tailport=w, headport=e" if backward else ""
            out.append(f'  {q(a)} -> {q(b)} [penwidth=1.6, color="#444444", constraint=false{ports}];')
        elif kind == "weights":
            i = g.nodes[a]["index"]
            out.append(f'  {q(a)} -> {q(b)} [color="{LINES[i % len(LINES)]}", penwidth=0.9, arrowhead=none, '
                       "constraint=false];")
        elif kind == "skip":
            # written decoder → encoder with dir=back: flat edges put their tail below their head in
            # rankdir=LR, and the encoder row belongs above the decoder row
            out.append(f'  {q(b)} -> {q(a)} [dir=back, color="{SKIP}", penwidth=1.3, style=dashed];')
        elif kind == "cross_repeat":
            out.append(f'  {q(a)} -> {q(b)} [color="{CROSS}", penwidth=0.9, style=dotted, constraint=false];')
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- Mermaid
def to_mermaid(plan: Plan) -> str:
    g = build_graph(plan)
    layers = _layer_info(plan)
    m = lambda s: str(s).replace('"', "#quot;")
    out = ["---", f"title: {m(_title(plan))}", "---", "flowchart TB"]
    out.append('  subgraph blocks["physical blocks (shared weights)"]')
    out.append("    direction LR")
    for blk in plan.blocks:
        runs = sum(1 for l in layers if l["block_index"] == blk.index)
        out.append(f'    B_{blk.name}["{m(blk.name)} ×{runs}"]')
    out.append("  end")
    for side in ("encoder", "decoder"):
        members = [l for l in layers if l["side"] == side]
        if not members:
            continue
        out.append(f'  subgraph {side}["{side} ({len(members)} virtual layers)"]')
        out.append("    direction LR")
        for l in members:
            sub = f"<br/>pass {l['pass']}/{l['passes']}" if l["passes"] > 1 else ""
            extra = " ".join(l["marks"] + ([f"own {'+'.join(l['own'])}"] if l["own"] else []))
            extra = f"<br/>{extra}" if extra else ""
            out.append(f'    {l["id"]}["v{l["index"]}: {m(l["block"])}{sub}{m(extra)}"]')
        out.append("  end")
    out.append('  embed["embedding"]')
    out.append('  head["head"]')
    for a, b, d in g.edges(data=True):
        kind = d.get("kind")
        a2 = f"B_{g.nodes[a]['name']}" if g.nodes[a].get("kind") == "block" else a
        if kind == "residual":
            out.append(f"  {a2} --> {b}")
        elif kind == "weights":
            out.append(f"  {a2} -.- {b}")
        elif kind == "skip":
            out.append(f"  {a2} == skip {d.get('slot')} ==> {b}")
        elif kind == "cross_repeat":
            out.append(f"  {a2} -. cross-repeat .-> {b}")
    for blk in plan.blocks:
        i = blk.index
        members = [f"B_{blk.name}"] + [l["id"] for l in layers if l["block_index"] == i]
        out.append(f"  classDef c{i} fill:{FILLS[i % len(FILLS)]},stroke:{LINES[i % len(LINES)]}")
        out.append(f"  class {','.join(members)} c{i}")
    for line in _schedule_lines(plan):
        out.append(f"  %% {line}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- pictures (matplotlib)
TEXT_FORMATS = ("dot", "mermaid")
IMAGE_FORMATS = ("png", "svg")
FORMATS = TEXT_FORMATS + IMAGE_FORMATS
SUFFIX = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid", ".png": "png", ".svg": "svg"}


def _positions(plan: Plan, layers: list[dict]) -> dict[str, tuple[float, float]]:
    """The U of to_dot in data coordinates: blocks on top (y=2), the encoder left to right
    (y=1), the decoder right to left underneath (y=0), so each U-Net skip is vertical."""
    enc = [l for l in layers if l["side"] == "encoder"]
    dec = [l for l in layers if l["side"] == "decoder"]
    split = len(enc)
    shift = max(0, len(dec) - split)
    pos = {l["id"]: (float(l["index"] + shift), 1.0) for l in enc}
    pos.update({l["id"]: (float(split - 1 - (l["index"] - split) + shift), 0.0) for l in dec})
    # blocks spread evenly over the width, in index order
    width = max([x for x, _ in pos.values()], default=0.0)
    n = len(plan.blocks)
    for blk in plan.blocks:
        x = width * blk.index / (n - 1) if n > 1 else width / 2
        pos[f"block:{blk.name}"] = (x, 2.2)
    left = min([x for x, _ in pos.values()], default=0.0)
    pos["embed"] = (left - 1.1, 1.0)
    pos["head"] = (left - 1.1, 0.0) if dec else (width + 1.1, 1.0)
    return pos


def to_image(plan: Plan, fmt: str = "png", dpi: int = 150) -> bytes:
    """PNG or SVG of the layer graph, drawn with matplotlib (no system package needed)."""
    import io

    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"not an image format: {fmt!r}")
    g = build_graph(plan)
    layers = _layer_info(plan)
    pos = _positions(plan, layers)
    xs = [x for x, _ in pos.values()]
    width_units = max(xs) - min(xs) + 2.4
    fig = Figure(figsize=(max(6.0, 0.95 * width_units), 4.6))
    ax = fig.add_axes((0.01, 0.14, 0.98, 0.74))
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(-0.55, 2.65)
    ax.axis("off")
    bw, bh = 0.8, 0.46

    def box(node: str, text: str, fill: str, line: str, lw: float = 1.2, double: bool = False) -> None:
        x, y = pos[node]
        ax.add_patch(FancyBboxPatch((x - bw / 2, y - bh / 2), bw, bh, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=fill, edgecolor=line, linewidth=lw, zorder=3))
        if double:
            ax.add_patch(FancyBboxPatch((x - bw / 2 - 0.04, y - bh / 2 - 0.04), bw + 0.08, bh + 0.08,
                                        boxstyle="round,pad=0.02,rounding_size=0.1", facecolor="none",
                                        edgecolor=line, linewidth=0.8, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=7, zorder=4, linespacing=1.15)

    def arrow(a: str, b: str, color: str, style: str = "-|>", ls: str = "-", lw: float = 1.0, rad: float = 0.0,
              z: int = 2) -> None:
        ax.add_patch(FancyArrowPatch(pos[a], pos[b], arrowstyle=style, mutation_scale=8, color=color, linewidth=lw,
                                     linestyle=ls, connectionstyle=f"arc3,rad={rad}", shrinkA=14, shrinkB=14,
                                     zorder=z))

    for a, b, d in g.edges(data=True):
        kind = d.get("kind")
        if kind == "weights":
            i = g.nodes[a]["index"]
            arrow(a, b, LINES[i % len(LINES)], style="-", lw=0.5, z=1)
        elif kind == "residual":
            arrow(a, b, "#444444", lw=1.4)
        elif kind == "skip":
            arrow(a, b, SKIP, ls="--", lw=1.2)
        elif kind == "cross_repeat":
            arrow(a, b, CROSS, ls=":", lw=0.9, rad=-0.35)
    for blk in plan.blocks:
        i = blk.index
        runs = sum(1 for l in layers if l["block_index"] == i)
        box(f"block:{blk.name}", f"{blk.name}  ×{runs}", FILLS[i % len(FILLS)], LINES[i % len(LINES)],
            lw=2.4 if runs > 1 else 1.2)
    for l in layers:
        i = l["block_index"]
        lines = [f"v{l['index']}", l["block"]]
        if l["passes"] > 1:
            lines.append(f"pass {l['pass']}/{l['passes']}")
        extra = " ".join(l["marks"] + ([f"own {'+'.join(l['own'])}"] if l["own"] else []))
        if extra:
            lines.append(extra)
        box(l["id"], "\n".join(lines), FILLS[i % len(FILLS)], LINES[i % len(LINES)],
            double="pp" in l["marks"] or bool(l["own"]))
    box("embed", "embedding\n(tied head)" if plan.model.tied_embeddings else "embedding", "#eeeeee", "#888888")
    box("head", "head", "#eeeeee", "#888888")
    if any(l["side"] == "decoder" for l in layers):
        ax.text(min(xs) - 0.65, 0.5, "encoder →\n← decoder", fontsize=7, color="#666666", va="center")
    fig.suptitle(_title(plan), fontsize=9, fontweight="bold", y=0.97)
    foot = [*_schedule_lines(plan), "  ·  ".join(_legend_items(plan, layers))]
    fig.text(0.01, 0.02, "\n".join(x for x in foot if x), fontsize=7, color="#333333", va="bottom")
    buf = io.BytesIO()
    # fixed metadata and ids, so the same Plan gives the same bytes
    with matplotlib.rc_context({"svg.hashsalt": "recurc", "svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Software": "recurc"} if fmt == "png" else
                    {"Date": None, "Creator": "recurc"})
    return buf.getvalue()


def render(plan: Plan, fmt: str = "dot") -> str | bytes:
    if fmt == "dot":
        return to_dot(plan)
    if fmt == "mermaid":
        return to_mermaid(plan)
    if fmt in IMAGE_FORMATS:
        return to_image(plan, fmt)
    raise ValueError(f"unknown format {fmt!r}")


def choose_format(fmt: str | None, output: str | None) -> str:
    """The format from --format, else from the output's suffix; an output suffix that does not
    match the format (DOT text in x.jpg) is refused rather than written."""
    from .errors import SpecError
    suffix = Path(output).suffix.lower() if output else ""
    known = ", ".join(sorted(SUFFIX))
    if fmt is None:
        if not output:
            return "dot"
        if suffix not in SUFFIX:
            raise SpecError(f"cannot tell the format of {output!r} from its suffix", where="<command line>",
                            hint=f"use one of {known}, or pass --format")
        return SUFFIX[suffix]
    if output and suffix and SUFFIX.get(suffix) != fmt:
        raise SpecError(f"--format {fmt} does not match the output {output!r}", where="<command line>",
                        hint=f"{fmt} files end in " + ", ".join(k for k, v in SUFFIX.items() if v == fmt))
    return fmt


def render_to(plan: Plan, fmt: str | None, output: str | None) -> int:
    """CLI helper: choose the format, render, write (atomically) or print. Returns an exit code."""
    import sys

    from .errors import SpecError
    fmt = choose_format(fmt, output)
    if fmt in IMAGE_FORMATS and output is None:
        raise SpecError(f"--format {fmt} writes a file", where="<command line>", hint=f"add -o graph.{fmt}")
    data = render(plan, fmt)
    if output is None:
        sys.stdout.write(data)  # type: ignore[arg-type]
    else:
        atomic_write(output, data)
    return 0
