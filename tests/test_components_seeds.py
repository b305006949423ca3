"""The seed per-pass components (recurc/components/seeds.py, recurc/nn/seeds.py): each hook's output
inside a built model against a hand-written formula on the same weights, the parameter table
against the built module, FLOPs, fullgraph compilation without recompiles, the emitted script,
the example specs and one-line errors for bad settings."""
from __future__ import annotations

import math
import runpy
from pathlib import Path

import pytest
import torch

from recurc.build import build
from recurc.errors import SpecError
from recurc.estimate import forward_flops
from recurc.plan import make_plan
from recurc.spec import load_spec, spec_from_text

from model_helpers import randomised_model

ROOT = Path(__file__).resolve().parents[1]
D = 32
BASE = """
name: seeds
model: {{vocab_size: 64, dim: 32, heads: 4, kv_heads: 2, seq_len: 16}}
blocks: 3
order: "0,1x3,2"
per_pass: {{scope: looped}}
{extra}
"""
IDX = torch.tensor([[5, 1, 7, 7, 2, 1, 9, 3], [0, 4, 4, 8, 6, 2, 3, 1]])


def _plan(components: str):
    return make_plan(spec_from_text(BASE.format(extra=f"components: {components}" if components else "")))


def _model(components: str):
    plan = _plan(components)
    return plan, randomised_model(plan)


def _calls(m, name: str) -> list[tuple]:
    """Run the model once, recording every call of one hook's `post`: (own, x_in, x, prev, out)."""
    hook, calls = m.hooks[name], []
    inner = hook.post

    def post(own, x_in, x, prev):
        out = inner(own, x_in, x, prev)
        calls.append((own, x_in, x, prev, out))
        return out
    hook.post = post
    with torch.no_grad():
        m(IDX)
    return calls


def _rms(x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def test_output_ln_normalizes_the_update():
    plan, m = _model("[{use: output_ln, eps: 0.001}]")
    calls = _calls(m, "output_ln")
    assert len(calls) == 3                              # the three passes of block 1, scope looped
    for own, x_in, x, _, out in calls:
        torch.testing.assert_close(out, x_in + own.out_ln_gain * _rms(x - x_in, 1e-3))
    assert [p.name for p in plan.params if "out_ln" in p.name] == [f"passes.{v}.out_ln_gain" for v in (1, 2, 3)]


@pytest.mark.parametrize("per_channel", [True, False])
def test_birkhoff_mix_is_the_first_row_of_a_doubly_stochastic_matrix(per_channel):
    plan, m = _model(f"[{{use: birkhoff_mix, per_channel: {str(per_channel).lower()}, init_logit: 1.5}}]")
    width = D if per_channel else 1
    # only passes with a previous pass own θ, initialised as the spec says
    assert {p.name: (p.shape, p.init) for p in plan.params if "birkhoff" in p.name} == {
        f"passes.{v}.birkhoff_logit": ((width,), "const:1.5") for v in (2, 3)}
    calls = _calls(m, "birkhoff_mix")
    assert len(calls) == 2
    for own, _, x, prev, out in calls:
        s = torch.sigmoid(own.birkhoff_logit)
        M = torch.stack([torch.stack([s, 1 - s]), torch.stack([1 - s, s])])      # (2, 2, width)
        torch.testing.assert_close(M.sum(0), torch.ones(2, width))
        torch.testing.assert_close(M.sum(1), torch.ones(2, width))
        torch.testing.assert_close(out, M[0, 0] * x + M[0, 1] * prev)


def test_exit_gate_scales_the_update_per_token():
    _, m = _model("[{use: exit_gate}]")
    calls = _calls(m, "exit_gate")
    assert len(calls) == 3
    for own, x_in, x, _, out in calls:
        g = torch.sigmoid(_rms(x_in) @ own.exit_gate_w[0] + own.exit_gate_b[0])     # (B, T)
        torch.testing.assert_close(out, x_in + g[..., None] * (x - x_in))


def test_gru_carry_is_a_gru_cell_between_passes():
    r = 4
    plan, m = _model(f"[{{use: gru_carry, rank: {r}}}]")
    assert {p.name.split(".")[-1]: p.shape for p in plan.params if p.name.startswith("passes.2.")} == {
        "gru_down_x": (r, D), "gru_down_h": (r, D), "gru_w_ih": (3 * r, r), "gru_w_hh": (3 * r, r),
        "gru_b_ih": (3 * r,), "gru_b_hh": (3 * r,), "gru_up": (D, r)}
    assert not any(p.name.startswith("passes.1.") for p in plan.params)    # a first pass has no carry
    calls = _calls(m, "gru_carry")
    assert len(calls) == 2
    cell = torch.nn.GRUCell(r, r)
    for own, _, x, prev, out in calls:
        a, h = _rms(x) @ own.gru_down_x.T, _rms(prev) @ own.gru_down_h.T
        gi, gh = a @ own.gru_w_ih.T + own.gru_b_ih, h @ own.gru_w_hh.T + own.gru_b_hh
        reset = torch.sigmoid(gi[..., :r] + gh[..., :r])
        update = torch.sigmoid(gi[..., r:2 * r] + gh[..., r:2 * r])
        n = torch.tanh(gi[..., 2 * r:] + reset * gh[..., 2 * r:])
        new = (1 - update) * n + update * h
        torch.testing.assert_close(out, x + new @ own.gru_up.T)
        # the same equations as PyTorch's GRUCell on the same weights
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(own, "gru_" + name.replace("weight", "w").replace("bias", "b")))
            torch.testing.assert_close(cell(a.reshape(-1, r), h.reshape(-1, r)).reshape(new.shape), new)


def test_the_carry_starts_as_identity():
    """At the declared init (U = 0) the GRU carry adds nothing, whatever the cell computes."""
    plan = _plan("[{use: gru_carry}]")
    m, base = build(plan), build(_plan(""))
    base.load_state_dict({k: v for k, v in m.state_dict().items() if k in base.state_dict()})
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "gru_b" in name:
                p.normal_(0, 0.3)
        assert all(p.abs().sum() == 0 for n, p in m.named_parameters() if n.endswith("gru_up"))
        torch.testing.assert_close(m(IDX), base(IDX))


def test_flops_count_every_matrix_where_it_runs():
    r = 8
    base = forward_flops(_plan(""))
    # exit gate: a (1, d) row on each of the three looped passes
    assert forward_flops(_plan("[{use: exit_gate}]")) - base == 3 * 2 * D
    # GRU carry: D_x, D_h, W_ih, W_hh, U on the two later passes
    assert forward_flops(_plan(f"[{{use: gru_carry, rank: {r}}}]")) - base == 2 * 2 * (3 * r * D + 6 * r * r)
    # Output-LN and Birkhoff mixing are elementwise
    assert forward_flops(_plan("[{use: output_ln}, {use: birkhoff_mix}]")) == base


ALL = "[{use: output_ln}, {use: exit_gate}, {use: birkhoff_mix}, {use: gru_carry, rank: 4}]"


@pytest.mark.slow
def test_all_four_compile_fullgraph_without_recompiles():
    _, m = _model(ALL)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    batch = lambda: (torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))  # noqa: E731
    idx, tgt = batch()
    compiled(idx, tgt).backward()
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(2):
            compiled(*batch()).backward()
        torch.testing.assert_close(compiled(idx, tgt), m(idx, tgt))


def test_the_emitted_script_carries_the_seed_components(tmp_path):
    from recurc.emit import emit
    plan, m = _model(ALL)
    src = emit(plan, "raw")
    for cls in ("OutputLNHook", "BirkhoffMixHook", "ExitGateHook", "GRUCarryHook"):
        assert f"class {cls}" in src
    script = tmp_path / "train_gpt.py"
    script.write_text(src)
    ns = runpy.run_path(str(script), run_name="emitted")
    emitted = ns["build_model"](ns["PLAN"], torch.device("cpu"))
    emitted.load_state_dict(m.state_dict())
    for path in plan.paths:
        torch.testing.assert_close(emitted(IDX, path=path), m(IDX, path=path))


# the seed specs that use the seed per-pass components (others describe seed systems without them;
# tests/test_records.py covers every one)
SPECS = [p for p in sorted((ROOT / "specs" / "seeds").glob("*.yaml"))
         if any(f"use: {c}" in p.read_text() for c in ("output_ln", "birkhoff_mix", "exit_gate", "gru_carry"))]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_example_spec_builds_and_runs_forward_backward(path):
    plan = make_plan(load_spec(path))
    assert {u.name for u in plan.components} & {"output_ln", "birkhoff_mix", "exit_gate", "gru_carry"}
    assert path.read_text().lstrip().startswith("#") and "seeds/" in path.read_text().splitlines()[0]
    small = make_plan(load_spec(path, overrides=["model.dim=64", "model.vocab_size=128", "model.heads=4",
                                                 "model.kv_heads=2", "model.seq_len=16"]))
    m = build(small)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {p.name: p.shape for p in small.params}
    idx = torch.randint(0, 128, (2, 16))
    loss = m(idx, idx)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for n, p in m.named_parameters() if n.endswith(("out_ln_gain", "gru_up")))


@pytest.mark.parametrize("bad, message", [
    ("[{use: gru_carry, rank: 0}]", "component gru_carry: rank: Input should be greater than or equal to 1"),
    ("[{use: birkhoff_mix, logit: 1}]", "component birkhoff_mix: logit: unknown setting"),
    ("[{use: output_ln, eps: -1}]", "component output_ln: eps"),
])
def test_bad_settings_are_one_clear_error(bad, message):
    with pytest.raises(SpecError, match=message):
        _plan(bad)


@pytest.mark.slow
def test_a_seed_spec_trains_and_exports(tmp_path):
    """Two training steps of a tiny model using all four, through the runtime, to an artifact."""
    import json
    import subprocess
    import sys

    from runtime.demo import build_demo_data
    demo = build_demo_data(tmp_path / "demo")
    spec = tmp_path / "seeds.yaml"
    spec.write_text(f"extends: {json.dumps(str(ROOT / 'specs' / 'tiny.yaml'))}\nname: seeds_tiny\n"
                    f"components: {ALL}\n"
                    "train: {tokens_per_step: 1024, val_tokens: 2048, warmdown_steps: 1, warmup_steps: 0}\n")
    r = subprocess.run(
        [sys.executable, "-m", "runtime.train", str(spec), "--steps", "2", "--device", "cpu", "--no-compile",
         "--out", str(tmp_path / "run"), "--data", demo.train_pattern, "--val", demo.val_pattern,
         "--tokenizer", str(demo.tokenizer_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if s.get("event") == "step"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert (tmp_path / "run" / "artifact.bin").exists()
