"""The Plan is the IR: it round-trips through JSON, everything the model depends on is in it (a
named block's slope included), and a component from an installed package goes through every
stage — show, estimate, build, train, emit — with no file of recurc changed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recurc.build import build
from recurc.diff import diff
from recurc.ir import Plan
from recurc.plan import make_plan
from recurc.spec import load_spec, spec_from_text

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
PLUGINS = Path(__file__).parent / "plugins"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_plan_round_trips_through_json(spec):
    plan = make_plan(load_spec(spec))
    text = json.dumps(plan.to_json())
    back = Plan.from_json(json.loads(text))
    assert back == plan
    assert back.canonical() == plan.canonical() and back.source == plan.source
    assert json.dumps(back.to_json()) == text


def _slope_plan(slope: float) -> Plan:
    return make_plan(spec_from_text(f"""
name: slopes
model: {{dim: 32, heads: 4, kv_heads: 2, vocab_size: 64, seq_len: 16}}
blocks:
  - name: A
    mlp: {{activation: leaky_relu2, negative_slope: {slope}}}
  - B
order: "A,B x2"
"""))


def test_a_named_blocks_slope_reaches_model_canonical_and_diff():
    a, b = _slope_plan(0.1), _slope_plan(0.9)
    assert a.blocks[0].mlp_settings.negative_slope == 0.1
    assert a.canonical() != b.canonical()
    d = diff(a, b)
    assert not d.equal and any("negative_slope" in str(c) for c in d.changes)
    ma, mb = build(a), build(b)
    mb.load_state_dict(ma.state_dict())
    with torch.no_grad():     # give the zero-initialised projections weight so the MLP shows
        for m in (ma, mb):
            for name, p in m.named_parameters():
                if name.endswith("proj.weight"):
                    p.copy_(torch.linspace(-1, 1, p.numel()).view_as(p))
    idx = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(0))
    assert ma.blocks["A"].mlp.negative_slope == 0.1 and mb.blocks["A"].mlp.negative_slope == 0.9
    assert not torch.allclose(ma(idx), mb(idx))


# ---------------------------------------------------------------- a third-party component
PLUGIN_SPEC = """\
extends: {tiny}
name: toy
model: {{dim: 64, heads: 4, kv_heads: 2, seq_len: 64}}
components:
  - {{use: toy_gain, init: 0.5}}
train: {{tokens_per_step: 1024, val_tokens: 2048, warmdown_steps: 1, warmup_steps: 0}}
"""

PLUGIN_CHECK = """
import sys, torch
from recurc.spec import load_spec
from recurc.plan import make_plan
from recurc.estimate import estimate
from recurc.build import build
from recurc.emit import emit
from recurc.report import show_data
plan = make_plan(load_spec(sys.argv[1]))
show = show_data(plan)
assert plan.param_by_name["toy_gain.gain"].shape == (64,), plan.param_by_name
e = estimate(plan, suggest=False)
base = estimate(make_plan(load_spec(sys.argv[2])), suggest=False)
assert e.unique_params == base.unique_params + 64 and e.flops_per_token_eval == base.flops_per_token_eval + 64
model = build(plan)
assert torch.all(model.toy_gain.gain == 0.5)          # the init the Plan declares
src = emit(plan, "raw")
assert "class ToyGainModule" in src and "'toy_gain': ToyGainModule" in src
import runpy
open("train_gpt.py", "w").write(src)
ns = runpy.run_path("train_gpt.py", run_name="emitted")
emitted = ns["build_model"](ns["PLAN"], torch.device("cpu"))
emitted.load_state_dict(model.state_dict())
idx = torch.randint(0, 1024, (1, 64))
torch.testing.assert_close(emitted(idx), model(idx))
print("ok", show["params"]["unique"])
"""


def _plugin_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT)])}


def test_a_component_from_an_installed_package(tmp_path):
    """The toy package (tests/plugins) registers `toy_gain` through the entry-point group; a spec
    naming it shows, estimates, builds, emits (the emitted model equals the built one)."""
    spec = tmp_path / "toy.yaml"
    spec.write_text(PLUGIN_SPEC.format(tiny=json.dumps(str(ROOT / "specs" / "tiny.yaml"))))
    base = tmp_path / "base.yaml"
    base.write_text(PLUGIN_SPEC.format(tiny=json.dumps(str(ROOT / "specs" / "tiny.yaml")))
                    .replace("components:\n  - {use: toy_gain, init: 0.5}\n", ""))
    r = subprocess.run([sys.executable, "-c", PLUGIN_CHECK, str(spec), str(base)], env=_plugin_env(),
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")


def test_without_the_package_the_spec_is_one_clear_error(tmp_path):
    from recurc.errors import SpecError
    spec = tmp_path / "toy.yaml"
    spec.write_text(PLUGIN_SPEC.format(tiny=json.dumps(str(ROOT / "specs" / "tiny.yaml"))))
    with pytest.raises(SpecError, match="no component named 'toy_gain'"):
        make_plan(load_spec(spec))


@pytest.mark.slow
def test_a_plugin_spec_trains_a_step(tmp_path):
    from runtime.demo import build_demo_data
    demo = build_demo_data(tmp_path / "demo")
    spec = tmp_path / "toy.yaml"
    spec.write_text(PLUGIN_SPEC.format(tiny=json.dumps(str(ROOT / "specs" / "tiny.yaml"))))
    r = subprocess.run(
        [sys.executable, "-m", "runtime.train", str(spec), "--steps", "2", "--device", "cpu", "--no-compile",
         "--out", str(tmp_path / "run"), "--data", demo.train_pattern, "--val", demo.val_pattern,
         "--tokenizer", str(demo.tokenizer_path)],
        env=_plugin_env(), capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    steps = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(1 for s in steps if s.get("event") == "step") == 2
    assert (tmp_path / "run" / "artifact.bin").exists()


DAMP_SPEC = """\
extends: {tiny}
name: toy-damp
model: {{dim: 64, heads: 4, kv_heads: 2, seq_len: 32}}
blocks: 3
order: "0,1x2,2"
components:
  - {{use: toy_damp}}
"""

DAMP_CHECK = """
import sys, torch
from recurc.spec import load_spec
from recurc.plan import make_plan
from recurc.build import build
from recurc.emit import emit
import runpy
plan = make_plan(load_spec(sys.argv[1]))
assert not [p for p in plan.params if p.component == "toy_damp"]      # it owns no tensors
hooked = [l for l in plan.layers if "toy_damp" in l.hooks]
assert hooked and all(l.per_pass is not None for l in hooked)
model = build(plan)
torch.manual_seed(0)
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.05)
plain = build(make_plan(load_spec(sys.argv[2])))
plain.load_state_dict(model.state_dict())
idx = torch.randint(0, 1024, (1, 32))
# hand-written: the plain model with each hooked layer's update halved, x + (f(x) - x) / 2
hooked_at = [bool(r.hooks) for r in model.runs["main"]]
assert any(hooked_at) and not any(r.hooks for r in plain.runs["main"])
layer, calls = plain._layer, iter(hooked_at)
def halved(run, x, *rest):
    out = layer(run, x, *rest)
    return x + 0.5 * (out - x) if next(calls) else out
plain._layer = halved
torch.testing.assert_close(model(idx), plain(idx))
src = emit(plan, "raw")
open("train_gpt.py", "w").write(src)
ns = runpy.run_path("train_gpt.py", run_name="emitted")
emitted = ns["build_model"](ns["PLAN"], torch.device("cpu"))
emitted.load_state_dict(model.state_dict())
torch.testing.assert_close(emitted(idx), model(idx))
print("ok")
"""


def test_a_per_pass_component_without_tensors_builds_and_emits(tmp_path):
    """`toy_damp` (tests/plugins) is a per-pass hook that owns no tensors: every looped pass still
    gets its module, the hook changes the forward, and the emitted model equals the built one."""
    tiny = json.dumps(str(ROOT / "specs" / "tiny.yaml"))
    spec, base = tmp_path / "damp.yaml", tmp_path / "base.yaml"
    spec.write_text(DAMP_SPEC.format(tiny=tiny))
    base.write_text(DAMP_SPEC.format(tiny=tiny).replace("components:\n  - {use: toy_damp}\n", ""))
    r = subprocess.run([sys.executable, "-c", DAMP_CHECK, str(spec), str(base)], env=_plugin_env(),
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")
