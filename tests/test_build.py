"""The built module: exact parameter sets, equivalence with hand-written references, torch.compile."""
import sys
from pathlib import Path

import pytest
import torch

from recurc.build import build
from recurc.plan import make_plan
from recurc.spec import load_spec

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from reference import LoopedReference, RefConfig, Reference  # noqa: E402

SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TINY = ["model.vocab_size=64", "model.dim=32", "model.heads=4", "model.kv_heads=2", "model.seq_len=16"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_module_parameters_equal_the_plan(path):
    model = build(make_plan(load_spec(path)), device="meta")
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {p.name: p.shape for p in model.plan.params}
    assert sum(p.numel() for p in model.parameters()) == model.plan.unique_params
    # shared tensors are stored once: no two state-dict entries alias the same storage
    assert len({v.data_ptr() if v.device.type != "meta" else id(v) for v in state.values()}) == len(state)


def test_baseline_is_exactly_17059912_parameters():
    model = build(make_plan(load_spec(ROOT / "specs/baseline.yaml")), device="meta")
    assert sum(p.numel() for p in model.parameters()) == 17_059_912


def test_shared_block_is_one_object():
    model = build(make_plan(load_spec(ROOT / "specs/loop45x2.yaml", TINY)))
    runs = model.runs["main"]
    assert runs[4].attn is runs[6].attn is model.blocks["4"].attn
    assert runs[5].mlp is runs[7].mlp


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 2 else 0.5) + (1.0 if p.ndim == 1 else 0))


@pytest.mark.parametrize("spec_file,ref_cls,layers", [("baseline.yaml", Reference, 9),
                                                     ("loop45x2.yaml", LoopedReference, 11)])
@pytest.mark.slow
def test_same_loss_as_hand_written_reference(spec_file, ref_cls, layers):
    cfg = RefConfig(vocab_size=64, dim=32, num_layers=layers, num_heads=4, num_kv_heads=2, seq_len=16)
    ref = ref_cls(cfg)
    _randomise(ref)
    ours = build(make_plan(load_spec(ROOT / "specs" / spec_file, TINY)))
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    idx = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    tgt = torch.roll(idx, -1, 1)
    torch.testing.assert_close(ours(idx, tgt), ref(idx, tgt), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(ours(idx, tgt), ref(idx, tgt), rtol=2e-2, atol=2e-2)


# Dynamo traces the same graph whatever the backend; "eager" proves fullgraph / no graph breaks /
# no recompiles cheaply for every spec, "aot_eager" adds the autograd trace for one looped spec.
@pytest.mark.parametrize("path,backend", [(p, "eager") for p in SPECS] + [(ROOT / "specs/loop45x2.yaml", "aot_eager")],
                         ids=lambda v: v.stem if isinstance(v, Path) else v)
@pytest.mark.slow
def test_every_spec_compiles_fullgraph_without_recompiles(path, backend):
    import torch._dynamo as dynamo
    dynamo.reset()
    model = build(make_plan(load_spec(path, TINY + ["model.rope.dims=null", "model.mlp.hidden=null"])))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    idx = torch.randint(0, 64, (2, 16))
    names = [ph.path for ph in model.plan.phases] + [model.plan.eval_path]
    distinct = list(dict.fromkeys(names))
    for name in distinct:  # the first step of each path compiles once
        compiled(idx, torch.roll(idx, -1, 1), path=name).backward()
    dynamo.utils.counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for step in range(3):
            for name in distinct:
                opt.zero_grad()
                loss = compiled(torch.randint(0, 64, (2, 16)), idx, path=name)
                loss.backward()
                opt.step()
    assert not dynamo.utils.counters["graph_break"]
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 0  # nothing new was traced after warm-up


@pytest.mark.parametrize("feature", ["per_pass.cross_repeat_scale=true", "per_pass.iteration_embedding=learned",
                                     "per_pass.iteration_embedding=sinusoidal", "per_pass.film=true",
                                     "per_pass.timestep_scale=true", "per_pass.block_scalars=true",
                                     "per_pass.residual_scale=inv_sqrt_k", "sharing=attention", "sharing=mlp"])
@pytest.mark.parametrize("scope", ["looped", "all"])
@pytest.mark.slow
def test_each_per_pass_feature_alone_builds_and_trains(feature, scope):
    spec = load_spec(ROOT / "specs/baseline.yaml", TINY + ["order=0..3,4x2,5..8", feature, f"per_pass.scope={scope}",
                                                           "schedule.eval_repeats=3"])
    model = build(make_plan(spec))
    assert sum(p.numel() for p in model.parameters()) == model.plan.unique_params
    idx = torch.randint(0, 64, (2, 16))
    for path in model.runs:
        model.zero_grad()
        model(idx, torch.roll(idx, -1, 1), path=path).backward()


def test_schedule_orders_only_run_blocks_of_the_main_order():
    from recurc.errors import SpecError
    with pytest.raises(SpecError, match="main order never runs"):
        make_plan(load_spec(ROOT / "specs/baseline.yaml", TINY + ["order=0,(1,2)x2", "blocks=4",
                                                                   "schedule.eval_order=0,(1,2)x2,3"]))
    # a block run once in `order` but twice at evaluation reuses its own (untied) sub-modules
    plan = make_plan(load_spec(ROOT / "specs/baseline.yaml", TINY + ["order=0,1,2", "blocks=3", "sharing=attention",
                                                                      "per_pass.scope=all",
                                                                      "schedule.eval_order=0,1,1,2"]))
    assert all(layer.mlp.kind == "block" for layer in plan.paths["eval"].layers)
    build(plan)(torch.randint(0, 64, (1, 16)), path="eval")
