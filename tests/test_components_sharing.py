"""Per-pass LoRA, Legendre weight sharing and random depth (recurc/components/sharing.py,
recurc/nn/sharing.py): each forward against a flat model whose weights are merged by hand, the
parameter table against the built module, FLOPs, the per-step depth draw (distribution,
determinism, resume), fullgraph compilation with a bounded number of graphs, the emitted script
and the example specs."""
from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recurc.build import build
from recurc.components.sharing import lognormal_poisson
from recurc.errors import SpecError
from recurc.estimate import forward_flops, schedule_flops
from recurc.plan import make_plan
from recurc.spec import load_spec, spec_from_text

from model_helpers import randomised_model

ROOT = Path(__file__).resolve().parents[1]
D, KV = 32, 16
BASE = """
name: sharing
model: {{vocab_size: 64, dim: 32, heads: 4, kv_heads: 2, seq_len: 16{model}}}
blocks: {blocks}
order: "{order}"
per_pass: {{scope: looped}}
{extra}
"""
IDX = torch.tensor([[5, 1, 7, 7, 2, 1, 9, 3], [0, 4, 4, 8, 6, 2, 3, 1]])


def _plan(components: str = "", order: str = "0x3", blocks: int = 1, model: str = "", extra: str = ""):
    comp = f"components: {components}" if components else ""
    return make_plan(spec_from_text(BASE.format(order=order, blocks=blocks, model=model, extra=f"{comp}\n{extra}")))


def _randomised(plan):
    return randomised_model(plan)


def _flat_from_looped(looped, merged) -> torch.nn.Module:
    """The flat 3-block model "0..2" with block i's weights `merged(i, name, weight)` of the looped
    block 0's; everything else (embedding, skips) copied by name."""
    flat_plan = _plan(order="0..2", blocks=3)
    flat = build(flat_plan)
    src = looped.state_dict()
    state = {}
    for name in flat.state_dict():
        if name.startswith("blocks."):
            i, rest = int(name.split(".")[1]), name.split(".", 2)[2]
            state[name] = merged(i, rest, src[f"blocks.0.{rest}"])
        else:
            state[name] = src[name]
    flat.load_state_dict(state)
    return flat


# ---------------------------------------------------------------- LoRA
ALL_TARGETS = "[attn.c_q, attn.c_k, attn.c_v, attn.proj, mlp.fc, mlp.proj]"


@pytest.mark.parametrize("alpha", [None, 8.0])
def test_lora_is_a_low_rank_update_of_each_pass_weight(alpha):
    """Each pass runs W + (alpha/r)·B_v·A_v: the looped model equals a flat model whose three
    blocks hold those merged weights."""
    r = 2
    a = "null" if alpha is None else alpha
    plan = _plan(f"[{{use: lora, rank: {r}, alpha: {a}, targets: {ALL_TARGETS}}}]")
    looped = _randomised(plan)
    scale = 1.0 if alpha is None else alpha / r
    sd = looped.state_dict()

    def merged(i, rest, w):
        key = f"passes.{i}.lora_{rest[:-len('.weight')].replace('.', '_')}"
        return w + scale * sd[f"{key}_b"] @ sd[f"{key}_a"] if f"{key}_a" in sd else w
    flat = _flat_from_looped(looped, merged)
    with torch.no_grad():
        torch.testing.assert_close(looped(IDX, IDX), flat(IDX, IDX))
    names = [p.name for p in plan.params if p.component == "lora"]
    assert len(names) == 3 * 6 * 2 and "passes.2.lora_mlp_fc_b" in names
    assert plan.param_by_name["passes.0.lora_attn_c_k_a"].shape == (r, D)
    assert plan.param_by_name["passes.0.lora_attn_c_k_b"].shape == (KV, r)
    assert plan.param_by_name["passes.1.lora_mlp_proj_a"].shape == (r, plan.blocks[0].mlp_hidden)


def test_lora_starts_as_the_shared_block():
    """B is zero at init: the adapted model computes what the plain one does."""
    plan = _plan("[{use: lora, targets: [attn.c_q, mlp.proj]}]")
    plain = _plan()
    torch.manual_seed(0)
    m = build(plan)
    p = build(plain)
    p.load_state_dict({k: v for k, v in m.state_dict().items() if "lora" not in k})
    with torch.no_grad():
        torch.testing.assert_close(m(IDX, IDX), p(IDX, IDX))
    assert all(m.get_parameter(n).abs().sum() == 0 for n, _ in m.named_parameters() if n.endswith("_b"))


def test_lora_later_passes_and_where_a_layer_has_no_attention():
    plan = _plan("[{use: lora, passes: later, targets: [attn.c_q, mlp.fc]}]", extra="features: {index: virtual, no_attention: [2]}")
    names = {p.name for p in plan.params if p.component == "lora"}
    # pass 0 owns none (passes: later); virtual layer 2 runs no attention, so no attn.c_q adapter
    assert names == {"passes.1.lora_attn_c_q_a", "passes.1.lora_attn_c_q_b", "passes.1.lora_mlp_fc_a",
                     "passes.1.lora_mlp_fc_b", "passes.2.lora_mlp_fc_a", "passes.2.lora_mlp_fc_b"}
    m = _randomised(plan)
    assert m.runs["main"][0].adapt is None and set(m.runs["main"][2].adapt.table) == {"mlp.fc"}
    # the layer without attention still runs its (adapted) MLP: x + mlp_scale·MLP(n(x)), x = mix(x, x0)
    run, blk = m.runs["main"][2], m.blocks["0"]
    x, x0 = torch.randn(2, 5, D), torch.randn(2, 5, D)
    h = torch.nn.functional.rms_norm(blk.resid_mix[0] * x + blk.resid_mix[1] * x0, (D,))
    own = m.passes["2"]
    fc = h @ blk.mlp.fc.weight.T + (h @ own.lora_mlp_fc_a.T) @ own.lora_mlp_fc_b.T
    want = blk.resid_mix[0] * x + blk.resid_mix[1] * x0 + blk.mlp_scale * (torch.relu(fc).square() @ blk.mlp.proj.weight.T)
    with torch.no_grad():
        torch.testing.assert_close(m._layer(run, x, x0, [x, x], None, {}), want)


def test_lora_on_a_low_rank_key_and_on_a_pass_owned_down_projection():
    plan = _plan("[{use: lora, rank: 3, targets: [attn.c_k_down, attn.c_k, mlp.proj]}]",
                 model=", attention: {k_rank: 8}", extra="sharing: mlp_down")
    assert plan.param_by_name["passes.1.lora_attn_c_k_down_a"].shape == (3, D)
    assert plan.param_by_name["passes.1.lora_attn_c_k_a"].shape == (3, 8)
    m = _randomised(plan)
    run = m.runs["main"][1]
    x = torch.randn(2, 5, plan.blocks[0].mlp_hidden)
    own = m.passes["1"]
    # the pass's own down projection (sharing: mlp_down) is what the adapter adds to
    want = x @ own.mlp_down.weight.T + (x @ own.lora_mlp_proj_a.T) @ own.lora_mlp_proj_b.T
    torch.testing.assert_close(run.adapt("mlp.proj", run.mlp_down, x), want)


# ---------------------------------------------------------------- Legendre
def _p(t: float) -> tuple[float, float]:
    return t, (3 * t * t - 1) / 2     # P_1, P_2 written out


def test_legendre_forms_each_pass_weight_from_the_coefficients():
    """Pass k of 3 runs C_0 + P_1(t_k)·C_1 + P_2(t_k)·C_2 at t = −1, 0, 1: the looped model equals a
    flat model with those weights written out."""
    plan = _plan("[{use: legendre, degree: 2}]")
    looped = _randomised(plan)
    sd = looped.state_dict()

    def merged(i, rest, w):
        stem = rest[:-len(".weight")]
        if f"blocks.0.{stem}.legendre1" not in sd:
            return w
        p1, p2 = _p((-1.0, 0.0, 1.0)[i])
        return w + p1 * sd[f"blocks.0.{stem}.legendre1"] + p2 * sd[f"blocks.0.{stem}.legendre2"]
    flat = _flat_from_looped(looped, merged)
    with torch.no_grad():
        torch.testing.assert_close(looped(IDX, IDX), flat(IDX, IDX))
    coef = [p for p in plan.params if p.component == "legendre"]
    assert len(coef) == 6 * 2 and all(p.owner.path == "blocks.0" for p in coef)
    assert plan.param_by_name["blocks.0.attn.c_k.legendre2"].shape == (KV, D)
    assert plan.param_by_name["blocks.0.mlp.fc.legendre1"].group == "mlp"
    assert plan.param_by_name["blocks.0.attn.proj.legendre1"].group == "attention"


def test_legendre_applies_to_looped_blocks_only_and_checks_the_degree():
    plan = _plan("[{use: legendre, degree: 1, targets: [mlp.fc]}]", order="0,1x2,2", blocks=3)
    assert [p.name for p in plan.params if p.component == "legendre"] == ["blocks.1.mlp.fc.legendre1"]
    assert [l.index for l in plan.layers if "legendre" in l.hooks] == [1, 2]
    with pytest.raises(SpecError, match="degree 2 on block 1, which the order runs 2 times"):
        _plan("[{use: legendre, degree: 2}]", order="0,1x2,2", blocks=3)


def test_legendre_starts_as_the_shared_block_and_adds_no_flops():
    plan, plain = _plan("[{use: legendre, degree: 2}]"), _plan()
    torch.manual_seed(0)
    m = build(plan)
    p = build(plain)
    p.load_state_dict({k: v for k, v in m.state_dict().items() if "legendre" not in k})
    with torch.no_grad():
        torch.testing.assert_close(m(IDX, IDX), p(IDX, IDX))
    assert forward_flops(plan) == forward_flops(plain)


def test_lora_flops_count_both_factors_where_they_run():
    r = 4
    base = forward_flops(_plan())
    plan = _plan(f"[{{use: lora, rank: {r}, targets: [attn.c_q, mlp.proj]}}]")
    hidden = plan.blocks[0].mlp_hidden
    assert forward_flops(plan) - base == 3 * 2 * (r * D + D * r + r * hidden + D * r)


# ---------------------------------------------------------------- random depth
RD = "[{use: random_depth, min: 1, max: 4, distribution: %s}]"


def test_random_depth_paths_and_distribution():
    plan = _plan(RD % "uniform", order="0,1x2,2", blocks=3)
    (phase,) = plan.phases
    assert phase.path == "main" and [p for _, p in phase.choices] == pytest.approx([0.25] * 4)
    depths = {name: plan.paths[name].depth for name, _ in phase.choices}
    assert depths == {"depth3": 3, "main": 4, "depth5": 5, "depth6": 6}
    assert plan.eval_path == "main"
    # the skips are sized by the spec's order; deeper draws use those, shallower ones fewer
    assert plan.paths["depth6"].n_skips == plan.main.n_skips == 2 and plan.paths["depth3"].n_skips == 1
    assert len([p for p in plan.params if p.name == "skip_weights"]) == 1
    assert plan.param_by_name["skip_weights"].shape == (2, D)
    w = _plan("[{use: random_depth, min: 2, max: 3, distribution: weights, weights: [1, 3]}]",
              order="0,1x2,2", blocks=3)
    assert w.phases[0].choices == (("main", 0.25), ("depth5", 0.75))


def test_lognormal_poisson_is_huginns_distribution():
    # σ → 0: λ is mean − min exactly, a Poisson truncated to min..max
    lam = 2.0
    pois = [math.exp(-lam) * lam ** k / math.factorial(k) for k in range(4)]
    assert lognormal_poisson(1, 4, 1 + lam, 1e-4) == pytest.approx([x / sum(pois) for x in pois], rel=1e-6)
    # wide: the mixture's mean before truncation is `mean`
    probs = lognormal_poisson(1, 200, 4.0, 0.5)
    assert sum((n + 1) * p for n, p in enumerate(probs)) == pytest.approx(4.0, rel=1e-4)


def test_the_draw_depends_on_seed_and_step_only_and_follows_the_probabilities():
    plan = _plan(RD % "lognormal_poisson", order="0,1x2,2", blocks=3)
    phase = plan.phases[0]
    draws = [phase.draw(1337, s) for s in range(20000)]
    assert draws == [phase.draw(1337, s) for s in range(20000)]       # every rank, every resume
    assert draws[:50] != [phase.draw(7, s) for s in range(50)]         # another seed, another sequence
    for name, p in phase.choices:
        assert draws.count(name) / len(draws) == pytest.approx(p, abs=0.015)


def test_schedule_flops_are_the_expectation_over_the_draws():
    plan = _plan(RD % "uniform", order="0,1x2,2", blocks=3)
    want = 3 * sum(p * forward_flops(plan, name) for name, p in plan.phases[0].choices)
    assert schedule_flops(plan) == pytest.approx(want)
    assert schedule_flops(plan) < 3 * forward_flops(plan, "depth6")


@pytest.mark.parametrize("components, order, message", [
    (RD % "uniform", "0,1x2,2x2", "exactly one repeat"),
    ("[{use: random_depth, mean: 1}]", "0,1x2,2", "mean 1 must exceed min 1"),
    ("[{use: random_depth, max: 3, distribution: weights, weights: [1]}]", "0,1x2,2", "1 weights for the 3 counts"),
    ("[{use: random_depth, weights: [1, 2]}]", "0,1x2,2", "goes with distribution: weights"),
    ("[{use: random_depth, min: 3}]", "0,1x2,2", "max defaults to the order's loop count 2, below min 3"),
    ("[{use: lora, targets: [attn.c_k_down]}]", "0x2", "needs a low-rank key projection"),
    ("[{use: lora, targets: [attn.c_q, attn.c_q]}]", "0x2", "listed twice"),
    ("[{use: legendre, targets: [attn.gate]}]", "0x2", "component legendre: targets"),
])
def test_bad_settings_are_one_clear_error(components, order, message):
    blocks = 1 if order == "0x2" else 3
    with pytest.raises(SpecError, match=message):
        _plan(components, order=order, blocks=blocks)


# ---------------------------------------------------------------- compile, emit
ALL = ("[{use: lora, rank: 2, targets: [attn.c_q, mlp.proj]}, {use: legendre, degree: 1}, "
       "{use: random_depth, min: 1, max: 3, distribution: uniform}]")


@pytest.mark.slow
def test_compiles_fullgraph_with_one_graph_per_path():
    """One graph per path a run executes: each training path once (with grad), the evaluation path
    once (no grad); drawn steps after that never recompile."""
    from torch._dynamo.testing import CompileCounterWithBackend
    plan = _plan(ALL, order="0,1x2,2", blocks=3)
    m = _randomised(plan)
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(m, backend=counter, fullgraph=True, dynamic=False)
    batch = lambda: (torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))  # noqa: E731
    train_paths = [name for name, _ in plan.phases[0].choices]
    for name in train_paths:
        compiled(*batch(), path=name).backward()
    with torch.no_grad():
        compiled(*batch(), path=plan.eval_path)
    assert counter.frame_count == len(train_paths) + 1 == 4
    with torch.compiler.set_stance("fail_on_recompile"):
        for step in range(6):
            compiled(*batch(), path=plan.phases[0].draw(plan.train.seed, step)).backward()
        idx, tgt = batch()
        torch.testing.assert_close(compiled(idx, tgt, path="depth5"), m(idx, tgt, path="depth5"))


def test_the_emitted_model_equals_the_built_one_on_every_path(tmp_path):
    from recurc.emit import emit
    plan = _plan(ALL, order="0,1x2,2", blocks=3)
    m = _randomised(plan)
    src = emit(plan, "raw")
    assert "class LoRAHook" in src and "class LegendreHook" in src and "class Projections" in src
    script = tmp_path / "train_gpt.py"
    script.write_text(src)
    ns = runpy.run_path(str(script), run_name="emitted")
    emitted = ns["build_model"](ns["PLAN"], torch.device("cpu"))
    emitted.load_state_dict(m.state_dict())
    assert repr(ns["PLAN"].phases) == repr(plan.phases)     # the draws' distribution travels as data
    with torch.no_grad():
        for path in plan.paths:
            torch.testing.assert_close(emitted(IDX, path=path), m(IDX, path=path))


# ---------------------------------------------------------------- the example specs
SPECS = {"lora_iverbovoy": "iverbovoy_3x4.yaml", "legendre_run_t": "../prelude_film.yaml",
         "random_depth_run_t": "../prelude_film.yaml"}
SMALL = ["model.dim=64", "model.vocab_size=128", "model.heads=4", "model.kv_heads=2", "model.seq_len=16"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_example_specs_show_estimate_and_build(name):
    from recurc.estimate import estimate
    from recurc.report import show_data
    path = ROOT / "specs" / "seeds" / f"{name}.yaml"
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("seeds/" in first or "FEATURES.md" in first)
    plan = make_plan(load_spec(path))
    base = make_plan(load_spec(path.parent / SPECS[name]))
    e = estimate(plan, suggest=False)
    assert e.total_bytes <= plan.budget and show_data(plan)["params"]["unique"] == plan.unique_params
    meta = build(plan, device="meta")
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == {p.name: p.shape for p in plan.params}
    extra = plan.unique_params - base.unique_params
    if name == "lora_iverbovoy":      # 12 passes × (A, B) on attn.proj (880²) and mlp.proj (880 × 2640)
        assert extra == 12 * (2 * 880 + 880 * 2 + 2 * 2640 + 880 * 2) == 126_720
    elif name == "legendre_run_t":    # two more copies of every matrix of the four looped blocks
        core = sum(p.numel for p in base.params if p.name.startswith(tuple(f"blocks.{b}." for b in range(1, 5)))
                   and p.name.endswith(".weight"))
        assert extra == 2 * core
    else:
        assert extra == 0 and len(plan.phases[0].choices) == 5 and plan.eval_path == "main"
        assert plan.paths[plan.eval_path].canonical == "0,(1..4)x3,5"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_example_specs_train_a_step(name, tmp_path):
    from runtime.demo import build_demo_data
    demo = build_demo_data(tmp_path / "demo")
    small = SMALL + ["model.vocab_size=1024", "train.tokens_per_step=256", "train.val_tokens=512",
                     "train.warmdown_steps=1", "train.warmup_steps=0"]
    r = subprocess.run(
        [sys.executable, "-m", "runtime.train", str(ROOT / "specs" / "seeds" / f"{name}.yaml"), *small, "--steps", "1",
         "--device", "cpu", "--no-compile", "--no-export", "--val-every", "0", "--out", str(tmp_path / "run"),
         "--data", demo.train_pattern, "--val", demo.val_pattern, "--tokenizer", str(demo.tokenizer_path)],
        capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if s.get("event") == "step"]
    assert len(losses) == 1 and math.isfinite(losses[0])


# ---------------------------------------------------------------- training: draws, resume, emitted script
RD_SPEC = """\
extends: {tiny}
name: rd_tiny
model: {{seq_len: 64}}
components:
  - {{use: random_depth, min: 1, max: 3, distribution: uniform}}
  - {{use: lora, rank: 2, targets: [attn.c_v]}}
  - {{use: legendre, degree: 1, targets: [mlp.fc]}}
train: {{tokens_per_step: 512, val_tokens: 2048, warmdown_steps: 2, warmup_steps: 0}}
"""


def _paths(log: Path) -> dict[int, str]:
    return {r["step"]: r["path"] for r in map(json.loads, log.read_text().splitlines()) if r.get("event") == "step"}


@pytest.mark.slow
def test_training_draws_the_depth_per_step_and_resumes_the_same_draws(tmp_path):
    from runtime.demo import build_demo_data
    from runtime.train import path_at, training_fraction
    demo = build_demo_data(tmp_path / "demo")
    spec = tmp_path / "rd.yaml"
    spec.write_text(RD_SPEC.format(tiny=json.dumps(str(ROOT / "specs" / "tiny.yaml"))))
    plan = make_plan(load_spec(spec, ["train.iterations=6"]))
    common = [sys.executable, "-m", "runtime.train", str(spec), "--device", "cpu", "--no-compile", "--no-export",
              "--val-every", "0", "--log-every", "1", "--data", demo.train_pattern, "--val", demo.val_pattern,
              "--tokenizer", str(demo.tokenizer_path)]

    def run(out: str, steps: int, *extra: str) -> None:
        r = subprocess.run([*common, "--steps", str(steps), "--out", str(tmp_path / out), *extra],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]

    run("full", 6)
    full = _paths(tmp_path / "full" / "log.jsonl")
    want = {s + 1: path_at(plan, training_fraction(s, 0.0, 6, None), s) for s in range(6)}
    assert full == want and len(set(full.values())) > 1
    run("part", 3, "--ckpt-every", "3", "train.iterations=6")
    run("part", 6, "--resume", "--log-json", str(tmp_path / "resumed.jsonl"))
    assert _paths(tmp_path / "resumed.jsonl") == {s: full[s] for s in (4, 5, 6)}


@pytest.mark.slow
def test_the_emitted_script_trains_with_random_depth(tmp_path):
    import os

    from recurc.emit import emit
    from runtime.demo import build_demo_data
    demo = build_demo_data(tmp_path / "demo")
    spec = tmp_path / "rd.yaml"
    spec.write_text(RD_SPEC.format(tiny=json.dumps(str(ROOT / "specs" / "tiny.yaml"))))
    plan = make_plan(load_spec(spec))
    script = tmp_path / "train_gpt.py"
    script.write_text(emit(plan, "lzma"))
    env = {**os.environ, "DATA_PATH": str(demo.out_dir), "TOKENIZER_PATH": str(demo.tokenizer_path),
           "ITERATIONS": "3", "OUT_DIR": str(tmp_path / "emitted"), "TRAIN_LOG_EVERY": "1", "DEVICE": "cpu",
           "COMPILE": "0", "PYTHONPATH": ""}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    paths = _paths(tmp_path / "emitted" / "log.jsonl")
    assert sorted(paths) == [1, 2, 3] and set(paths.values()) <= {"depth4", "main", "depth8"}
    assert (tmp_path / "emitted" / "artifact.bin").exists()
