"""recurc.estimate and `recurc estimate`: baseline figure, no torch, speed, FLOPs, budget guard."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recurc.errors import SpecError
from recurc.estimate import estimate
from recurc.plan import make_plan
from recurc.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
BASELINE_BYTES = 15_815_847   # FACTS.md: naive baseline, int8 + zlib-9
BASELINE_CODE = 47_642
RECURC = str(Path(sys.executable).with_name("recurc"))


def _est(name: str, *overrides: str):
    return estimate(make_plan(load_spec(SPECS / name, list(overrides))))


def test_baseline_bytes_within_1pct_and_total():
    e = _est("baseline.yaml")
    assert abs(e.model_bytes / BASELINE_BYTES - 1) < 0.01, e.model_bytes
    assert e.model_bytes_low <= BASELINE_BYTES <= e.model_bytes_high
    assert e.code_bytes == BASELINE_CODE
    assert e.total_bytes == e.model_bytes + BASELINE_CODE
    assert e.headroom == 16_000_000 - e.total_bytes and e.fits and not e.suggestions
    assert e.unique_params == 17_059_912 == e.effective_params
    assert sum(e.bytes_by_group.values()) + e.container_bytes == e.model_bytes
    assert e.raw_bytes == sum(e.raw_bytes_by_group.values()) == 17_178_912
    json.dumps(e.to_dict())


def test_baseline_flops_plausible():
    e = _est("baseline.yaml")
    n = 17_059_912
    attn = 9 * 2 * 2 * 512 * (1024 + 1) / 2
    matrices = 9 * (2 * 512 * 512 + 2 * 256 * 512 + 2 * 1024 * 512) + 1024 * 512
    assert e.flops_per_token_eval == pytest.approx(2 * matrices + attn)
    assert e.flops_per_token_train == pytest.approx(3 * e.flops_per_token_eval)
    assert 6 * n * 0.99 < e.flops_per_token_train - 3 * attn < 6 * n * 1.001   # ≈ 6N + attention
    print(f"baseline FLOPs/token train {e.flops_per_token_train:,.0f} eval {e.flops_per_token_eval:,.0f}")


def test_recurrence_counts_flops_per_pass_not_bytes():
    flat, looped = _est("baseline.yaml", "blocks=9", 'order="0..8"'), _est(
        "baseline.yaml", 'order="0..3,(4,5)x2,6..8"')
    assert looped.unique_params == flat.unique_params + 512   # same blocks; one more U-Net skip row (11 layers)
    assert looped.effective_params > flat.effective_params
    assert looped.flops_per_token_train > flat.flops_per_token_train
    assert abs(looped.model_bytes - flat.model_bytes) < 0.001 * flat.model_bytes


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_every_spec_estimates(spec):
    e = _est(spec)
    assert e.model_bytes_low <= e.model_bytes <= e.model_bytes_high
    assert e.total_bytes == e.model_bytes + e.code_bytes
    print(f"{spec}: {e.unique_params:,} params, model {e.model_bytes:,} [{e.model_bytes_low:,}..{e.model_bytes_high:,}]"
          f", total {e.total_bytes:,}, fits={e.fits}")


def test_estimate_never_imports_torch():
    code = ("import sys; from recurc.estimate import estimate; from recurc.plan import make_plan; "
            "from recurc.spec import load_spec; "
            "e = estimate(make_plan(load_spec('specs/loop45x2.yaml'))); assert e.suggestions; "
            "import recurc.estimate_cli; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    r = subprocess.run([sys.executable, "-X", "importtime", RECURC, "estimate", "specs/baseline.yaml"],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    assert "recurc.estimate" in r.stderr and "torch" not in r.stderr


def test_cli_speed_and_output():
    """The target is 0.5 s wall on an idle machine; the assert is loose (shared CI machines)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([RECURC, "estimate", "specs/baseline.yaml"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"recurc estimate specs/baseline.yaml: {wall:.2f} s wall, {cpu:.2f} s CPU, load {os.getloadavg()[0]:.1f}")
    assert r.returncode == 0, r.stderr
    assert "15,8" in r.stdout and "headroom" in r.stdout and "fits" in r.stdout
    assert cpu < 1.5


def test_cli_json():
    r = subprocess.run([RECURC, "estimate", "specs/baseline.yaml", "model.dim=768", "--json"], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    d = json.loads(r.stdout)
    assert d["fits"] is False and d["suggestions"] and d["budget"] == 16_000_000
    r = subprocess.run([RECURC, "estimate", "specs/loop45x2.yaml"], cwd=ROOT, capture_output=True, text=True,
                       check=True)
    assert "OVER BUDGET" in r.stdout and "quant.groups.mlp.bits=" in r.stdout


OVER = [("baseline.yaml", ["model.dim=768"]),
        ("loop45x2.yaml", []),
        ("loop45_sp8192.yaml", ["quant.groups.attention.bits=8", "quant.groups.mlp.bits=8"]),
        ("loop45_sp8192.yaml", ["quant.weights=gaussian"])]   # Gaussian weights: 3.2 % over


@pytest.mark.parametrize("spec,overrides", OVER)
def test_over_budget_suggestions_each_fit(spec, overrides):
    e = _est(spec, *overrides)
    assert not e.fits and e.suggestions
    costs = [s.cost for s in e.suggestions]
    assert costs == sorted(costs)
    for s in e.suggestions:
        applied = _est(spec, *overrides, *s.overrides)
        assert applied.fits and applied.total_bytes == s.total_bytes, (s.change, applied.total_bytes)
        print(f"{spec} {overrides}: {s.change}: {s.total_bytes:,}")


def test_suggestion_kinds():
    kinds = {s.kind for s in _est("loop45_sp8192.yaml", "quant.weights=gaussian").suggestions}
    assert {"clip", "bits.mlp", "mlp_width"} <= kinds
    # a loop that carries its own bytes (untied per-pass MLPs): one loop fewer is a candidate
    e = _est("baseline.yaml", "blocks=9", 'order="0..3,(4,5)x3,6..8"', "sharing=attention")
    assert not e.fits
    assert any(s.kind == "loops" for s in e.suggestions), [s.change for s in e.suggestions]

