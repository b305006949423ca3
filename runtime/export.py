"""Export: quantize + compress the trained model through recurc/quant.py, write the artifact,
read it back and measure what the quantization cost.

recurc/quant.py is the one implementation of the format, shared with the size estimator, so the
bytes written here are the bytes the estimator predicts. The steps:

  1. weights → numpy, in Plan order, each with its Plan group;
  2. for groups that ask for GPTQ, Hessians H = Σ xᵀx of each Linear's input over a few
     calibration batches, on the training device (forward hooks; a module shared by several
     passes accumulates all of them, which is right: its weight sees all those inputs);
  3. quantize_state (GPTQ in torch on that device, recurc/gptq.py; under several ranks each
     rank sweeps its share and the codes are gathered) → pack → atomic write of artifact.bin;
  4. read the file back → unpack → dequantize_state → load into the model → validation BPB;
  5. report pre- vs post-export BPB and predicted vs actual bytes; the model's weights are put back.

Artifact bytes (the challenge's count) = code bytes (spec.code.bytes) + compressed model bytes
(the file written here).
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recurc import fit_budget, quant
from recurc.plan import Plan
from recurc.safeio import read_bytes
from runtime.checkpoint import atomic_write_bytes
from runtime.evaluate import EvalResult, autocast_context
from runtime.optim import _world

if TYPE_CHECKING:
    from runtime.train import Trainer

ARTIFACT_NAME = "artifact.bin"
HESSIANS_NAME = "hessians.pt"    # the GPTQ Hessians of the export, for `recurc measure --hessians`
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


def hessian_modules(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """The module whose input gives each named weight's Hessian: its nn.Linear, or for a tied
    embedding (the head's matrix, used through F.linear) the `head_in` module. A shared module is
    listed once, under its first name."""
    wanted = set(names)
    tied = not hasattr(model, "lm_head")
    out: dict[str, nn.Module] = {}
    for mname, mod in model.named_modules():
        pname = "tok_emb.weight" if mname == "head_in" and tied else f"{mname}.weight"
        if (isinstance(mod, nn.Linear) or mname == "head_in") and pname in wanted:
            out[pname] = mod
    return out


@torch.no_grad()
def hessian_sums(model: nn.Module, names: Iterable[str], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 path: str, device: torch.device) -> dict[str, torch.Tensor]:
    """H = mean over tokens of xᵀx (float32, on `device`) for the input x of each module of
    hessian_modules. Run on the uncompiled module: hooks on a compiled one would recompile."""
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

    for pname, mod in hessian_modules(model, names).items():
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
    return {n: sums[n] / counts[n] for n in sums}


def collect_hessians(model: nn.Module, names: Iterable[str], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     path: str, device: torch.device) -> tuple[dict[str, np.ndarray], list[str]]:
    """(float64 numpy Hessians of hessian_sums, names without a module to hook)."""
    names = list(names)
    hs = hessian_sums(model, names, batches, path, device)
    return {n: h.double().cpu().numpy() for n, h in hs.items()}, sorted(set(names) - set(hs))


def _broadcast_hessians(model: nn.Module, names: list[str], batches, path: str, device: torch.device,
                        rank: int) -> dict[str, torch.Tensor]:
    """Rank 0's Hessians on every rank (rank 0 collects them; the others receive), so each rank's
    GPTQ share uses exactly the Hessians one rank alone would."""
    hs = hessian_sums(model, names, batches, path, device) if rank == 0 else {}
    have = [sorted(hs)]   # a hooked module off the path has none: the names travel first
    dist.broadcast_object_list(have, src=0, device=device)
    if rank != 0:
        shapes = {n: p.shape[-1] for n, p in model.named_parameters()}
        hs = {n: torch.empty(shapes[n], shapes[n], dtype=torch.float32, device=device) for n in have[0]}
    for n in have[0]:
        dist.broadcast(hs[n], src=0)
    return hs


# ---------------------------------------------------------------------------- GPTQ over ranks
def balance(costs: list[float], world: int) -> list[int]:
    """An owner rank for each cost: largest first, each to the least-loaded rank (lowest on ties)."""
    load = [0.0] * world
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return owner


def sharded_gptq(device: torch.device, rank: int, world: int) -> quant.GPTQRunner:
    """quantize_state's GPTQ step spread over the ranks of a run: the chunks of recurc/gptq.py
    (fixed by the jobs alone) are balanced over the ranks, each rank sweeps its own, then each
    chunk's codes are broadcast from its owner. A chunk's arithmetic does not depend on which
    rank runs it, so the codes are those of one rank alone (on the same kind of device)."""
    from recurc.gptq import gptq_chunk_cost, gptq_chunks, gptq_sweep

    def run(jobs: list) -> dict[str, np.ndarray]:
        chunks = gptq_chunks(jobs)
        owners = balance([gptq_chunk_cost(jobs, c) for c in chunks], world)
        mine = {k: gptq_sweep([jobs[i] for i in c], device) for k, c in enumerate(chunks) if owners[k] == rank}
        out: dict[str, np.ndarray] = {}
        for k, c in enumerate(chunks):
            t = mine.get(k)
            if t is None:
                t = torch.empty((len(c), *jobs[c[0]].w.shape), dtype=torch.int8, device=device)
            dist.broadcast(t, src=owners[k])
            codes = t.cpu().numpy()
            out.update({jobs[i].name: codes[n] for n, i in enumerate(c)})
        return out
    return run


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
                 device: torch.device | None = None, hessians_path: str | Path | None = None
                 ) -> dict[str, Any] | None:
    """Quantize (with GPTQ Hessians from `calibration` when the spec asks) and write the artifact
    atomically; with `hessians_path`, also the Hessians (float32 {name: H}, what `recurc measure
    --hessians` takes to give these bytes). Returns facts about it.

    Under torch.distributed every rank calls this with the same weights: rank 0 collects the
    Hessians (only its `calibration` is read) and broadcasts them, each rank GPTQs its share
    (sharded_gptq), rank 0 fits, writes and returns the facts; the other ranks return None. The
    bytes are those of one rank alone."""
    t0 = time.perf_counter()
    rank, world = _world()
    notes: list[str] = []
    timing: dict[str, float] = {}
    hessians: dict[str, np.ndarray] | None = None
    want = gptq_tensors(plan)
    device = device or next(model.parameters()).device
    if want:
        if calibration is None and rank == 0:
            raise ValueError("the spec asks for GPTQ; pass calibration batches")
        hs = (_broadcast_hessians(model, want, calibration, plan.eval_path, device, rank) if world > 1
              else hessian_sums(model, want, calibration or [], plan.eval_path, device))
        if hessians_path is not None and rank == 0:
            buf = io.BytesIO()
            torch.save({n: h.cpu() for n, h in hs.items()}, buf)
            atomic_write_bytes(hessians_path, buf.getvalue())
        hessians = {n: h.double().cpu().numpy() for n, h in hs.items()}
        missing = sorted(set(want) - set(hessians))
        for name in missing:  # H = I makes GPTQ's error feedback vanish: plain rounding
            hessians[name] = np.eye(dict(model.named_parameters())[name].shape[1])
        if missing:
            notes.append(f"no Linear input to hook for {', '.join(missing)}: rounded without GPTQ")
        timing["hessian_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    arrays = state_arrays(model, plan)
    qs = quant.quantize_state(arrays, plan_groups(plan), plan.quant, hessians=hessians, device=device,
                              gptq=sharded_gptq(device, rank, world) if world > 1 else None)
    timing["quantize_s"] = time.perf_counter() - t1   # scales + GPTQ
    if rank != 0:
        return None
    t2 = time.perf_counter()
    blob = quant.pack(qs, plan.quant)
    timing["pack_s"] = time.perf_counter() - t2       # serialize + compress (brotli-11: most of it)
    # fitted to the budget when it comes out over (recurc/fit_budget.py)
    code_for_fit = plan.code.bytes or 0   # code.emit: the script's bytes are not known here (note below)
    unfitted_path = Path(out_path).with_name(fit_budget.UNFITTED_NAME)
    unfitted_path.unlink(missing_ok=True)
    fit = None
    if plan.quant.fit_budget:
        t3 = time.perf_counter()
        unfitted = blob
        blob, fit = fit_budget.fit_to_budget(arrays, plan_groups(plan), plan.quant,
                                             plan.budget - code_for_fit - plan.quant.fit_margin,
                                             hessians=hessians, qstate=qs, blob=blob, device=device)
        timing["fit_s"] = time.perf_counter() - t3
        if fit.changed:
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
            "quant_seconds": round(time.perf_counter() - t0, 2),
            **{k: round(v, 2) for k, v in timing.items()}, "ranks": world,
            "hessians": str(hessians_path) if want and hessians_path is not None else None, "notes": notes,
            "fit_budget": fit.to_dict() if fit is not None else None}


def export_run(trainer: "Trainer", pre: EvalResult) -> dict[str, Any]:
    """Export a finished run (all ranks call this): rank 0 writes the artifact, every rank reads
    it back into its model and joins the validation; the trained weights are then restored."""
    from runtime.train import barrier
    plan, d = trainer.plan, trainer.d
    path = trainer.cfg.out / ARTIFACT_NAME
    report: dict[str, Any] = {}
    calib = trainer.calibration_batches(CALIBRATION_BATCHES) if gptq_tensors(plan) and d.main else None
    report = export_model(trainer.base, plan, path, calibration=calib, device=d.device,
                          hessians_path=trainer.cfg.out / HESSIANS_NAME) or {}
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
