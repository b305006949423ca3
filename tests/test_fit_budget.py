"""Never over budget: export fits the artifact to the spec's budget (recurc/fit_budget.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recurc import quant
from recurc.fit_budget import UNFITTED_NAME, fit_to_budget
from recurc.plan import make_plan
from recurc.spec import load_spec

torch = pytest.importorskip("torch")

from runtime.export import read_artifact  # noqa: E402
from runtime.log import read_json_log  # noqa: E402
from runtime.train import main  # noqa: E402
from test_train import FAST, TINY, data_args, demo  # noqa: E402,F401  (demo is a fixture)

CODE = 47_642   # tiny.yaml's code.bytes (from baseline.yaml)


def _export(tmp: Path, demo, *overrides: str) -> dict:
    log = tmp / "log.jsonl"
    assert main([TINY, *FAST, *overrides, "--steps", "8", *data_args(demo), "--out", str(tmp),
                 "--log-json", str(log), "--val-every", "0"]) == 0
    return next(r for r in read_json_log(log) if r["event"] == "export")


def test_export_fits_a_budget_set_just_under_the_real_artifact(demo, tmp_path):
    free = _export(tmp_path / "free", demo)
    assert free["fit_budget"]["changed"] is False and free["fits"]
    real = free["model_bytes"]
    budget = CODE + real - 300                      # 300 bytes too small for what training gives
    fitted = _export(tmp_path / "fitted", demo, f"budget={budget}", "quant.fit_margin=50")
    fit = fitted["fit_budget"]
    assert fit["before"] == real and fit["changed"] and fit["fits"]
    assert fitted["model_bytes"] == fit["after"] <= budget - CODE - 50
    assert fitted["total_bytes"] <= budget and fitted["fits"]
    assert any("pruned" in c for c in fit["changes"]) and fit["pruned"] > 0
    assert any("fit to the budget" in n for n in fitted["notes"])
    # the log carries the BPB of the artifact before the fit and of the one written
    assert "unfitted_bpb" in fitted and "post_bpb" in fitted
    assert (tmp_path / "fitted" / UNFITTED_NAME).stat().st_size == real
    # the fitted artifact reads back; it differs from the unfitted one by exactly the pruned values
    plan = make_plan(load_spec(TINY, [*FAST, f"budget={budget}"]))
    a = quant.unpack(Path(fitted["artifact"]).read_bytes(), plan.quant)
    b = quant.unpack((tmp_path / "fitted" / UNFITTED_NAME).read_bytes(), plan.quant)
    changed = sum(int((a.tensors[n].q != b.tensors[n].q).sum()) for n in a.tensors if a.tensors[n].q is not None)
    assert changed == fit["pruned"]
    assert set(read_artifact(fitted["artifact"], plan)) == {p.name for p in plan.params}


def test_fit_budget_off_by_flag(demo, tmp_path):
    free = _export(tmp_path / "a", demo)
    over = _export(tmp_path / "b", demo, f"budget={CODE + free['model_bytes'] - 300}", "quant.fit_budget=false")
    assert over["fit_budget"] is None and not over["fits"] and over["model_bytes"] == free["model_bytes"]


def _gg(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    g = rng.gamma(1 / beta, 1.0, size=shape) ** (1 / beta)
    return (0.05 * g * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)


def test_far_over_takes_a_measured_clip_or_bit_change():
    """Pruning ±1 values cannot remove 8 % of an int6 artifact within its cap: one coarser setting
    of one group (the one adding the least squared error), with pruning on top, does."""
    plan = make_plan(load_spec(TINY, ["quant.passthrough_max_numel=0", "quant.groups.mlp={bits: 6, clip: {kind: std, value: 12.85}}",
                                      "quant.groups.attention={bits: 6, clip: {kind: std, value: 12.85}}",
                                      "quant.compressor={name: lzma}"]))
    rng = np.random.default_rng(0)
    arrays = {p.name: (_gg(rng, p.shape, 1.5) if len(p.shape) == 2 else rng.normal(1, .1, p.shape).astype(np.float32))
              for p in plan.params}
    groups = {p.name: p.group for p in plan.params}
    real = len(quant.pack(quant.quantize_state(arrays, groups, plan.quant), plan.quant))
    blob, rep = fit_to_budget(arrays, groups, plan.quant, int(real * 0.92))
    assert rep.fits and len(blob) == rep.after <= rep.target and rep.before == real
    assert any("→" in c for c in rep.changes), rep.changes
    assert rep.settings and rep.added_error > 0
    back = quant.dequantize_state(quant.unpack(blob, plan.quant, groups))
    assert set(back) == set(arrays)
    # an artifact already within the target is left alone
    same, rep2 = fit_to_budget(arrays, groups, plan.quant, real)
    assert not rep2.changed and len(same) == real
