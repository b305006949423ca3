"""Trained-weight profiles: the built-in ones come from our trained runs, a checkpoint's own
profile (`recurc measure --save-profile`) predicts its bytes, bad profiles are clear errors."""
from __future__ import annotations

import dataclasses

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recurc import sizemodel
from recurc.errors import SpecError
from recurc.estimate import estimate
from recurc.plan import make_plan
from recurc.profiles import PROFILES, ROLES, WeightProfile, load_profile, weight_role
from recurc.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Artifact bytes our own exports gave (2×H100 runs, benchmarks/gpu_trained_size.sh; README)
LOOP45_1140_STEPS = 15_419_630
LOOP35_PARALLEL_665_STEPS = 15_578_092


def _predict(spec: str, profile: WeightProfile) -> float:
    plan = make_plan(load_spec(ROOT / "specs" / spec))
    return sizemodel.predict([(p.name, p.shape, p.group) for p in plan.params], plan.quant,
                             sizemodel.ShapeAssumption(profile=profile)).total


def test_builtin_profile_is_the_fit_of_the_committed_run():
    """recurc-sp8192-short is exactly what fit_profile gives on the run's committed statistics."""
    plan = make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml"))
    fitted = sizemodel.fit_profile(sizemodel.read_tensor_entropies(RESULTS / "loop45_sp8192_1140steps_tensors.json"),
                                   plan.quant, "recurc-sp8192-short")
    assert fitted.beta == PROFILES["recurc-sp8192-short"].beta
    assert fitted.gptq_bits == PROFILES["recurc-sp8192-short"].gptq_bits


def test_trained_runs_predicted_within_about_one_percent():
    """In-sample (the run the profile was fitted to) and out-of-sample (another spec, 665 steps)."""
    prof = PROFILES["recurc-sp8192-short"]
    assert abs(_predict("loop45_sp8192.yaml", prof) / LOOP45_1140_STEPS - 1) < 0.002
    assert abs(_predict("loop35_parallel_sp8192.yaml", prof) / LOOP35_PARALLEL_665_STEPS - 1) < 0.0125
    # and the Gaussian assumption is an upper bound for both
    for spec, real in (("loop45_sp8192.yaml", LOOP45_1140_STEPS), ("loop35_parallel_sp8192.yaml", LOOP35_PARALLEL_665_STEPS)):
        assert _predict(spec, PROFILES["gaussian"]) > real


def test_band_belongs_to_the_profile_in_use():
    """The interval is the profile's own measured width, not a span over every built-in profile."""
    for weights in ("trained", "recurc-sp8192-short", "gaussian"):
        e = estimate(make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml", [f"quant.weights={weights}"])),
                     suggest=False)
        band = PROFILES[weights].band
        assert e.weights == weights and e.band == pytest.approx(band, abs=1e-6)
        assert e.model_bytes_low == pytest.approx(e.model_bytes * (1 - band), rel=2e-4)
        assert e.model_bytes_high == pytest.approx(e.model_bytes * (1 + band), rel=2e-4)
    short = estimate(make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml", ["quant.weights=recurc-sp8192-short"])),
                     suggest=False)
    assert short.model_bytes_low <= LOOP45_1140_STEPS <= short.model_bytes_high


def test_profile_follows_the_training_budget():
    """auto: the 10-minute 8×H100 budget is fully trained, a 1,140-step run is short."""
    full = estimate(make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml")), suggest=False)
    assert full.weights == "trained" and full.tokens_seen > 1e9 and "fully trained" in full.weights_reason
    short = estimate(make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml", [
        "train.iterations=1140", "train.tokens_per_step=196608", "train.max_wallclock_seconds=null"])), suggest=False)
    assert short.weights == "recurc-sp8192-short" and short.tokens_seen == 1140 * 196608
    assert short.model_bytes < full.model_bytes
    stated = estimate(make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml", ["quant.weights=gaussian"])),
                      suggest=False)
    assert stated.weights == "gaussian" and stated.weights_reason == "stated in quant.weights"


def test_profile_json_round_trip_keeps_percentile_shape_and_band():
    prof = PROFILES["trained"]
    again = WeightProfile.from_json(prof.to_json())
    assert again == prof and again.beta_of("input", "percentile") != again.beta_of("input")


def test_roles():
    assert weight_role("tok_emb.weight", "embeddings") == "embedding"
    assert weight_role("blocks.3.mlp.proj.weight", "mlp") == "mlp_out"
    assert weight_role("blocks.3.attn.proj.weight", "attention") == "attn_out"
    assert weight_role("blocks.3.attn.c_q.weight", "attention") == "input"
    assert weight_role("blocks.3.mlp.fc.weight", "mlp") == "input"


def test_bad_profiles_are_clear_errors(tmp_path):
    with pytest.raises(SpecError, match=r"unknown weight profile 'nope'") as e:
        load_spec(ROOT / "specs" / "tiny.yaml", ["quant.weights=nope"])
    assert "override" in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "beta": {"input": 1.0}, "gptq_bits": {}}))
    with pytest.raises(SpecError, match="lacks role"):
        load_spec(ROOT / "specs" / "tiny.yaml", [f"quant.weights={bad}"])
    with pytest.raises(SpecError, match=r"weight profile .*missing\.json"):
        load_spec(ROOT / "specs" / "tiny.yaml", [f"quant.weights={tmp_path / 'missing.json'}"])


def test_profile_file_is_relative_to_the_spec(tmp_path):
    prof = WeightProfile.make("mine", {r: 1.0 for r in ROLES}, {r: 0.0 for r in ROLES})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.json").write_text(prof.to_json())
    spec = tmp_path / "sub" / "s.yaml"
    spec.write_text(f"extends: {ROOT / 'specs' / 'tiny.yaml'}\nname: s\nquant:\n  weights: mine.json\n")
    loaded = load_spec(spec)
    assert load_profile(loaded.quant.weights) == prof
    default = estimate(make_plan(load_spec(ROOT / "specs" / "tiny.yaml")), suggest=False).model_bytes
    assert estimate(make_plan(loaded), suggest=False).model_bytes < default   # heavier tails: fewer bytes


def _gg(rng: np.random.Generator, shape: tuple[int, ...], beta: float, sigma: float) -> np.ndarray:
    a = math.sqrt(math.gamma(1 / beta) / math.gamma(3 / beta))
    g = rng.gamma(1 / beta, 1.0, size=shape) ** (1 / beta)
    return (sigma * a * g * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)


SDCLIP = ["quant.groups.attention.bits=6", "quant.groups.attention.clip.kind=std",
          "quant.groups.attention.clip.value=12.85", "quant.groups.mlp.bits=6", "quant.groups.mlp.clip.kind=std",
          "quant.groups.mlp.clip.value=12.85", "quant.container=recurc", "quant.compressor.name=brotli",
          "quant.compressor.level=11", "quant.compressor.byte_shuffle=true", "model.dim=256", "quant.passthrough_max_numel=4096"]
TRUE_BETA = {"embedding": 2.0, "input": 1.1, "attn_out": 1.8, "mlp_out": 0.7}


def _heavy_tailed_checkpoint(plan, path: Path, seed: int) -> None:
    import torch
    rng = np.random.default_rng(seed)
    sd = {}
    for p in plan.params:
        if p.group in ("scalars", "per_pass"):
            sd[p.name] = torch.from_numpy(rng.normal(1.0, 0.3, p.shape).astype(np.float32))
        else:   # std 0.5 keeps the embedding's percentile clip clear of its 1/127 floor, as trained ones are
            sd[p.name] = torch.from_numpy(_gg(rng, p.shape, TRUE_BETA[weight_role(p.name, p.group)], 0.5))
    torch.save({"model": sd}, path)


@pytest.mark.slow
def test_save_profile_then_predict_another_checkpoint(tmp_path):
    """The calibration loop: fit a profile on one checkpoint, name it in the spec, and the next
    checkpoint with the same kind of weights is predicted within 1 % (the default profile, which
    assumes near-Gaussian weights, is ~2 % high on these heavy-tailed ones)."""
    pytest.importorskip("torch")
    from recurc.measure import measure
    # the near-Gaussian profile stated (tiny's own resolves to a short-run profile by its budget)
    plan = make_plan(load_spec(ROOT / "specs" / "tiny.yaml", [*SDCLIP, "quant.weights=trained"]))
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    _heavy_tailed_checkpoint(plan, first, seed=1)
    _heavy_tailed_checkpoint(plan, second, seed=2)
    before = measure(second, plan)
    assert before.error_pct > 1.0
    out = subprocess.run([sys.executable, "-m", "recurc", "measure", str(ROOT / "specs" / "tiny.yaml"), str(first),
                          *SDCLIP, "--save-profile", str(tmp_path / "fitted.json")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    prof = load_profile(str(tmp_path / "fitted.json"))
    for role in ("embedding", "input", "mlp_out"):
        assert abs(prof.beta_of(role) - TRUE_BETA[role]) < 0.1, (role, prof.beta)
    tuned = make_plan(load_spec(ROOT / "specs" / "tiny.yaml", [*SDCLIP, f"quant.weights={tmp_path / 'fitted.json'}"]))
    after = measure(second, tuned)
    assert abs(after.error_pct) < 1.0, after.error_pct
    assert after.model_bytes == before.model_bytes


def test_save_profile_must_be_json(tmp_path):
    pytest.importorskip("torch")
    from recurc.measure import measure
    plan = make_plan(load_spec(ROOT / "specs" / "tiny.yaml"))
    with pytest.raises(SpecError, match=r"\.json"):
        measure(tmp_path / "x.pt", plan, save_profile=tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()


def test_weights_profile_is_not_part_of_the_plan_identity(tmp_path):
    """The profile changes predictions only: resume checks and emitted PLAN_HASH stay put."""
    from recurc.emit import plan_hash
    a = make_plan(load_spec(ROOT / "specs" / "tiny.yaml"))
    b = make_plan(load_spec(ROOT / "specs" / "tiny.yaml", ["quant.weights=gaussian"]))
    assert a.canonical() == b.canonical() and plan_hash(a) == plan_hash(b)


def test_gptq_entropies_only_for_gptq_tensors():
    from recurc import quant
    from recurc.measure import tensor_entropies
    plan = make_plan(load_spec(ROOT / "specs" / "tiny.yaml", ["quant.groups.mlp.gptq=true"]))
    rng = np.random.default_rng(0)
    arrays = {p.name: rng.normal(0, 0.5, p.shape).astype(np.float32) for p in plan.params}
    groups = {p.name: p.group for p in plan.params}
    hess = {n: np.eye(a.shape[1]) for n, a in arrays.items() if groups[n] == "mlp" and a.ndim == 2}
    state = quant.quantize_state(arrays, groups, plan.quant, hessians=hess)
    rounded = quant.quantize_state(arrays, groups, dataclasses.replace(plan.quant, groups={
        g: dataclasses.replace(gq, gptq=False) for g, gq in plan.quant.groups.items()}))
    recs = tensor_entropies(rounded, plan.quant, state)
    assert {r.group for r in recs if r.entropy_gptq is not None} == {"mlp"}
    assert all(r.entropy_gptq is None for r in recs if r.group != "mlp")
