"""Specs: the library in specs/, exact counts, extends, overrides and errors for people."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recurc.errors import SpecError
from recurc.plan import make_plan
from recurc.spec import load_spec, spec_from_text

SPECS = sorted(Path(__file__).parent.parent.joinpath("specs").glob("*.yaml"))
ROOT = Path(__file__).parent.parent


def plan_of(text: str, *overrides: str):
    return make_plan(spec_from_text(text, overrides=overrides))


def test_baseline_has_the_published_parameter_count():
    plan = make_plan(load_spec(ROOT / "specs/baseline.yaml"))
    assert plan.unique_params == 17_059_912
    assert plan.effective_params() == 17_059_912
    assert plan.unique_by_group() == {"embeddings": 524_288, "attention": 7_077_888, "mlp": 9_437_184,
                                      "per_pass": 0, "scalars": 20_552}


def test_show_json_counts_without_torch():
    code = ("import json, sys; from recurc.cli import main; main(['show', 'specs/baseline.yaml', '--json']);"
            "assert 'torch' not in sys.modules, 'show imported torch'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["params"]["unique"] == 17_059_912
    assert data["order"] == "0..8"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_library_spec_plans(path):
    plan = make_plan(load_spec(path))
    assert plan.unique_params > 0
    names = [p.name for p in plan.params]
    assert len(names) == len(set(names))


def test_recurrence_counts():
    loop = make_plan(load_spec(ROOT / "specs/loop45x2.yaml"))
    block = 1_837_064
    assert loop.unique_params == 524_288 + 11 * block + 6 * 512
    assert loop.effective_params() == 524_288 + 13 * block + 6 * 512
    published = make_plan(load_spec(ROOT / "specs/loop45_sp8192.yaml"))
    # SP8192 embedding + 11 blocks with a 2048-wide MLP + 7 gated skips (weight and gate vectors)
    per_block = 512 * 512 * 2 + 256 * 512 * 2 + 2048 * 512 * 2 + 8 + 512 * 4
    assert published.unique_params == 8192 * 512 + 11 * per_block + 7 * 2 * 512
    assert published.paths["before"].depth == 11 and published.main.depth == 15
    assert [p.start for p in published.phases] == [0.0, 0.5]


def test_attention_sharing_unties_the_mlp_per_pass():
    plan = make_plan(load_spec(ROOT / "specs/attn_shared_mlp_untied.yaml"))
    second = [l for l in plan.layers if l.block == 1 and l.pass_index == 1][0]
    assert second.attn.path == "blocks.1.attn" and second.mlp.path == f"passes.{second.index}.mlp"
    assert f"passes.{second.index}.mlp.fc.weight" in plan.param_by_name


def test_features_follow_the_index_kind():
    text = 'order: "0..3,(4,5)x2,6..10"\nfeatures: {index: %s, parallel_residual_from: 7}\n'
    physical = plan_of(text % "physical")
    virtual = plan_of(text % "virtual")
    assert [l.index for l in physical.layers if l.parallel] == [9, 10, 11, 12]
    assert [l.index for l in virtual.layers if l.parallel] == [7, 8, 9, 10, 11, 12]
    with pytest.raises(SpecError, match="virtual` or `physical"):
        plan_of('order: "0..8"\nfeatures: {xsa_last: 2}\n')


def test_extends_merges_deeply_and_reports_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\nmodel: {dim: 256}\n")
    (tmp_path / "b.yaml").write_text(f"extends: {ROOT / 'specs/baseline.yaml'}\nmodel: {{heads: 4, kv_heads: 2}}\n")
    spec = load_spec(tmp_path / "a.yaml")
    assert (spec.model.dim, spec.model.heads, spec.model.vocab_size) == (256, 4, 1024)
    (tmp_path / "c.yaml").write_text("extends: d.yaml\n")
    (tmp_path / "d.yaml").write_text("extends: c.yaml\norder: '0'\n")
    with pytest.raises(SpecError, match="cycle"):
        load_spec(tmp_path / "c.yaml")


def test_overrides_change_fields():
    spec = load_spec(ROOT / "specs/baseline.yaml", ["order=0..3,(4,5)x2,6..8", "model.dim=576"])
    plan = make_plan(spec)
    assert spec.model.dim == 576 and plan.canonical_order() == "0..3,(4,5)x2,6..8"
    with pytest.raises(SpecError, match="key.path=value"):
        load_spec(ROOT / "specs/baseline.yaml", ["model.dim"])


@pytest.mark.parametrize("text,where,fragment", [
    ("order: '0..8'\nmodel:\n  dim: 500\n", "<spec>:3:3", "must divide dim"),
    ("order: '0..8'\nmodel: {heads: 8, kv_heads: 3}\n", "<spec>:2:8", "kv_heads (3) must divide heads"),
    ("order: '0..8'\nmodel:\n  dimm: 5\n", "<spec>:3:9", "unknown field"),
    ("order: '0..8'\nquant: {compressor: {name: gzip}}\n", "<spec>:2:28", "compressor.name"),
    ("order: '0..8'\nblocks: 4\n", "<spec>:1:8", "only 4 blocks"),
    ("order: '0..8,(1,2)x0'\n", "<spec>:1:8:12", "at least 1"),
    ("blocks: [A, B]\norder: 'A,C'\n", "<spec>:2:8:3", "does not exist"),
    ("blocks: [A, B, A]\norder: 'A,B'\n", "<spec>:1:9", "unique"),
    ("order: '0..8'\nx: &a [1]\ny: *a\n", "<spec>:2:4", "aliases"),
    ("order: [0, 1]\n", "<spec>:1:8", "string"),
    ("order: '0..8'\nblocks: 10\n", "<spec>", "never runs"),
    ("model: {dim: 64}\n", "<spec>", "order: this field is required"),
])
def test_errors_name_the_position(text, where, fragment):
    with pytest.raises(SpecError) as info:
        plan_of(text)
    assert fragment in info.value.render()
    assert info.value.where.startswith(where)


def test_cli_prints_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("order: '0..3,(4,5)x0'\n")
    out = subprocess.run([sys.executable, "-m", "recurc.cli", "show", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "bad.yaml:1:8" in out.stderr and "^" in out.stderr


def test_schema_is_json_schema():
    out = subprocess.run([sys.executable, "-m", "recurc.cli", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(out.stdout)
    assert "order" in schema["required"] and "model" in schema["properties"]


def test_canonical_plan_ignores_spelling():
    a = plan_of('name: a\norder: "0..3,(4,5)x2"\nmodel: {mlp: {mult: 2}}\n')
    b = plan_of('name: b\nmodel: {rope: {dims: 64}, mlp: {hidden: 1024}}\norder: "0,1,2,3,4,5,4,5"\n')
    assert a.canonical() == b.canonical()
    c = plan_of('order: "0..3,(4,5)x2"\nmodel: {mlp: {hidden: 1088}}\n')
    assert c.canonical() != a.canonical()


def test_undecodable_override_is_a_clear_error():
    # Python hands undecodable command-line bytes over as lone surrogates
    with pytest.raises(SpecError, match="not a character UTF-8 can encode"):
        load_spec(ROOT / "specs" / "tiny.yaml", ["model.dim=\udcff"])
