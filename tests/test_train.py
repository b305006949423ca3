"""Training loop: schedule math, Muon, optimizer groups from the Plan, and a short run whose loss falls."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from recurc.plan import make_plan
from recurc.spec import load_spec
from runtime.log import format_human, read_json_log
from runtime.optim import Muon, build_optimizers, param_groups, zeropower_via_newtonschulz5
from runtime.train import build_model, lr_scale, main, path_at, plan_accumulation, training_fraction

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "specs" / "tiny.yaml")
# Small enough for a loaded 2-core CI box: 8 sequences of 64 tokens per step.
FAST = ["model.seq_len=64", "train.tokens_per_step=512", "train.val_tokens=2048", "train.warmup_steps=1"]


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    from runtime.demo import build_demo_data
    return build_demo_data(tmp_path_factory.getbasetemp() / "demo")


def data_args(demo) -> list[str]:
    return ["--data", demo.train_pattern, "--val", demo.val_pattern, "--tokenizer", str(demo.tokenizer_path)]


# ---------------------------------------------------------------- schedule math
def test_lr_scale_warmdown_by_steps():
    t = load_spec(TINY, ["train.warmdown_steps=10", "train.lr_warmup_steps=0"]).train
    assert lr_scale(0, 0.0, t, 100, None) == 1.0
    assert lr_scale(89, 0.0, t, 100, None) == 1.0
    assert lr_scale(90, 0.0, t, 100, None) == pytest.approx(1.0)
    assert lr_scale(95, 0.0, t, 100, None) == pytest.approx(0.5)
    assert lr_scale(99, 0.0, t, 100, None) == pytest.approx(0.1)


def test_lr_scale_warmdown_by_wallclock_and_warmup():
    t = load_spec(TINY, ["train.warmdown_steps=10", "train.lr_warmup_steps=4"]).train
    assert lr_scale(0, 0.0, t, 1000, None) == pytest.approx(0.25)
    # 1 s per step so far, 10 warmdown steps = 10 s; 5 s left before a 100 s cap → half way down
    assert lr_scale(95, 95.0, t, 1000, 100.0) == pytest.approx(0.5)
    assert lr_scale(50, 50.0, t, 1000, 100.0) == 1.0
    assert lr_scale(120, 100.0, t, 1000, 100.0) == 0.0


def test_training_fraction_and_phases():
    plan = make_plan(load_spec(TINY, ["schedule.loops_at=0.5"]))
    assert [(p.start, p.path) for p in plan.phases] == [(0.0, "before"), (0.5, "main")]
    assert path_at(plan, training_fraction(49, 0.0, 100, None)) == "before"
    assert path_at(plan, training_fraction(50, 0.0, 100, None)) == "main"
    assert path_at(plan, training_fraction(10, 60.0, 100, 100.0)) == "main"  # wall-clock is further along


def test_plan_accumulation():
    assert plan_accumulation(524_288, 8, 1024, 65_536) == (1, 65_536)
    assert plan_accumulation(524_288, 1, 1024, 65_536) == (8, 65_536)
    assert plan_accumulation(8192, 2, 128, 1024) == (4, 1024)
    with pytest.raises(ValueError):
        plan_accumulation(1000, 3, 128, 1024)


# ---------------------------------------------------------------- optimizer
def test_newton_schulz_is_nearly_orthogonal():
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    o = zeropower_via_newtonschulz5(g, steps=5)
    sv = torch.linalg.svdvals(o)
    assert sv.min() > 0.5 and sv.max() < 1.3


def test_optimizer_groups_come_from_the_plan():
    plan = make_plan(load_spec(TINY))
    model = build_model(plan, torch.device("cpu"))
    groups = param_groups(model, plan)
    muon_names = {n for n, _ in groups["muon"]}
    assert "blocks.1.attn.c_q.weight" in muon_names and "blocks.2.mlp.fc.weight" in muon_names
    assert {n for n, _ in groups["embeddings"]} == {"tok_emb.weight"}
    opts = build_optimizers(model, plan, plan.train)
    seen = [p for o in opts.optimizers for g in o.param_groups for p in g["params"]]
    assert len(seen) == len({id(p) for p in seen}) == len(plan.params)  # shared blocks: once
    assert any(isinstance(o, Muon) for o in opts.optimizers)


def test_human_line_format():
    line = format_human("step", dict(step=120, steps=150, loss=4.1234, lr_scale=0.8, tok_s=12345.0, elapsed=12.34))
    assert line == "step 120/150 loss 4.1234 lr_scale 0.80 tok/s 12,345 elapsed 12.3s"


# ---------------------------------------------------------------- a short run
@pytest.mark.slow
def test_loss_falls_on_demo_data(demo, tmp_path):
    log = tmp_path / "log.jsonl"
    rc = main([TINY, *FAST, "train.warmdown_steps=5", "--steps", "30", *data_args(demo), "--out",
               str(tmp_path), "--log-json", str(log), "--log-every", "1", "--no-export", "--val-every", "0"])
    assert rc == 0
    recs = read_json_log(log)
    losses = [r["loss"] for r in recs if r["event"] == "step"]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 1.0, (first, last)
    final = [r for r in recs if r["event"] == "final"][0]
    assert final["val_bpb"] < 3.5 and final["ranks_agree"]
    assert (tmp_path / "checkpoint.pt").is_file()


def test_attention_kernel_choice_sets_the_sdpa_flags():
    """--attention-kernel flash gives the challenge's kernel (cuDNN off, flash on, the
    memory-efficient one kept as the fallback for masks); auto leaves torch's flags alone."""
    from runtime.train import select_attention_kernel
    b = torch.backends.cuda
    flags = (b.flash_sdp_enabled(), b.cudnn_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled())
    try:
        select_attention_kernel("flash")
        assert (b.flash_sdp_enabled(), b.cudnn_sdp_enabled(), b.mem_efficient_sdp_enabled()) == (True, False, True)
        select_attention_kernel("auto")
        assert (b.flash_sdp_enabled(), b.cudnn_sdp_enabled()) == (True, False)
        with pytest.raises(ValueError, match="unknown attention kernel"):
            select_attention_kernel("xformers")
    finally:
        for enable, on in zip((b.enable_flash_sdp, b.enable_cudnn_sdp, b.enable_mem_efficient_sdp,
                               b.enable_math_sdp), flags):
            enable(on)


def test_recompute_far_apart_reaches_the_partitioner():
    """`recurc train --recompute-far-apart` is passed on to runtime.train, which lifts torch's
    ban on recomputing values used far apart (bounded chains); off restores the values torch had."""
    import argparse
    import torch._functorch.config as fc
    from recurc.runtime_cli import _runtime_argv, add_train_options
    from runtime.train import allow_far_apart_recompute
    p = argparse.ArgumentParser()
    p.add_argument("overrides", nargs="*")
    add_train_options(p)
    assert "--recompute-far-apart" in _runtime_argv(p.parse_args(["--recompute-far-apart"]))
    assert "--recompute-far-apart" not in _runtime_argv(p.parse_args([]))
    before = (fc.ban_recompute_used_far_apart, fc.max_dist_from_bw)
    try:
        allow_far_apart_recompute(True)
        assert not fc.ban_recompute_used_far_apart and fc.max_dist_from_bw == 4
        allow_far_apart_recompute(True)      # twice: off must still restore torch's own values
    finally:
        allow_far_apart_recompute(False)
    assert (fc.ban_recompute_used_far_apart, fc.max_dist_from_bw) == before
