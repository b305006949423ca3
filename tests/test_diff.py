"""recurc diff: semantic equality, alignment of execution orders, field changes, exit codes."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from recurc.cli import main
from recurc.diff import deep_diff, diff, print_diff
from recurc.plan import make_plan
from recurc.spec import load_spec, spec_from_text

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(Path(__file__).resolve().parent.parent.glob("specs/*.yaml"))


@pytest.fixture(scope="module")
def plans():
    return {p.stem: make_plan(load_spec(p)) for p in SPECS}


def test_every_spec_equals_itself(plans):
    for name, plan in plans.items():
        d = diff(plan, plan, estimates=False)
        assert d.equal, name
        assert d.changes == [] and all(o.op == "same" for o in d.alignment)


def test_every_pair(plans):
    names = sorted(plans)
    for a, b in itertools.combinations(names, 2):
        d = diff(plans[a], plans[b], estimates=False)
        same = plans[a].canonical() == plans[b].canonical()
        assert d.equal == same, (a, b)
        if not same:
            assert d.changes, (a, b)
        data = json.loads(json.dumps(d.to_dict(), default=str))
        assert data["equal"] == same
        # the alignment covers both main orders exactly
        assert sum(o.a[1] - o.a[0] for o in d.alignment) == plans[a].main.depth
        assert sum(o.b[1] - o.b[0] for o in d.alignment) == plans[b].main.depth
        for g, (ua, ub) in d.unique_by_group.items():
            assert data["unique_by_group"][g]["delta"] == ub - ua


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """
name: {name}
description: {desc}
blocks: 11
order: "{order}"
model: {{dim: 512, heads: 8, kv_heads: 4}}
quant:
  groups:
    mlp: {{bits: {bits}}}
"""

REORDERED = """
quant:
  groups:
    mlp: {{bits: {bits}}}
model: {{kv_heads: 4, heads: 8, dim: 512}}
order: "{order}"
blocks: 11
description: {desc}
name: {name}
"""


def test_spelling_is_not_a_difference(tmp_path, capsys):
    a = _write(tmp_path, "a.yaml", BASE.format(name="a", desc="one", order="0..3,(4,5)x2,6..10", bits=6))
    b = _write(tmp_path, "b.yaml", REORDERED.format(name="b", desc="two", order="0,1,2,3,4,5,4,5,6,7,8,9,10", bits=6))
    assert diff(a, b).equal
    assert main(["diff", str(a), str(b)]) == 0
    assert "equal" in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["equal"] is True


def test_layer_insertion_is_aligned_as_extra_passes(tmp_path):
    flat = _write(tmp_path, "flat.yaml", BASE.format(name="flat", desc="x", order="0..10", bits=6))
    loop = _write(tmp_path, "loop.yaml", BASE.format(name="loop", desc="x", order="0..3,(4,5)x2,6..10", bits=6))
    d = diff(flat, loop)
    assert not d.equal
    inserted = [o for o in d.alignment if o.op == "inserted"]
    assert len(inserted) == 1
    ins = inserted[0]
    assert ins.b == (6, 8) and ins.b_blocks == ["4", "5"]
    assert "pass 2 of 2" in ins.note and "extra passes" in ins.note
    assert all(o.op in ("same", "inserted") for o in d.alignment)
    assert d.depth == (11, 13)
    assert d.effective_by_group["total"][1] > d.effective_by_group["total"][0]
    assert d.unique_by_group["mlp"][0] == d.unique_by_group["mlp"][1]      # looping shares the weights
    # and the other way round it is a removal
    back = diff(loop, flat)
    assert [o.op for o in back.alignment if o.op != "same"] == ["removed"]


def test_quant_and_sharing_changes_are_reported_by_path(tmp_path, capsys):
    a = _write(tmp_path, "a.yaml", BASE.format(name="a", desc="x", order="0..3,(4,5)x2,6..10", bits=6))
    b = _write(tmp_path, "b.yaml", BASE.format(name="b", desc="x", order="0..3,(4,5)x2,6..10", bits=5)
               + "sharing: attention\n")
    d = diff(a, b)
    paths = {c.path: c for c in d.changes}
    assert paths["quant.groups.mlp.bits"].a == 6 and paths["quant.groups.mlp.bits"].b == 5
    assert paths["quant.groups.mlp.bits"].section == "quantization & compression"
    assert paths["sharing"].section == "sharing & per-pass"
    assert d.unique_by_group["mlp"][1] > d.unique_by_group["mlp"][0]   # later passes own their MLPs
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "quant.groups.mlp.bits" in out and "sharing" in out


def test_exit_codes(tmp_path, capsys):
    assert main(["diff", str(SPECS[0]), str(SPECS[0])]) == 0
    capsys.readouterr()
    other = next(p for p in SPECS if p != SPECS[0])
    assert main(["diff", str(SPECS[0]), str(other), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["equal"] is False
    assert main(["diff", str(SPECS[0]), str(tmp_path / "missing.yaml")]) == 2
    bad = _write(tmp_path, "bad.yaml", "order: '0..3,(4,5'\n")
    assert main(["diff", str(bad), str(SPECS[0])]) == 2
    assert "error" in capsys.readouterr().err


def test_deep_diff():
    assert deep_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 4}}) == [("a.c", 2, 3), ("a.d", None, 4)]
    assert deep_diff({"x": [1, 2]}, {"x": [1, 2]}) == []


def test_estimate_deltas_when_available():
    pytest.importorskip("recurc.estimate")
    a, b = make_plan(load_spec(SPECS[0])), make_plan(spec_from_text(BASE.format(name="x", desc="x", order="0..10",
                                                                                 bits=6)))
    d = diff(a, b)
    assert "total_bytes" in d.estimate and "flops_per_token_train" in d.estimate


def test_records_are_matched_by_name_and_summarized_for_people(capsys):
    """A width change alters every tensor's shape: the diff names each tensor in the data
    (`params[tok_emb.weight].shape`) and prints one row per changed field, not the whole list."""
    a = make_plan(load_spec(ROOT / "specs" / "tiny.yaml"))
    b = make_plan(load_spec(ROOT / "specs" / "tiny.yaml", ["model.dim=192"]))
    paths = {c.path: c for c in diff(a, b, estimates=False).changes}
    assert paths["params[tok_emb.weight].shape"].a == [1024, 128]
    assert paths["params[tok_emb.weight].shape"].b == [1024, 192]
    assert paths["params[tok_emb.weight].shape"].section == "tensors"
    assert not any(c.path == "params" for c in paths.values())
    print_diff(diff(a, b, estimates=False))
    out = capsys.readouterr().out
    assert "params[*].shape (38 records, e.g. tok_emb.weight)" in " ".join(out.split())
    assert max(map(len, out.splitlines())) < 400          # no row carries a whole list
