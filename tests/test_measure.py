"""recurc.measure and `recurc measure`: exact bytes through the export path, vs the prediction."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from recurc import quant  # noqa: E402
from recurc.errors import SpecError  # noqa: E402
from recurc.measure import measure  # noqa: E402
from recurc.plan import make_plan  # noqa: E402
from recurc.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECURC = str(Path(sys.executable).with_name("recurc"))
PRED_TOL = 0.02   # random N(0, 0.5) weights vs the trained-weight size model, total bytes


def _plan(*overrides: str):
    # the synthetic weights below are near-Gaussian: the `trained` profile describes them (tiny's own
    # budget resolves to the short run's heavy-tailed one, which measure now reads as estimate does)
    return make_plan(load_spec(ROOT / "specs" / "tiny.yaml", ["quant.weights=trained", *overrides]))


def _state(plan, seed: int = 0) -> dict:
    """Random weights (an init), then perturbed as a few steps of training would: none is zero."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for p in plan.params:
        if p.group in ("scalars", "per_pass"):
            t = torch.ones(p.shape)
        else:
            t = 0.5 * torch.randn(p.shape, generator=g)
        sd[p.name] = t + 0.05 * torch.randn(p.shape, generator=g)
    return sd


def _reference_bytes(plan, sd) -> int:
    arrays = {p.name: sd[p.name].float().numpy() for p in plan.params}
    groups = {p.name: p.group for p in plan.params}
    return len(quant.pack(quant.quantize_state(arrays, groups, plan.quant), plan.quant))


@pytest.mark.parametrize("overrides", [(), ("quant.groups.attention.bits=6", "quant.groups.attention.clip.kind=std",
                                            "quant.groups.attention.clip.value=12.85", "quant.container=recurc",
                                            "quant.compressor.name=lzma")])
def test_measure_is_exact_and_near_prediction(tmp_path, overrides):
    plan = _plan(*overrides)
    sd = _state(plan)
    ck = tmp_path / "ck.pt"
    torch.save({"model": sd, "step": 7}, ck)
    out = tmp_path / "artifact.bin"
    m = measure(ck, plan, output=out)
    assert m.model_bytes == _reference_bytes(plan, sd) == out.stat().st_size
    assert m.total_bytes == m.model_bytes + 47_642
    assert sum(m.measured_by_group.values()) + m.measured_container == m.model_bytes
    assert m.raw_bytes_by_group["embeddings"] == 1024 * 128 + 1024 * 2
    assert abs(m.error_pct) < 100 * PRED_TOL, m.error_pct
    for g in ("embeddings", "attention", "mlp"):   # the quantized groups, each within 2 % too
        assert abs(m.predicted_by_group[g] / m.measured_by_group[g] - 1) < 0.02, g
    print(f"tiny {overrides}: measured {m.model_bytes:,}, predicted {m.predicted_model_bytes:,} "
          f"({m.error_pct:+.2f} %), {m.seconds:.1f} s")
    json.dumps(m.to_dict())


def test_measure_predicts_under_the_specs_profile(tmp_path):
    """measure's prediction is estimate's: the profile the spec resolves to (here auto: a short run)."""
    from recurc.estimate import estimate
    plan = make_plan(load_spec(ROOT / "specs" / "tiny.yaml"))
    ck = tmp_path / "ck.pt"
    torch.save({"model": _state(plan), "step": 7}, ck)
    e = estimate(plan, suggest=False)
    assert e.weights == "recurc-sp8192-short"
    assert measure(ck, plan).predicted_model_bytes == e.model_bytes


def test_raw_state_dict_and_compiled_prefix(tmp_path):
    plan = _plan()
    sd = _state(plan, seed=1)
    ck = tmp_path / "raw.pt"
    torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, ck)
    assert measure(ck, plan).model_bytes == _reference_bytes(plan, sd)


def test_mismatch_is_a_clear_error(tmp_path):
    plan = _plan()
    sd = _state(plan)
    sd.pop("blocks.3.mlp.fc.weight")
    sd["extra.weight"] = torch.zeros(3)
    sd["tok_emb.weight"] = torch.zeros(1000, 128)
    with pytest.raises(SpecError) as ei:
        measure(sd, plan)
    msg = str(ei.value)
    assert "missing from the checkpoint: blocks.3.mlp.fc.weight" in msg
    assert "not in the spec: extra.weight" in msg
    assert "tok_emb.weight: checkpoint (1000, 128), spec (1024, 128)" in msg
    with pytest.raises(SpecError, match="does not exist"):
        measure(tmp_path / "nope.pt", plan)


@pytest.mark.slow
def test_cli(tmp_path):
    plan = _plan()
    ck = tmp_path / "ck.pt"
    sd = _state(plan)
    torch.save(sd, ck)
    r = subprocess.run([RECURC, "measure", "specs/tiny.yaml", str(ck), "--json"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["model_bytes"] == _reference_bytes(plan, sd)
    r = subprocess.run([RECURC, "measure", "specs/baseline.yaml", str(ck)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not match spec" in r.stderr
