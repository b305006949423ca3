"""The size model against fully trained published artifacts and our own runs (recurc/calibration.py):
from the spec alone, leave-one-out, anchored on a sibling, and what the band covers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recurc import calibration as cal
from recurc.diff import diff
from recurc.estimate import estimate
from recurc.plan import make_plan
from recurc.profiles import (ANCHOR_BAND, PROFILES, SHORT_BAND, TRAINED_BAND, TRAINED_DECAY_TAU, TRAINED_FP8_BETA,
                             TRAINED_GPTQ_BITS, TRAINED_PCT_BETA)
from recurc.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [r for r in cal.RECORDS if r.kind == "record"]
RUNS = [r for r in cal.RECORDS if r.kind == "run"]


@pytest.fixture(scope="module")
def rows() -> dict[str, cal.Row]:
    return {r.name: r for r in cal.table()}


def _estimate(rec: cal.Record, **kw):
    return estimate(make_plan(load_spec(ROOT / rec.spec)), suggest=False, **kw)


@pytest.mark.parametrize("rec", cal.RECORDS, ids=lambda r: r.name)
def test_record_spec_matches_its_log(rec):
    e = _estimate(rec)
    if rec.approx:
        assert 0 < abs(e.unique_params - rec.params) < 1e-4 * rec.params, rec.approx
    else:
        assert e.unique_params == rec.params


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: r.name)
def test_record_predicted_from_its_spec_within_0p3pct(rec):
    e = _estimate(rec)
    assert e.weights == "trained" and "fully trained" in e.weights_reason
    assert abs(e.model_bytes / rec.model_bytes - 1) < 0.003, (e.model_bytes, rec.model_bytes)
    assert e.model_bytes_low <= rec.model_bytes <= e.model_bytes_high


# Records that alone constrain a parameter of the `trained` profile: left out, it falls back to its
# uninformed value (docs/size-model.md), so their leave-one-out is no test of the model.
UNTESTED = {"Vocab4096_MLPMult4_WD085": "the weight-decay correlation time (the scale floor then reads as inactive)",
            "74M_Ternary": "the FP8 shape (falls back to Gaussian)"}


def test_leave_one_out_within_0p6pct_and_covered_by_the_band(rows):
    assert {r.name for r in rows.values() if not r.tested} == set(UNTESTED)
    for rec in RECORDS:
        row = rows[rec.name]
        if rec.name in UNTESTED:
            continue
        assert abs(row.loo_error) < 0.006, (rec.name, row.loo_error)
        assert abs(row.loo_error) <= TRAINED_BAND, (rec.name, row.loo_error)
    for rec in RUNS:   # our runs: the short profile, fitted on one run, predicting the other
        row = rows[rec.name]
        assert row.profile == "recurc-sp8192-short"
        assert abs(row.loo_error) <= SHORT_BAND and abs(row.error) <= SHORT_BAND


def test_untested_leave_one_out_of_74m_ternary_within_0p6pct(rows):
    """FP8 shape left at the Gaussian's: still within 0.6 %, outside the band (it was not fitted there)."""
    assert 0.0018 < abs(rows["74M_Ternary"].loo_error) < 0.006


@pytest.mark.xfail(strict=True, reason="Vocab4096 alone says how large weight decay keeps the matrices: left out, "
                                       "the clip floor reads as inactive and the prediction is +50 % (docs/size-model.md)")
def test_untested_leave_one_out_of_vocab4096_within_0p6pct(rows):
    assert abs(rows["Vocab4096_MLPMult4_WD085"].loo_error) < 0.006


def test_vocab4096_rounds_under_the_floor():
    """The recipe's std (decay_sigma) keeps every searched clip under the floor's 1.0: its matrices
    round at 1/31, and without weight decay the same spec is predicted +50 % (as before the floor)."""
    from recurc import sizemodel
    from recurc.estimate import muon_recipe
    rec = cal.by_name("Vocab4096_MLPMult4_WD085")
    plan = cal.plan_of(rec)
    lr, wd = muon_recipe(plan)
    for cols in (512, 2048):
        sigma = sizemodel.decay_sigma(PROFILES["trained"], (512, cols), lr, wd)
        assert 0.02 < sigma < 0.15 and 6 * sigma < 1.0
    no_wd = make_plan(load_spec(ROOT / rec.spec, ["train.weight_decay=0"]))
    assert estimate(no_wd, suggest=False).model_bytes > 1.4 * rec.model_bytes


def test_baseline_spec_within_0p3pct():
    e = estimate(make_plan(load_spec(ROOT / "specs" / "baseline.yaml")), suggest=False)
    assert abs(e.model_bytes / 15_815_847 - 1) < 0.003


def test_builtin_constants_are_the_fit_of_the_table(rows):
    fitted = cal.fit_trained(cal.RECORDS)
    assert fitted.beta_of("input", "percentile") == TRAINED_PCT_BETA
    assert fitted.gptq_bits_of("mlp_out") == TRAINED_GPTQ_BITS
    assert fitted.decay_tau == TRAINED_DECAY_TAU and fitted.fp8_beta == TRAINED_FP8_BETA
    assert set(cal.single_record_parameters()) == {"weight-decay correlation time", "FP8 shape"}
    assert cal.band_for(rows.values(), "record") == TRAINED_BAND
    assert cal.band_for(rows.values(), "run") == SHORT_BAND


def test_a_record_joins_the_fit_with_no_code_change():
    """The fit reads only the table: without the percentile records, their parameter falls back to
    the Gaussian's, and the GPTQ figure is fitted on what is left."""
    only_sdclip = cal.fit_trained([cal.by_name("Loop45x2"), cal.by_name("MultiPhaseGlobalSGD")])
    assert only_sdclip.beta_of("input", "percentile") == 2.0
    assert only_sdclip.decay_tau is None and only_sdclip.fp8_beta is None
    assert abs(only_sdclip.gptq_bits_of("input") - TRAINED_GPTQ_BITS) < 0.002


@pytest.mark.parametrize("variant,sibling", [("MultiPhaseGlobalSGD", "Loop45x2"), ("Loop45x2", "MultiPhaseGlobalSGD")])
def test_anchored_prediction_within_0p1pct(variant, sibling):
    v, s = cal.by_name(variant), cal.by_name(sibling)
    e = _estimate(v, anchor=(str(ROOT / s.spec), s.model_bytes))
    assert abs(e.model_bytes / v.model_bytes - 1) < 0.001, (e.model_bytes, v.model_bytes)
    assert e.anchor and e.anchor_bytes == s.model_bytes and e.band == ANCHOR_BAND
    assert e.model_bytes == _estimate(v).model_bytes + e.anchor_correction


def test_anchor_from_the_spec_and_the_command_line(tmp_path):
    v, s = cal.by_name("MultiPhaseGlobalSGD"), cal.by_name("Loop45x2")
    spec = tmp_path / "variant.yaml"
    spec.write_text(f"extends: {ROOT / v.spec}\nquant:\n  anchor: {ROOT / s.spec}={s.model_bytes}\n")
    by_spec = estimate(make_plan(load_spec(spec)), suggest=False)
    out = subprocess.run([sys.executable, "-m", "recurc", "estimate", str(ROOT / v.spec), "--json",
                          "--anchor", f"{ROOT / s.spec}={s.model_bytes:_}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model_bytes"] == by_spec.model_bytes
    text = subprocess.run([sys.executable, "-m", "recurc", "estimate", str(ROOT / v.spec), "--anchor",
                           f"{ROOT / s.spec}={s.model_bytes}"], capture_output=True, text=True).stdout
    assert "anchor correction" in text and "profile trained" in text and "calibration:" in text
    bad = subprocess.run([sys.executable, "-m", "recurc", "estimate", str(ROOT / v.spec), "--anchor", "x.yaml=12a"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.startswith("error: anchor") and "Traceback" not in bad.stderr


def test_short_run_spec_is_predicted_as_short():
    run = cal.by_name("run loop45_sp8192")
    e = _estimate(run)
    assert e.weights == "recurc-sp8192-short" and e.tokens_seen == run.tokens
    assert abs(e.model_bytes / run.model_bytes - 1) < 0.002


def test_may_be_over_only_from_the_band(tmp_path):
    """Point estimate under, band over: a warning and no suggestions; point over: suggestions."""
    rec = cal.by_name("Loop45x2")
    e = _estimate(rec)
    just = e.model_bytes + e.code_bytes + 1000   # fits by 1,000 B, the band's high end does not
    plan = make_plan(load_spec(ROOT / rec.spec, [f"budget={just}"]))
    near = estimate(plan)
    assert near.fits and not near.fits_high and not near.suggestions
    from recurc.estimate_cli import format_estimate
    assert "MAY BE OVER" in format_estimate(near) and "cheapest changes" not in format_estimate(near)
    over = estimate(make_plan(load_spec(ROOT / rec.spec, [f"budget={just - 2000}"])))
    assert not over.fits and over.suggestions


def test_diff_lists_profile_and_anchor(tmp_path):
    s = cal.by_name("Loop45x2")
    a = make_plan(load_spec(ROOT / s.spec))
    b = make_plan(load_spec(ROOT / s.spec, ["quant.weights=gaussian", f"quant.anchor={ROOT / s.spec}=15969408"]))
    d = diff(a, b, estimates=False)
    assert not d.equal
    assert {c.path for c in d.changes if c.section == "size model"} == {"quant.weights", "quant.anchor",
                                                                          "size model profile"}
    assert a.canonical() == b.canonical()        # the Plan's identity (hashes, resume) is unchanged
    run = make_plan(load_spec(ROOT / cal.by_name("run loop45_sp8192").spec))
    assert any(c.path == "size model profile" and (c.a, c.b) == ("trained", "recurc-sp8192-short")
               for c in diff(a, run, estimates=False).changes)
    assert PROFILES["trained"].band == TRAINED_BAND


def test_loop45_code_bytes_are_its_emitted_script():
    """specs/loop45_sp8192.yaml counts the script recurc emits for it (lzma packing, what records
    count: a compressed, wrapped script); it must follow the emitted size as the code grows."""
    from recurc.emit import emitted_code_bytes
    plan = make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml"))
    emitted = emitted_code_bytes(make_plan(load_spec(ROOT / "specs" / "loop45_sp8192.yaml",
                                                     ["code.bytes=null", "code.emit=lzma"])))
    assert abs(plan.code.bytes / emitted - 1) < 0.05, (plan.code.bytes, emitted)
