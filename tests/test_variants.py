"""recurc variants: generators, axes, constraints, ranking, dedup, outputs, the issue's example sweep."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recurc.cli import main
from recurc.errors import SpecError
from recurc.order import parse_order
from recurc.plan import make_plan
from recurc.spec import load_spec, spec_from_data
from recurc.variants import PLAN_INDEPENDENT, count_score, loop_windows, prelude_loop_coda, variants

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sweep_loops.yaml"


def toy_bytes(plan):
    """A stand-in for recurc.estimate: counts from the Plan, bytes = params × bits / 8."""
    d = count_score(plan)
    q = plan.quant.groups
    by = {g: int(n * (q[g].bits if g in q else 16) / 8) for g, n in plan.unique_by_group().items()}
    total = sum(by.values()) + plan.code.bytes
    d.update(bytes_by_group=by, model_bytes=sum(by.values()), total_bytes=total, budget=plan.budget,
             headroom=plan.budget - total, fits=total <= plan.budget)
    return d


def test_loop_windows():
    out = loop_windows([11], [1, 2, 3], [2, 3, 4])
    assert len(out) == (11 + 10 + 9) * 3
    by_label = {label: (text, n) for label, text, n in out}
    assert by_label["loop4-5x2"] == ("0..3,(4,5)x2,6..10", 11)
    assert by_label["loop4x3"] == ("0..3,4x3,5..10", 11)
    for label, text, n in out:
        assert n == 11 and parse_order(text).canonical() == text


def test_prelude_loop_coda():
    out = prelude_loop_coda([0, 1, 2], [2, 3, 4], [2, 3, 4], [0, 1, 2])
    assert len(out) == 81
    by_label = {label: (text, n) for label, text, n in out}
    text, n = by_label["1+4x3+1"]
    assert parse_order(text) == parse_order("1+4x3+1") and n == 6
    assert by_label["0+2x2+0"][0] == "(0,1)x2"


def test_example_sweep_runs_filters_ranks_and_writes(tmp_path):
    """The issue's "done when": every loop window of 1..3 layers × 2..4 repeats in an 11-layer stack at two
    widths and two MLP bit-widths, filtered by the 16 MB budget, ranked, written."""
    vs, stats = variants(EXAMPLE, score=toy_bytes, with_stats=True)
    assert stats["generated"] == 90 * 2 * 2 and stats["invalid"] == 0 and stats["duplicates"] == 0
    assert 0 < stats["passed"] < stats["generated"]
    assert all(v.passed and v.metrics["total_bytes"] <= 16_000_000 for v in vs)
    params = [v.metrics["unique_params"] for v in vs]
    assert params == sorted(params, reverse=True)                 # rank: -unique_params
    assert [v.rank for v in vs] == list(range(1, len(vs) + 1))
    names = [v.name for v in vs]
    assert len(set(names)) == len(names)
    assert "loop4-5x2_dim512_mlp6" in names
    from recurc.variants import write_json, write_specs
    paths = write_specs(vs, tmp_path / "specs")
    write_json(vs, tmp_path / "sweep.json", stats)
    assert len(paths) == len(vs)
    for p in paths[:20]:                                           # every written spec loads and plans
        plan = make_plan(load_spec(p))
        v = next(x for x in vs if x.name == p.stem)
        assert plan.canonical_order() == v.order and plan.name == v.name
    spec = yaml.safe_load((tmp_path / "specs" / "loop4-5x2_dim512_mlp6.yaml").read_text())
    assert spec["order"] == "0..3,(4,5)x2,6..10" and spec["blocks"] == 11 and spec["model"]["dim"] == 512
    assert spec["quant"]["groups"]["mlp"]["bits"] == 6
    assert spec["quant"]["groups"]["attention"]["bits"] == 6 and "sweep" not in spec
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert len(data["variants"]) == len(vs) and data["stats"]["passed"] == stats["passed"]
    # stable: the same sweep gives the same names in the same order
    assert [v.name for v in variants(EXAMPLE, score=toy_bytes)] == names


def test_example_sweep_with_the_estimator(tmp_path):
    pytest.importorskip("recurc.estimate")
    out = tmp_path / "out"
    assert main(["variants", str(EXAMPLE), "-o", str(out), "-q"]) == 0
    data = json.loads((out / "variants.json").read_text())
    assert data["variants"] and all(v["metrics"]["total_bytes"] <= 16_000_000 for v in data["variants"])
    assert len(list(out.glob("*.yaml"))) == len(data["variants"])


BASE = {"name": "t", "blocks": 11, "order": "0..10", "model": {"dim": 512}}


def test_duplicates_appear_once():
    t = {**BASE, "sweep": {"order": ["0..3,(4,5)x2,6..10", "0,1,2,3,4,5,4,5,6,7,8,9,10", "0..10"],
                           "description": ["a", "b"]}}
    vs, stats = variants(t, score=count_score, with_stats=True)
    assert len(vs) == 2 and stats["duplicates"] == 4


def test_axes_constraints_and_rank():
    t = {**BASE, "sweep": {"loop_windows": {"layers": 11, "width": [1, 2], "repeats": [2, 3]},
                           "sharing": ["block", "attention"], "model.mlp.mult": [2, 3],
                           "constraints": {"depth": [12, 13], "min_unique_params": 20_000_000,
                                           "max_flops_per_token": 1e12},
                           "rank": "unique_params"}}
    vs, stats = variants(t, score=count_score, with_stats=True)
    assert stats["generated"] == (11 + 10) * 2 * 2 * 2
    assert vs and all(12 <= v.metrics["depth"] <= 13 and v.metrics["unique_params"] >= 20_000_000 for v in vs)
    params = [v.metrics["unique_params"] for v in vs]
    assert params == sorted(params)
    assert {v.values["sharing"] for v in vs} <= {"block", "attention"}
    assert any("share-attention" in v.name for v in vs)
    assert all("mult" in v.name for v in vs)
    # failed ones can be kept, unranked
    allv = variants(t, score=count_score, keep_failed=True)
    assert len(allv) > len(vs) and all(v.rank is None and v.failed for v in allv if not v.passed)
    top = variants(t, score=count_score, top=3, rank="-unique_params")
    assert [v.rank for v in top] == [1, 2, 3]


def test_invalid_variants_are_counted_not_fatal():
    t = {**BASE, "sweep": {"model.dim": [512, 500]}}           # 500 is not divisible by 8 heads
    vs, stats = variants(t, score=count_score, with_stats=True)
    assert len(vs) == 1 and stats["invalid"] == 1 and "dim" in stats["invalid_examples"][0]


@pytest.mark.parametrize("sweep, message", [
    ({"model.dimm": [1, 2]}, "unknown field"),
    ({"modle.dim": [1]}, "not a spec field"),
    ({"loop_windows": {"layers": 11, "width": [3, 1], "repeats": 2}}, "backwards"),
    ({"loop_windows": {"layers": 11}}, "needs width"),
    ({"model.dim": [512], "constraints": {"most_bytes": 3}}, "unknown constraint"),
    ({"model.dim": [512], "constraints": {"max_total_bytes": "budget"}}, "total_bytes"),
    ({"model.dim": [512], "rank": "bogus"}, "cannot rank"),
])
def test_template_errors(sweep, message):
    with pytest.raises(SpecError, match=message):
        variants({**BASE, "sweep": sweep}, score=count_score)


def test_no_sweep_is_an_error():
    with pytest.raises(SpecError, match="no `sweep:`"):
        variants(dict(BASE), score=count_score)


def test_plan_independent_sections_only_change_settings():
    """variants.py shares one Plan skeleton between variants that differ only in these sections:
    the skeleton with the variant's settings must be exactly the variant's own Plan."""
    from recurc.plan import with_settings
    assert set(PLAN_INDEPENDENT) >= {"quant", "budget", "code", "train"}
    base = load_spec(ROOT / "specs" / "loop45_sp8192.yaml").to_data()
    other = {**base, "quant": {"groups": {"mlp": {"bits": 4}}, "compressor": {"name": "zlib"}}, "budget": 1,
             "code": {"bytes": 1}, "train": {"iterations": 5}, "name": "x", "description": "y"}
    a, b = make_plan(spec_from_data(base)), make_plan(spec_from_data(other))
    assert (a.blocks, a.paths, a.phases, a.eval_path, a.block_names) == \
        (b.blocks, b.paths, b.phases, b.eval_path, b.block_names)
    shared = with_settings(a, spec_from_data(other))
    assert shared == b and shared.to_json() == b.to_json()


def test_cli(tmp_path, capsys):
    t = tmp_path / "t.yaml"
    t.write_text(yaml.safe_dump({**BASE, "sweep": {"loop_windows": {"layers": 11, "width": 2, "repeats": [2, 3]},
                                                   "rank": "-effective_params", "top": 5}}))
    out = tmp_path / "out"
    assert main(["variants", str(t), "-o", str(out)]) == 0
    assert json.loads((out / "variants.json").read_text())["variants"]
    assert len(list(out.glob("*.yaml"))) == 5
    text = capsys.readouterr().out
    assert "loop" in text
    assert main(["variants", str(t), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["variants"]) == 5 and data["stats"]["generated"] == 20
    assert main(["variants", str(tmp_path / "missing.yaml")]) == 2
