"""recurc render: DOT and Mermaid for every spec (structure checked); PNG/SVG drawn with matplotlib."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from recurc.cli import main
from recurc.plan import make_plan
from recurc.render import SKIP, to_dot, to_image, to_mermaid
from recurc.spec import load_spec

SPECS = sorted(Path(__file__).resolve().parent.parent.glob("specs/*.yaml"))


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def plan(request):
    return make_plan(load_spec(request.param))


def _dot_nodes(text: str) -> set[str]:
    return set(re.findall(r'^\s*"([^"]+)" \[label=', text, re.M))


def _dot_edges(text: str) -> list[tuple[str, str, str]]:
    return re.findall(r'^\s*"?([^"\s]+)"? -> "?([^"\s]+)"? \[([^\]]*)\]', text, re.M)


def test_dot_structure(plan):
    text = to_dot(plan)
    assert text.startswith("digraph recurc {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    nodes = _dot_nodes(text)
    for blk in plan.blocks:
        assert f"block:{blk.name}" in nodes
    for layer in plan.layers:
        assert f"v{layer.index}" in nodes
    edges = _dot_edges(text)
    skips = [e for e in edges if SKIP in e[2] and "invis" not in e[2]]
    assert len(skips) == plan.main.n_skips
    # every virtual layer is wired to the block it runs, and the residual chain is complete
    weights = {(a, b) for a, b, attrs in edges if "arrowhead=none" in attrs}
    for layer in plan.layers:
        assert (f"block:{plan.blocks[layer.block].name}", f"v{layer.index}") in weights
    residual = [e for e in edges if 'color="#444444"' in e[2]]
    assert len(residual) == plan.main.depth + 1
    assert "cluster_encoder" in text and "cluster_decoder" in text
    if any(l.parallel for l in plan.layers):
        assert "∥" in text
    if any(l.xsa for l in plan.layers):
        assert "xsa" in text
    if any(l.per_pass for l in plan.layers):
        assert "peripheries=2" in text


def test_mermaid_structure(plan):
    text = to_mermaid(plan)
    assert "flowchart TB" in text
    for blk in plan.blocks:
        assert re.search(rf'^\s*B_{re.escape(blk.name)}\[', text, re.M)
    for layer in plan.layers:
        assert re.search(rf'^\s*v{layer.index}\["v{layer.index}: ', text, re.M)
        assert f"B_{plan.blocks[layer.block].name} -.- v{layer.index}" in text
    assert len(re.findall(r"== skip \d+ ==>", text)) == plan.main.n_skips
    assert text.count("subgraph") == text.count("\n  end")


def test_schedule_paths_are_listed():
    p = make_plan(load_spec(next(s for s in SPECS if s.stem == "loop45_sp8192")))
    text = to_dot(p)
    assert "before (0%–50% of training): 0..10" in text
    assert p.canonical_order("main") in text


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_image(tmp_path, fmt):
    out = tmp_path / f"g.{fmt}"
    assert main(["render", str(SPECS[0]), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if fmt == "png" else b"<svg" in data[:2000]
    assert list(tmp_path.iterdir()) == [out]      # atomic: no temp files left behind


def test_every_spec_renders_a_picture(plan):
    svg = to_image(plan, "svg").decode()
    assert "<svg" in svg[:2000]
    # every block and virtual layer is labelled in the picture (svg.fonttype none keeps text as text)
    for blk in plan.blocks:
        assert f">{blk.name}  ×" in svg
    for layer in plan.layers:
        assert f">v{layer.index}<" in svg
    assert to_image(plan, "svg") == to_image(plan, "svg")      # the same Plan, the same bytes


def test_cli_text_formats(tmp_path, capsys):
    assert main(["render", str(SPECS[0]), "--format", "mermaid"]) == 0
    assert "flowchart" in capsys.readouterr().out
    out = tmp_path / "sub" / "g.dot"
    assert main(["render", str(SPECS[0]), "-o", str(out)]) == 0
    assert out.read_text().startswith("digraph")
    assert main(["render", str(SPECS[0]), "--format", "png"]) == 2     # a picture needs -o
    assert main(["render", str(tmp_path / "missing.yaml")]) == 2
