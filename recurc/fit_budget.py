"""Fit an artifact to its budget at export: never ship one over 16,000,000 bytes.

When the compressed model bytes come out above `target` (budget − code bytes − quant.fit_margin),
the least harmful changes are applied until they fit, each judged by what it does to the weights,
measured, not guessed:

1. selective ±1 pruning (what records do by hand): quantized values of ±1 are set to 0, cheapest
   first, where the cost of one is the squared error it adds to its weight, (w² − (w − q·s)²),
   times the Hessian's diagonal for its column when GPTQ Hessians are at hand (the loss's
   second-order sensitivity to that input). How many: the bytes one pruned value saves are
   measured by packing, and the count is refined (secant steps) until the artifact fits;
2. if pruning up to MAX_PRUNE_FRACTION of the quantized values does not fit, one coarser setting
   of one group: its std clip k × 1.1, or one bit fewer. Each candidate is re-quantized (that
   group only) and packed; the one adding the least (Hessian-weighted) squared error among those
   that fit — with pruning on top where needed — is taken.

`FitReport` lists what changed, the bytes before and after, and the added error; runtime/export.py
adds the validation BPB before and after. numpy only; the artifact format is recurc.quant's, so
a fitted artifact reads back like any other (bits are stored per tensor, scales are stored).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import quant
from .ir import QuantSettings

MAX_PRUNE_FRACTION = 0.02      # of a model's int values: beyond this a clip or bit change is tried
PRUNE_STEPS = 8                # pack() calls the pruning search may make
CLIP_FACTOR = 1.1


@dataclass
class FitReport:
    target: int                         # model bytes allowed
    before: int                         # model bytes as quantized
    after: int                          # model bytes written
    fits: bool
    changes: list[str] = field(default_factory=list)
    pruned: int = 0                     # ±1 values set to 0
    added_error: float = 0.0            # Σ (Hessian-weighted) squared weight error the changes added
    base_error: float = 0.0             # ... and the quantization's own, for scale
    settings: dict[str, Any] = field(default_factory=dict)   # groups whose settings changed

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"changed": self.changed}


def _col_weights(name: str, n: int, hessians: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """Per-column weight of a squared error: diag(H) normalised to mean 1, or 1 without a Hessian."""
    if hessians is not None and name in hessians:
        d = np.clip(np.diag(np.asarray(hessians[name], dtype=np.float64)), 0.0, None)
        m = d.mean()
        if m > 0:
            return (d / m).astype(np.float32)
    return np.ones(n, np.float32)


def _int_tensors(qs: quant.QuantizedState) -> list[quant.QTensor]:
    return [t for t in qs.tensors.values() if t.kind == "int" and t.q is not None and t.q.ndim == 2
            and t.scale is not None and t.scale.ndim == 1]


def _error(qs: quant.QuantizedState, arrays: Mapping[str, np.ndarray], hessians, names=None) -> float:
    """Σ over int matrices of the column-weighted squared difference between weights and artifact."""
    total = 0.0
    for t in _int_tensors(qs):
        if names is not None and t.name not in names:
            continue
        w = np.asarray(arrays[t.name], np.float32)
        d = w - t.q.astype(np.float32) * t.scale.astype(np.float32)[:, None]
        total += float(((d * d) * _col_weights(t.name, w.shape[1], hessians)[None, :]).sum())
    return total


class _Pruner:
    """The ±1 values of a quantized state, cheapest first, and states with the first n set to 0."""

    def __init__(self, qs: quant.QuantizedState, arrays: Mapping[str, np.ndarray], hessians) -> None:
        self.base = qs
        tensors, idx, costs = [], [], []
        for k, t in enumerate(_int_tensors(qs)):
            flat = np.flatnonzero(np.abs(t.q) == 1)
            if not flat.size:
                continue
            w = np.asarray(arrays[t.name], np.float32).reshape(-1)[flat]
            rows, cols = np.divmod(flat, t.q.shape[1])
            s = t.scale.astype(np.float32)[rows]
            qv = t.q.reshape(-1)[flat].astype(np.float32)
            c = (w * w - (w - qv * s) ** 2) * _col_weights(t.name, t.q.shape[1], hessians)[cols]
            tensors.append(t.name)
            idx.append(np.stack([np.full(flat.size, len(tensors) - 1), flat]))
            costs.append(c)
        self.names = tensors
        self.n_values = sum(int(t.q.size) for t in _int_tensors(qs))
        if costs:
            cost = np.concatenate(costs)
            order = np.argsort(cost, kind="stable")
            self.where = np.concatenate(idx, axis=1)[:, order]
            self.cum = np.cumsum(cost[order], dtype=np.float64)
        else:
            self.where = np.zeros((2, 0), np.int64)
            self.cum = np.zeros(0)

    @property
    def available(self) -> int:
        return int(self.where.shape[1])

    def cost(self, n: int) -> float:
        return float(self.cum[n - 1]) if n > 0 else 0.0

    def state(self, n: int) -> quant.QuantizedState:
        out = quant.QuantizedState(dict(self.base.tensors))
        sel = self.where[:, :n]
        for k, name in enumerate(self.names):
            flat = sel[1, sel[0] == k]
            if flat.size:
                t = self.base.tensors[name]
                q = t.q.copy()
                q.reshape(-1)[flat] = 0
                out.tensors[name] = dataclasses.replace(t, q=q)
        return out


def _prune_to_fit(pruner: _Pruner, q: QuantSettings, target: int, limit: int) -> tuple[int, bytes] | None:
    """The fewest cheapest-first prunings (≤ limit) whose artifact fits, found by packing; None if
    even `limit` does not fit."""
    limit = min(limit, pruner.available)
    blob = quant.pack(pruner.base, q)
    if len(blob) <= target:
        return 0, blob
    if limit == 0:
        return None
    worst = quant.pack(pruner.state(limit), q)
    if len(worst) > target:
        return None
    lo, lo_bytes, hi, hi_blob = 0, len(blob), limit, worst   # lo does not fit, hi fits
    for _ in range(PRUNE_STEPS):
        if hi - lo <= max(1, hi // 200):
            break
        # secant on bytes(n), nudged 2 % past the crossing so that most steps land on the fitting side
        slope = (lo_bytes - len(hi_blob)) / (hi - lo)
        n = int(lo + (lo_bytes - target) / max(slope, 1e-9) * 1.02) + 1
        n = min(max(n, lo + 1), hi - 1)
        b = quant.pack(pruner.state(n), q)
        if len(b) <= target:
            hi, hi_blob = n, b
        else:
            lo, lo_bytes = n, len(b)
    return hi, hi_blob


def _coarser(q: QuantSettings, qs: quant.QuantizedState) -> list[tuple[str, str, QuantSettings]]:
    """One-step coarser settings of each group holding int matrices: (group, label, settings)."""
    present = {t.group for t in _int_tensors(qs)}
    out = []
    for g, gq in q.groups.items():
        if g not in present or gq.scheme != "int":
            continue
        if gq.clip.kind == "std":
            k = round(gq.clip.value * CLIP_FACTOR, 3)
            out.append((g, f"{g} std clip k {gq.clip.value:g} → {k:g}",
                        dataclasses.replace(q, groups={**q.groups, g: dataclasses.replace(
                            gq, clip=dataclasses.replace(gq.clip, value=k))})))
        if gq.bits > 2:
            out.append((g, f"{g} int{gq.bits} → int{gq.bits - 1}",
                        dataclasses.replace(q, groups={**q.groups, g: dataclasses.replace(gq, bits=gq.bits - 1)})))
    return out


def fit_to_budget(arrays: Mapping[str, np.ndarray], groups: Mapping[str, str], q: QuantSettings, target: int, *,
                  hessians: Mapping[str, np.ndarray] | None = None,
                  qstate: quant.QuantizedState | None = None, blob: bytes | None = None,
                  device: object = None) -> tuple[bytes, FitReport]:
    """The compressed model bytes, fitted to `target` bytes when they are over (module docstring).

    `arrays`: the float weights the state was quantized from; `qstate` and `blob`: that quantized
    state and its packed bytes (default: made here); `device`: where GPTQ runs (quantize_state)."""
    qs = qstate if qstate is not None else quant.quantize_state(arrays, groups, q, hessians=hessians, device=device)
    blob = blob if blob is not None else quant.pack(qs, q)
    report = FitReport(target=target, before=len(blob), after=len(blob), fits=len(blob) <= target)
    if report.fits:
        return blob, report
    report.base_error = _error(qs, arrays, hessians)
    pruner = _Pruner(qs, arrays, hessians)
    limit = int(MAX_PRUNE_FRACTION * pruner.n_values)
    found = _prune_to_fit(pruner, q, target, limit)
    if found is not None:
        n, blob = found
        report.changes.append(f"pruned {n:,} of {pruner.available:,} ±1 values to 0 (cheapest first)")
        report.pruned, report.added_error = n, pruner.cost(n)
    else:
        best: tuple[float, str, int, bytes, dict] | None = None
        for g, label, q2 in _coarser(q, qs):
            names = [t.name for t in _int_tensors(qs) if t.group == g]
            sub = quant.quantize_state({n: arrays[n] for n in names}, {n: g for n in names}, q2,
                                       hessians=hessians, device=device)
            qs2 = quant.QuantizedState({n: sub.tensors.get(n, t) for n, t in qs.tensors.items()})
            added = _error(qs2, arrays, hessians, names) - _error(qs, arrays, hessians, names)
            p2 = _Pruner(qs2, arrays, hessians)
            got = _prune_to_fit(p2, q2, target, limit)
            if got is None:
                continue
            cost = added + p2.cost(got[0])
            if best is None or cost < best[0]:
                best = (cost, label, got[0], got[1], {g: dataclasses.asdict(q2.groups[g])})
        if best is None:
            report.changes.append("no single clip or bit change with pruning fits: written over the target")
            return blob, report
        report.added_error, label, report.pruned, blob, report.settings = best
        report.changes.append(label)
        if report.pruned:
            report.changes.append(f"pruned {report.pruned:,} ±1 values to 0 (cheapest first)")
    report.after, report.fits = len(blob), len(blob) <= target
    return blob, report


UNFITTED_NAME = "artifact.unfitted.bin"   # beside the artifact, when the fit changed it: its BPB is measured too
