"""Export: quantize + compress the trained model through recurc/quant.py, write the artifact,
read it back and measure what the quantization cost.

recurc/quant.py is the one implementation of the format, shared with the size estimator, so the
bytes written here are the bytes the estimator predicts. The steps:

  1. weights → numpy, in Plan order, each with its Plan group;
  2. for groups that ask for GPTQ, Hessians H = Σ xᵀx of each Linear's input over a few
     calibration batches (forward hooks; a module shared by several passes accumulates all of
     them, which is right: its weight sees all those inputs);
  3. quantize_state → pack → atomic write of artifact.bin;
  4. read the file back → unpack → dequantize_state → load into the model → validation BPB;
  5. report pre- vs post-export BPB and predicted vs actual bytes; the model's weights are put back.

Artifact bytes (the challenge's count) = code bytes (spec.code.bytes) + compressed model bytes
(the file written here).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from recurc import fit_budget, quant
from recurc.plan import Plan
from recurc.safeio import read_bytes
from runtime.checkpoint import atomic_write_bytes
from runtime.evaluate import EvalResult, autocast_context

if TYPE_CHECKING:
    from runtime.train import Trainer

ARTIFACT_NAME = "artifact.bin"
CALIBRATION_BATCHES = 4


# ---------------------------------------------------------------------------- state ↔ numpy
def state_arrays(model: nn.Module, plan: Plan) -> dict[str, np.ndarray]:
    """fp32 numpy copies of the parameters, in Plan order (the order the artifact stores)."""
    sd = model.state_dict()
    return {p.name: sd[p.name].detach().float().cpu().numpy() for p in plan.params}


def plan_groups(plan: Plan) -> dict[str, str]:
    return {p.name: p.group for p in plan.params}


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy numpy arrays into the model's parameters of the same names."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, arr in arrays.items():
            p = params[name]
            p.copy_(torch.from_numpy(np.ascontiguousarray(arr)).to(device=p.device, dtype=p.dtype))


# ---------------------------------------------------------------------------- GPTQ Hessians
def gptq_tensors(plan: Plan) -> list[str]:
    """Names of the tensors quant.py will GPTQ-quantize (int scheme, per row, gptq on)."""
    return [p.name for p in plan.params if p.storage.gptq]


@torch.no_grad()
def collect_hessians(model: nn.Module, names: Iterable[str], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     path: str, device: torch.device) -> tuple[dict[str, np.ndarray], list[str]]:
    """H = mean over tokens of xᵀx for the input x of every nn.Linear whose weight is in `names`.

    Returns (hessians, names without a Linear to hook — e.g. a tied embedding used as the head
    through F.linear). Run on the uncompiled module: hooks on a compiled one would recompile.
    """
    wanted = set(names)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook_for(pname: str):
        def hook(_mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            if pname not in sums:
                sums[pname] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
                counts[pname] = 0
            sums[pname].addmm_(x.T, x)
            counts[pname] += x.shape[0]
        return hook

    tied = not hasattr(model, "lm_head")
    for mname, mod in model.named_modules():  # a shared module is listed once, under its first name
        # a tied embedding is the head's matrix: its input statistics are those of `head_in`
        pname = "tok_emb.weight" if mname == "head_in" and tied else f"{mname}.weight"
        if (isinstance(mod, nn.Linear) or mname == "head_in") and pname in wanted:
            handles.append(mod.register_forward_hook(hook_for(pname)))
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            with autocast_context(device):
                model(x.to(device), y.to(device), path=path)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    hessians = {n: (sums[n] / counts[n]).double().cpu().numpy() for n in sums}
    return hessians, sorted(wanted - set(hessians))


# ---------------------------------------------------------------------------- size prediction
def predicted_bytes(plan: Plan) -> tuple[dict[str, float] | None, str]:
    """recurc's size prediction for this Plan, made before training: ({model, low, high}, source)."""
    from recurc.estimate import estimate

    e = estimate(plan, suggest=False)
    return {"model": float(e.model_bytes), "low": float(e.model_bytes_low),
            "high": float(e.model_bytes_high)}, "recurc.estimate"


# ---------------------------------------------------------------------------- artifact
def quantize_model(model: nn.Module, plan: Plan, hessians: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The compressed model bytes of the artifact."""
    q = plan.quant
    qstate = quant.quantize_state(state_arrays(model, plan), plan_groups(plan), q, hessians=hessians)
    return quant.pack(qstate, q)


def artifact_limit(plan: Plan) -> int:
    """The most bytes an artifact of `plan` can inflate to: every value stored as fp32 with room for
    scales (another 4 bytes per value bounds them) and 16 MiB of headers. Anything bigger is damage."""
    values = sum(int(np.prod(p.shape)) for p in plan.params)
    return 8 * values + (16 << 20)


def read_artifact(path: str | Path, plan: Plan) -> dict[str, np.ndarray]:
    """Dequantized float weights of an artifact file: a regular file, read and inflated within
    artifact_limit(plan); a damaged one is one SpecError."""
    limit = artifact_limit(plan)
    blob = read_bytes(path, limit, "artifact")
    qstate = quant.unpack(blob, plan.quant, plan_groups(plan), limit=limit)
    return quant.dequantize_state(qstate)


def export_model(model: nn.Module, plan: Plan, out_path: str | Path, *,
                 calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
                 device: torch.device | None = None) -> dict[str, Any]:
    """Quantize (with GPTQ Hessians from `calibration` when the spec asks) and write the artifact
    atomically. Returns facts about it; call on one rank only."""
    t0 = time.perf_counter()
    notes: list[str] = []
    hessians: dict[str, np.ndarray] | None = None
    want = gptq_tensors(plan)
    if want:
        if calibration is None:
            raise ValueError("the spec asks for GPTQ; pass calibration batches")
        device = device or next(model.parameters()).device
        hessians, missing = collect_hessians(model, want, calibration, plan.eval_path, device)
        for name in missing:  # H = I makes GPTQ's error feedback vanish: plain rounding
            n = dict(model.named_parameters())[name].shape[1]
            hessians[name] = np.eye(n)
        if missing:
            notes.append(f"no Linear input to hook for {', '.join(missing)}: rounded without GPTQ")
    # the artifact, fitted to the budget when it comes out over (recurc/fit_budget.py)
    code_for_fit = plan.code.bytes or 0   # code.emit: the script's bytes are not known here (note below)
    unfitted_path = Path(out_path).with_name(fit_budget.UNFITTED_NAME)
    unfitted_path.unlink(missing_ok=True)
    blob, unfitted, fit = fit_budget.fitted_artifact(
        state_arrays(model, plan), plan_groups(plan), plan.quant, plan.budget - code_for_fit - plan.quant.fit_margin,
        hessians=hessians, enabled=plan.quant.fit_budget)
    if fit is not None and fit.changed:
        atomic_write_bytes(unfitted_path, unfitted)
        notes.append(f"fit to the budget: {'; '.join(fit.changes)} ({fit.before:,} → {fit.after:,} model bytes, "
                     f"target {fit.target:,})")
    path = atomic_write_bytes(out_path, blob)
    file_bytes = path.stat().st_size
    assert file_bytes == len(blob), "artifact on disk differs from the bytes written"
    code = plan.code.bytes
    if code is None:
        notes.append(f"code.emit={plan.code.emit}: code bytes come from `recurc emit`, not counted here "
                     "(nor in fitting the artifact to the budget: leave room with quant.fit_margin)")
    return {"artifact": str(path), "model_bytes": len(blob), "file_bytes": file_bytes, "code_bytes": code,
            "total_bytes": (code or 0) + len(blob), "budget": plan.budget,
            "fits": (code or 0) + len(blob) <= plan.budget, "gptq_tensors": len(want),
            "quant_seconds": round(time.perf_counter() - t0, 2), "notes": notes,
            "fit_budget": fit.to_dict() if fit is not None else None}


def export_run(trainer: "Trainer", pre: EvalResult) -> dict[str, Any]:
    """Export a finished run (all ranks call this): rank 0 writes the artifact, every rank reads
    it back into its model and joins the validation; the trained weights are then restored."""
    from runtime.train import barrier
    plan, d = trainer.plan, trainer.d
    path = trainer.cfg.out / ARTIFACT_NAME
    report: dict[str, Any] = {}
    if d.main:
        calib = trainer.calibration_batches(CALIBRATION_BATCHES) if gptq_tensors(plan) else None
        report = export_model(trainer.base, plan, path, calibration=calib, device=d.device)
    barrier(d)
    trained = {n: p.detach().clone() for n, p in trainer.base.named_parameters()}
    load_arrays(trainer.base, read_artifact(path, plan))
    post = trainer.validate()
    unfitted = path.with_name(fit_budget.UNFITTED_NAME)
    if unfitted.exists():   # the fit changed the artifact: the BPB it would have had, for the log
        load_arrays(trainer.base, read_artifact(unfitted, plan))
        report["unfitted_bpb"] = trainer.validate().bpb
    with torch.no_grad():
        for n, p in trainer.base.named_parameters():
            p.copy_(trained[n])
    pred, source = predicted_bytes(plan)
    report.update(pre_bpb=pre.bpb, post_bpb=post.bpb, bpb_delta=post.bpb - pre.bpb,
                  pre_loss=pre.loss, post_loss=post.loss, prediction_source=source)
    if pred is not None and "model_bytes" in report:
        report.update(predicted_model_bytes=round(pred["model"]),
                      predicted_low=round(pred.get("low", pred["model"])),
                      predicted_high=round(pred.get("high", pred["model"])),
                      prediction_error_pct=100.0 * (pred["model"] - report["model_bytes"]) / report["model_bytes"])
    return report
