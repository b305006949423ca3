"""Exact artifact bytes of a checkpoint through the export path, against the prediction.

`measure(checkpoint, plan) -> Measurement`: load a torch state dict (raw, or a dict with a
"model" key; `_orig_mod.` / `module.` prefixes of compiled / DDP models are dropped), check its
names and shapes against the Plan, then run exactly what runtime/export.py runs:
`quant.quantize_state` (fp32 copies of the weights, Plan order, Plan groups) and `quant.pack`.
`model_bytes` is len(pack(...)): the artifact's model bytes.

Per-group breakdown: each group's payload (int values, then scales, then passthrough bytes, byte
shuffled when the spec asks) compressed alone with the spec's compressor; what the whole artifact
costs beyond their sum is the container (serialization + the compressor's framing), so the
measured groups and container add up to the real total, like the prediction's.

GPTQ groups need calibration Hessians; without `hessians` they are rounded (what the export does
with H = I), which the note in the result says.
"""
from __future__ import annotations

import dataclasses

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import quant
from .atomic import atomic_write
from .errors import SpecError
from .safeio import load_torch
from .plan import Plan
from .ir import GROUPS, QuantSettings

PREFIXES = ("_orig_mod.", "module.")


@dataclass
class Measurement:
    name: str
    checkpoint: str
    model_bytes: int                           # len(quant.pack(quantize_state(...))): exact
    code_bytes: int | None
    total_bytes: int | None
    budget: int
    fits: bool | None
    measured_by_group: dict[str, int]          # each group's payload compressed alone
    measured_container: int                    # model_bytes - sum(measured_by_group)
    raw_bytes_by_group: dict[str, int]
    predicted_model_bytes: int
    predicted_low: int
    predicted_high: int
    predicted_by_group: dict[str, int]
    predicted_container: int
    error_pct: float                           # 100 (predicted - measured) / measured
    within_interval: bool
    sigma_by_group: dict[str, float] = field(default_factory=dict)   # std of the quantized tensors
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- loading
def load_state(checkpoint: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A torch state dict from a file or a mapping: raw, or under a "model" key."""
    import torch
    obj = checkpoint
    if isinstance(checkpoint, (str, Path)):     # a regular file, weights_only: nothing runs
        obj = load_torch(checkpoint, "checkpoint")
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise SpecError(f"the checkpoint holds a {type(obj).__name__}, not a state dict",
                        hint="save model.state_dict(), or a dict with the state dict under 'model'")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue                      # counters and metadata beside the weights; check_state names gaps
        name = str(k)
        for pre in PREFIXES:
            if name.startswith(pre):
                name = name[len(pre):]
        out[name] = v
    return out


def check_state(state: Mapping[str, Any], plan: Plan) -> None:
    """Names and shapes against the Plan; one clear error listing every mismatch."""
    want = {p.name: tuple(p.shape) for p in plan.params}
    have = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    shapes = [f"{n}: checkpoint {have[n]}, spec {want[n]}" for n in want if n in have and have[n] != want[n]]
    if not (missing or extra or shapes):
        return
    lines = []
    for label, items in (("missing from the checkpoint", missing), ("not in the spec", extra),
                         ("shape mismatch", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
            lines.append(f"{len(items)} {label}: {shown}")
    raise SpecError(f"the checkpoint does not match spec {plan.name!r}: " + "; ".join(lines),
                    hint="pass the spec (and overrides) the checkpoint was trained from")


def state_arrays(state: Mapping[str, Any], plan: Plan) -> dict[str, np.ndarray]:
    """fp32 numpy copies in Plan order, as runtime/export.py's state_arrays makes them."""
    return {p.name: state[p.name].detach().float().cpu().numpy() for p in plan.params}


MAX_HESSIAN = 1e30


def _load_hessians(hessians: str | Path | Mapping[str, Any] | None) -> dict[str, np.ndarray] | None:
    if hessians is None:
        return None
    obj = hessians
    where = str(hessians) if isinstance(hessians, (str, Path)) else "the hessians"
    if isinstance(hessians, (str, Path)):
        obj = load_torch(hessians, "hessians file")
    if not isinstance(obj, Mapping):
        raise SpecError(f"{where} holds a {type(obj).__name__}, not a dict of tensor name → Hessian",
                        hint="save {name: H} with torch.save, H the n×n input Hessian of that Linear")
    out = {}
    for k, v in obj.items():
        try:
            h = v.double().cpu().numpy() if hasattr(v, "double") else np.asarray(v, np.float64)
        except (TypeError, ValueError, RuntimeError):
            h = None
        # |entries| beyond MAX_HESSIAN overflow GPTQ's Cholesky factors (1e308 became inf)
        if not isinstance(k, str) or h is None or h.ndim != 2 or h.shape[0] != h.shape[1] \
                or not np.isfinite(h).all() or np.abs(h).max(initial=0.0) > MAX_HESSIAN:
            raise SpecError(f"{where}: the Hessian of {str(k)[:80]!r} is not a finite square matrix "
                            f"with entries of at most {MAX_HESSIAN:g}",
                            hint="each value is the n×n input Hessian (X^T X) of that Linear")
        out[k] = h
    return out


def check_hessians(hs: Mapping[str, np.ndarray], plan: Plan) -> None:
    """Each Hessian given for a Plan tensor is sized by that tensor's input width."""
    shapes = {p.name: p.shape for p in plan.params}
    for name, h in hs.items():
        shape = shapes.get(name)
        if shape is not None and len(shape) == 2 and h.shape != (shape[1], shape[1]):
            raise SpecError(f"the Hessian of {name} is {h.shape[0]}×{h.shape[1]}, its input width is {shape[1]}",
                            hint="pass the Hessians collected for this spec's checkpoint")


# ---------------------------------------------------------------- payloads
def group_payloads(qstate: quant.QuantizedState, spec: QuantSettings) -> dict[str, bytes]:
    """Each group's streams (values, scales, passthrough), laid out like the recurc container."""
    shuffle = spec.compressor.byte_shuffle
    parts: dict[str, list[list[bytes]]] = {g: [[], [], []] for g in GROUPS}

    def put(a: np.ndarray) -> bytes:
        b = np.ascontiguousarray(a).tobytes()
        return quant.byte_shuffle(b, a.dtype.itemsize) if shuffle and a.ndim > 0 else b

    for t in qstate.tensors.values():
        vals, scales, passes = parts[t.group]
        if t.kind == "passthrough":
            assert t.data is not None
            passes.append(put(t.data))
        else:
            assert t.q is not None and t.scale is not None
            vals.append(t.q.tobytes())
            scales.append(put(t.scale))
    return {g: b"".join(b"".join(s) for s in streams) for g, streams in parts.items()}


def _without_gptq(q: QuantSettings) -> QuantSettings:
    groups = {g: dataclasses.replace(gq, gptq=False) for g, gq in q.groups.items()}
    return dataclasses.replace(q, groups=groups)


# ---------------------------------------------------------------- measure
def entropy_bits(q: np.ndarray) -> float:
    """Empirical entropy (bits/value) of int8 quantized values."""
    counts = np.bincount(q.ravel().astype(np.int16) + 128, minlength=256)
    p = counts[counts > 0] / q.size
    return float(-(p * np.log2(p)).sum())


def tensor_entropies(rounded: quant.QuantizedState, q: QuantSettings,
                     gptq_state: quant.QuantizedState | None) -> list:
    """Entropy of each int-quantized tensor's values, rounded, and with GPTQ for the tensors the
    spec GPTQs (when `gptq_state` holds them)."""
    from .sizemodel import TensorEntropy
    out = []
    for name, t in rounded.tensors.items():
        if t.kind == "int" and t.q is not None:
            tp = quant.plan_tensor(t.shape, "float32", t.group, q, name)
            gptqd = gptq_state is not None and tp.gptq
            out.append(TensorEntropy(name, tuple(t.shape), t.group, entropy_bits(t.q),
                                     entropy_bits(gptq_state.tensors[name].q) if gptqd else None))
    return out


def measure(checkpoint: str | Path | Mapping[str, Any], plan: Plan, *,
            hessians: str | Path | Mapping[str, Any] | None = None, output: str | Path | None = None,
            workers: int = 2, save_profile: str | Path | None = None, device: str = "auto") -> Measurement:
    """Quantize + pack a checkpoint exactly as the export does; measured vs predicted bytes.
    `save_profile`: also fit a trained-weight profile (recurc/profiles.py) to these weights and
    write it as JSON, for specs to name in `quant.weights`. `device`: where GPTQ runs
    (recurc/gptq.py; "auto": a GPU if there is one): the export's device gives the export's bytes."""
    from .estimate import code_bytes, muon_recipe, resolve_profile
    from .sizemodel import ShapeAssumption, predict
    if save_profile is not None and not str(save_profile).endswith(".json"):
        raise SpecError(f"a weight profile is a .json file, got {save_profile}", where="<command line>")
    t0 = time.perf_counter()
    state = load_state(checkpoint)
    check_state(state, plan)
    arrays = state_arrays(state, plan)
    groups = {p.name: p.group for p in plan.params}
    q = plan.quant
    notes: list[str] = []
    hs = _load_hessians(hessians)
    if hs is not None:
        check_hessians(hs, plan)
    gptq = [p.name for p in plan.params if p.storage.gptq]
    if gptq and hs is None:
        q_used = _without_gptq(q)
        notes.append(f"{len(gptq)} GPTQ tensors rounded without calibration Hessians (the export's H = I); "
                     "pass --hessians for GPTQ values")
    else:
        q_used = q
        if hs is not None:
            for n in gptq:
                hs.setdefault(n, np.eye(arrays[n].shape[1]))
    qstate = quant.quantize_state(arrays, groups, q_used, hessians=hs, device=_gptq_device(device))
    payloads = group_payloads(qstate, q)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:   # compressors release the GIL
        blob_f = pool.submit(quant.pack, qstate, q_used)
        comp_f = {g: pool.submit(quant.compress, b, q.compressor) for g, b in payloads.items() if b}
        blob = blob_f.result()
        measured = {g: (len(comp_f[g].result()) if g in comp_f else 0) for g in GROUPS}
    if output is not None:
        atomic_write(output, blob)
    if save_profile is not None:
        from .sizemodel import fit_profile
        # without Hessians the measured state is the rounded one already
        rounded = qstate if hs is None else quant.quantize_state(arrays, groups, _without_gptq(q))
        records = tensor_entropies(rounded, q, qstate if hs is not None else None)
        prof = fit_profile(records, q, Path(save_profile).stem,
                           source=f"recurc measure {checkpoint if isinstance(checkpoint, (str, Path)) else '<state>'} "
                                  f"(spec {plan.name}{', GPTQ' if hs is not None else ''})")
        atomic_write(save_profile, prof.to_json().encode())
        notes.append(f"weight profile written to {save_profile}: name it in the spec as quant.weights")
    # predicted for what was quantized (rounding when GPTQ had no Hessians: no GPTQ bits), under the
    # profile and recipe `recurc estimate` reads from the spec
    size = predict([(p.name, p.shape, p.group) for p in plan.params], q_used,
                   ShapeAssumption(profile=resolve_profile(plan)[0], muon=muon_recipe(plan)))
    pred = {g: int(round(size.groups[g].compressed)) for g in GROUPS}
    pmodel, plow, phigh = int(round(size.total)), int(math.floor(size.low)), int(math.ceil(size.high))
    if plan.code.bytes is not None or _has_emit():
        cbytes = code_bytes(plan)[0]
    else:
        cbytes = None
        notes.append(f"code.emit={plan.code.emit}: code bytes need recurc.emit; total not counted")
    sig = {}
    for g in GROUPS:
        xs = [arrays[n] for n, t in qstate.tensors.items() if t.group == g and t.kind != "passthrough"]
        if xs:
            sig[g] = float(np.sqrt(sum(float(np.square(x, dtype=np.float64).sum()) for x in xs)
                                   / sum(x.size for x in xs)))
    model = len(blob)
    total = None if cbytes is None else model + cbytes
    return Measurement(
        name=plan.name, checkpoint=str(checkpoint) if isinstance(checkpoint, (str, Path)) else "<state>",
        model_bytes=model, code_bytes=cbytes, total_bytes=total, budget=plan.budget,
        fits=None if total is None else total <= plan.budget,
        measured_by_group=measured, measured_container=model - sum(measured.values()),
        raw_bytes_by_group=quant.raw_payload_bytes(qstate),
        predicted_model_bytes=pmodel, predicted_low=plow, predicted_high=phigh,
        predicted_by_group=dict(pred), predicted_container=pmodel - sum(pred.values()),
        error_pct=100.0 * (pmodel - model) / model, within_interval=plow <= model <= phigh,
        sigma_by_group=sig, seconds=round(time.perf_counter() - t0, 3), notes=notes)


def _gptq_device(name: str) -> object:
    from .gptq import gptq_device
    return gptq_device(name)


def _has_emit() -> bool:
    import importlib.util
    return importlib.util.find_spec("recurc.emit") is not None


def format_measure(m: Measurement) -> str:
    def n(x) -> str:
        return "—" if x is None else f"{int(x):,}"

    def pct(p, r) -> str:
        return f"{100.0 * (p - r) / r:+.2f}%" if r else ""
    from .estimate_cli import _table
    rows = []
    for g in GROUPS:
        if not (m.raw_bytes_by_group.get(g) or m.measured_by_group.get(g)):
            continue
        rows.append([g, n(m.raw_bytes_by_group[g]), n(m.measured_by_group[g]), n(m.predicted_by_group.get(g, 0)),
                     pct(m.predicted_by_group.get(g, 0), m.measured_by_group[g]),
                     f"{m.sigma_by_group[g]:.4g}" if g in m.sigma_by_group else ""])
    rows.append(["container", "", n(m.measured_container), n(m.predicted_container), "", ""])
    rows.append(["total", n(sum(m.raw_bytes_by_group.values())), n(m.model_bytes), n(m.predicted_model_bytes),
                 pct(m.predicted_model_bytes, m.model_bytes), ""])
    out = [f"{m.name}: {m.checkpoint}", "",
           _table(["group", "raw payload B", "measured B", "predicted B", "error", "weight std"], rows), "",
           f"model bytes   {m.model_bytes:,} measured (exact artifact), predicted {m.predicted_model_bytes:,} "
           f"[{m.predicted_low:,} .. {m.predicted_high:,}] → {'inside' if m.within_interval else 'OUTSIDE'} the interval"]
    if m.total_bytes is not None:
        out.append(f"total         {m.total_bytes:,} / {m.budget:,} (code {m.code_bytes:,})   headroom "
                   f"{m.budget - m.total_bytes:+,}   → {'fits' if m.fits else 'OVER BUDGET'}")
    out.append(f"({m.seconds:.1f} s; groups compressed alone, container = artifact − their sum)")
    out += [f"note: {x}" for x in m.notes]
    return "\n".join(out)
