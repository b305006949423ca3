"""The one implementation of quantization + serialization + compression of the artifact.

Used by the runtime's export (torch tensors are turned into numpy on the way in) and, for its
pure-numpy parts (`plan_tensor`, stream layout, compressors), by the torch-free size model.
Importing this module never imports torch: only the "torch" container imports it, lazily.

Pipeline:   quantize_state -> pack (serialize + compress) -> unpack -> dequantize_state

Rules (see docs/size-model.md for the reasoning):
- int scheme, 2-D tensors: one scale per row; other shapes: one fp32 per-tensor scale.
  levels [-qmax, qmax], qmax = 2^(b-1)-1.  The row clip is the percentile of |w| (computed
  bit-exactly like `torch.quantile(t.abs(), q, dim=1)`) or k*std(row) (SDClip, population std).
  scale = clip/qmax, floored:
    * percentile rule: at 1/qmax (the baseline's `clamp_min(1/127)`, i.e. the clip is floored at
      1.0; for b=8 this is exactly the baseline),
    * std rule: at 1e-12/qmax only (a floor at 1/qmax would defeat SDClip's point: a step
      proportional to sigma, which is what makes its entropy independent of sigma).
  Values are rounded with the fp32 scale (as the baseline does); the stored scale is fp16/fp32.
  Per-tensor (non-2-D) scale = clip/qmax, or 1.0 when the clip is 0 (baseline behaviour).
  Clip `search` ("GPTQ-lite": of the row quantiles `candidates` of |w|, the one with the least
  squared rounding error, per row or per matrix) floors the scale at 1/qmax like the percentile
  rule (the records' `clamp_min(1/clip_range)`); `absmax` at 1e-12/qmax only. Both round with the
  scale as stored (fp16), so the error they minimise is the one shipped.
- ternary scheme: per row scale = mean|w| (BitNet b1.58 absmean), values round(w/scale) in {-1,0,1};
  with group_size G one scale per G values of the flattened tensor; packing base3 stores 5
  trits a byte (sum of (t_i+1)*3^i), else one int8 a value.
- fp8 scheme: IEEE-style e4m3fn bytes (torch.float8_e4m3fn: bias 7, no infinities, max 448),
  round to nearest even, saturating at ±448; encoded in numpy (`fp8_encode`); with fp8_scale
  "row" each row is divided by absmax/448 first (fp16 scales).
- overrides and rank (quantspec.plan_tensor): per-tensor rules by state-dict name; the rank rule
  ranks its candidates by trace(H) of the Hessians passed (`rank_top`).
- LQER (spec.lqer): after quantizing, the top_k integer matrices by ||W - Q||_F store A (rows x r,
  a_bits, one fp16 scale fitted by least squares) and B = Vᵀ (r x cols, b_bits, fp16 scale per
  b_group columns) of the rank-r SVD of the error; dequantized W = Q + A·B.
- passthrough: non-float tensors as-is; groups with scheme fp16/fp32 at that dtype; float
  tensors with numel <= passthrough_max_numel, or of a group absent from spec.groups, as
  control_dtype for groups "scalars"/"per_pass" and passthrough_dtype otherwise.
- GPTQ (GroupQuant.gptq): column sweep with the upper Cholesky factor of H^-1, 1% dampening,
  blocks of 128 columns (Frantar et al. 2022), row scales fixed before the sweep. No act-order.
  In torch (recurc/gptq.py, imported only when a tensor is GPTQ'd), on the device asked for.
"""
from __future__ import annotations

import fnmatch
import io
import json
import lzma
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from recurc.errors import SpecError
from recurc.ir import GROUPS, Compressor, GroupQuant, QuantSettings, Storage  # noqa: F401
from recurc.quantspec import (Kind,  # noqa: F401
                              plan_tensor, rank_candidates, rank_top_count)

BASELINE_FORMAT = "int8_clean_per_row_v1"
RECURC_TORCH_FORMAT = "recurc_int_per_row_v1"   # torch container, any bits / ternary / shuffle
RECURC_MAGIC = b"RCQ2"   # at the end of the raw container (RCQ1: magic and header first)
STD_RULE_SCALE_FLOOR = 1e-12

GroupsArg = Mapping[str, str] | Callable[[str], str]
# GPTQ jobs (recurc.gptq.GPTQJob) -> int8 codes by name: how quantize_state's GPTQ step is run
GPTQRunner = Callable[[list], Mapping[str, np.ndarray]]


# ----------------------------------------------------------------------------- data types
@dataclass
class LQERFactors:
    """A rank-r correction W ≈ Q + A·B: A = a * a_scale (rows x r), B = b * b_scale per group of
    `b_group` columns (r x cols)."""
    a: np.ndarray           # int8 (rows, r)
    a_scale: np.ndarray     # float16 ()
    b: np.ndarray           # int8 (r, cols)
    b_scale: np.ndarray     # float16 (r, ceil(cols / b_group))
    b_group: int

    def product(self) -> np.ndarray:
        """A·B in float32."""
        bs = np.repeat(self.b_scale.astype(np.float32), self.b_group, axis=1)[:, :self.b.shape[1]]
        return (self.a.astype(np.float32) * np.float32(self.a_scale)) @ (self.b.astype(np.float32) * bs)


@dataclass
class QTensor:
    """One stored tensor. int/ternary: `q` (int8 values) and `scale`; fp8: `q` (uint8 e4m3 codes)
    and `scale` (None unscaled); passthrough: `data`. `q` is always unpacked (one element a
    value); `packing` says how the container stores it."""
    name: str
    group: str
    shape: tuple[int, ...]
    orig_dtype: str
    kind: Kind
    bits: int = 8
    q: np.ndarray | None = None
    scale: np.ndarray | None = None
    data: np.ndarray | None = None
    group_size: int = 0               # ternary: one scale per this many flattened values
    packing: str = "int8"             # "base3": 5 trits a byte in the container
    lqer: LQERFactors | None = None


@dataclass
class QuantizedState:
    tensors: dict[str, QTensor] = field(default_factory=dict)   # insertion order = state order


def _group_of(groups: GroupsArg, name: str) -> str:
    try:
        g = groups(name) if callable(groups) else groups[name]
    except KeyError:
        raise SpecError(f"tensor {name!r} has no group", hint="map every state-dict name to a group") from None
    if g not in GROUPS:
        raise SpecError(f"tensor {name!r}: unknown group {g!r}", hint=f"groups are {', '.join(GROUPS)}")
    return g


# ----------------------------------------------------------------------------- quantizers
def torch_quantile_rows(a: np.ndarray, q: float) -> np.ndarray:
    """Bit-exact `torch.quantile(a, q, dim=1)` for a float32 (rows, n) array without NaNs.

    torch computes rank = q*(n-1) in float32 and interpolates with a fused multiply-add
    (np.quantile differs in the last bit on ~5% of rows); the fma is emulated in float64,
    where the product of two float32 is exact."""
    n = a.shape[1]
    s = np.sort(a, axis=1)
    rank = np.float32(q) * np.float32(n - 1)
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    w = np.float32(rank - np.float32(lo))
    below, above = s[:, lo], s[:, hi]
    d = (above - below).astype(np.float64)
    if abs(w) < 0.5:
        return (below.astype(np.float64) + np.float64(w) * d).astype(np.float32)
    return (above.astype(np.float64) - d * np.float64(np.float32(1.0) - w)).astype(np.float32)


def _row_clip(w2: np.ndarray, gq: GroupQuant) -> np.ndarray:
    """Clip per row of a float32 (rows, n) array."""
    if gq.clip.kind == "percentile":
        return torch_quantile_rows(np.abs(w2), gq.clip.value / 100.0)
    return (np.float32(gq.clip.value) * w2.std(axis=1, dtype=np.float64)).astype(np.float32)


def _row_scale(clip: np.ndarray, gq: GroupQuant, qmax: int) -> np.ndarray:
    floor = np.float32(1.0 / qmax) if gq.clip.kind == "percentile" else np.float32(STD_RULE_SCALE_FLOOR / qmax)
    return np.maximum(clip / np.float32(qmax), floor).astype(np.float32)


def _round_clamp(x: np.ndarray, qmax: int) -> np.ndarray:
    return np.clip(np.round(x), -qmax, qmax).astype(np.int8)


def _quantize_int(w: np.ndarray, plan: Storage) -> tuple[np.ndarray, np.ndarray]:
    """Rounded values and scale of an int tensor that is not GPTQ'd (those: quantize_state)."""
    gq = plan.gq
    assert gq is not None
    qmax = 2 ** (plan.bits - 1) - 1
    if not plan.per_row:   # baseline's per-tensor path: no floor, scale 1.0 when the clip is 0
        flat = w.reshape(1, -1)
        clip = float(_row_clip(flat, gq)[0]) if w.size else 0.0
        scale = np.float32(clip / qmax if clip > 0 else 1.0)
        c = np.float32(clip)
        q = _round_clamp(np.clip(w, -c, c) / scale, qmax)
        return q, np.array(scale, dtype=np.float32)
    if gq.clip.kind in ("absmax", "search"):
        rounding, stored = _row_scales(w, plan)
        return _round_clamp(w / rounding[:, None], qmax), stored
    clip = _row_clip(w, gq) if w.size else np.zeros(w.shape[0], np.float32)
    scale = _row_scale(clip, gq, qmax)
    clipped = np.maximum(np.minimum(w, clip[:, None]), -clip[:, None])
    return _round_clamp(clipped / scale[:, None], qmax), scale.astype(plan.scale_dtype)


def _row_scales(w: np.ndarray, plan: Storage) -> tuple[np.ndarray, np.ndarray]:
    """(the float32 row scales values are rounded with, the scales as stored) of a per-row int
    tensor. Clip absmax/search round with the stored (fp16) scale, so the error they minimise is
    the one shipped; percentile/std round with the fp32 scale, as the baseline does."""
    gq = plan.gq
    assert gq is not None
    qmax = 2 ** (plan.bits - 1) - 1
    if gq.clip.kind in ("absmax", "search"):
        stored = _searched_scale(w, gq, qmax, plan.scale_dtype)
        return stored.astype(np.float32), stored
    clip = _row_clip(w, gq) if w.size else np.zeros(w.shape[0], np.float32)
    scale = _row_scale(clip, gq, qmax)
    return scale, scale.astype(plan.scale_dtype)


def _stored_scale(scale: np.ndarray, dtype: str) -> np.ndarray:
    """`scale` in its stored dtype, a scale that underflows to 0 replaced by 1 (its row is ~0)."""
    st = scale.astype(dtype)
    return np.where(st == 0, np.ones_like(st), st)


def _searched_scale(w: np.ndarray, gq: GroupQuant, qmax: int, scale_dtype: str) -> np.ndarray:
    """Row scales (stored dtype) of clip `absmax`, or of clip `search`: for each candidate row
    quantile of |w| (1.0: the absmax), the squared error of rounding with that stored scale; the
    least per row, or the least summed over the matrix (`per: matrix`, one quantile for all rows)."""
    a = np.abs(w)
    qs = (1.0,) if gq.clip.kind == "absmax" else gq.clip.candidates
    # search floors the scale at 1/qmax as the records' GPTQ-lite does (`clamp_min(1/clip_range)`):
    # rows of small weights (weight decay) then all round at 1/qmax; absmax (gate rows) has no floor
    floor = np.float32((1.0 if gq.clip.kind == "search" else STD_RULE_SCALE_FLOOR) / qmax)
    best_s = best_e = None
    for c in qs:
        clip = a.max(axis=1) if c >= 1.0 else torch_quantile_rows(a, c)
        s = _stored_scale(np.maximum(clip / np.float32(qmax), floor), scale_dtype)
        if len(qs) == 1:
            return s
        sf = s.astype(np.float32)[:, None]
        err = np.square(w - _round_clamp(w / sf, qmax).astype(np.float32) * sf).sum(axis=1, dtype=np.float64)
        if gq.clip.per == "matrix":
            err = np.full_like(err, err.sum())
        if best_s is None:
            best_s, best_e = s, err
        else:
            better = err < best_e
            best_s, best_e = np.where(better, s, best_s), np.where(better, err, best_e)
    assert best_s is not None
    return best_s


def _quantize_ternary(w: np.ndarray, plan: Storage) -> tuple[np.ndarray, np.ndarray]:
    gs = plan.gq.group_size if plan.gq is not None else 0
    if gs:   # one absmean scale per `gs` values of the flattened tensor (the last group may be short)
        flat = w.reshape(-1)
        n_groups = -(-flat.size // gs)
        pad = np.zeros(n_groups * gs, np.float32)
        pad[:flat.size] = np.abs(flat)
        counts = np.full(n_groups, gs, np.float64)
        counts[-1] = flat.size - (n_groups - 1) * gs
        scale = np.maximum(pad.reshape(n_groups, gs).sum(axis=1, dtype=np.float64) / counts, 1e-12).astype(np.float32)
        q = _round_clamp(flat / np.repeat(scale, gs)[:flat.size], 1).reshape(w.shape)
        return q, scale.astype(plan.scale_dtype)
    w2 = w if plan.per_row else w.reshape(1, -1)
    scale = np.maximum(np.abs(w2).mean(axis=1, dtype=np.float64), 1e-12).astype(np.float32)
    q = _round_clamp(w2 / scale[:, None], 1).reshape(w.shape)
    return q, (scale.astype(plan.scale_dtype) if plan.per_row else np.array(scale[0], np.float32))


def _fp8_table() -> np.ndarray:
    """The float32 value of each e4m3fn byte (bias 7, subnormals, 0x7f/0xff NaN, max 448)."""
    c = np.arange(256)
    e, m = (c >> 3) & 15, (c & 7).astype(np.float64)
    mag = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e - 7.0))
    val = np.where(c >= 128, -mag, mag)
    val[(c & 127) == 127] = np.nan
    return val.astype(np.float32)


FP8_MAX = 448.0


def fp8_encode(x: np.ndarray) -> np.ndarray:
    """float32 -> e4m3fn bytes, round to nearest (ties to the even code), saturating at ±448
    (finite input only): the bytes `torch.Tensor.to(torch.float8_e4m3fn)` gives in range."""
    pos = _fp8_table()[:127]                       # codes 0..126, ascending
    a = np.minimum(np.abs(x.astype(np.float32)), np.float32(FP8_MAX))
    hi = np.clip(np.searchsorted(pos, a, side="left"), 1, 126)
    lo = hi - 1
    dlo, dhi = a - pos[lo], pos[hi] - a
    code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(a == 0, 0, code)
    return (code + np.where(np.signbit(x), 128, 0)).astype(np.uint8)


def fp8_decode(codes: np.ndarray) -> np.ndarray:
    return _fp8_table()[codes.astype(np.intp)]


def _quantize_fp8(w: np.ndarray, plan: Storage) -> tuple[np.ndarray, np.ndarray | None]:
    if not plan.per_row:
        return fp8_encode(w), None
    s = _stored_scale(np.maximum(np.abs(w).max(axis=1) / np.float32(FP8_MAX), np.float32(1e-30)), plan.scale_dtype)
    return fp8_encode(w / s.astype(np.float32)[:, None]), s


def rank_top(spec: QuantSettings, tensors: list[tuple[str, tuple[int, ...], str, str]],
             hessians: Mapping[str, np.ndarray] | None) -> dict[str, bool]:
    """The rank rule's decision for each candidate of (name, shape, dtype, group) tensors: True
    takes `top`. Forced names are top; of the others that have a Hessian, the `count` (`fraction`)
    with the largest trace(H) (ties by name); one without a Hessian refuses, or goes to the set
    `without_hessians` names."""
    rank = getattr(spec, "rank", None)
    if rank is None:
        return {}
    forced, ranked = rank_candidates(tensors, spec)
    have = hessians or {}
    missing = [n for n in ranked if n not in have]
    if missing and rank.without_hessians == "refuse":
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise SpecError(f"quant.rank ranks tensors by Hessian trace, but no Hessian was given for {missing[0]!r}{more}",
                        hint="pass hessians for every rank candidate, or set quant.rank.without_hessians to "
                             "top or rest to place a tensor without one there")
    traced = sorted((n for n in ranked if n in have), key=lambda n: (-float(np.trace(np.asarray(have[n]))), n))
    k = rank_top_count(rank, len(traced))
    out = {n: True for n in forced}
    out.update({n: i < k for i, n in enumerate(traced)})
    out.update({n: rank.without_hessians == "top" for n in missing})
    return out


def _quantize_int_codes(x: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric integers of `bits` with one fp16 absmax scale per `group` columns of each row."""
    qmax = 2 ** (bits - 1) - 1
    rows, cols = x.shape
    n_groups = -(-cols // group)
    pad = np.zeros((rows, n_groups * group), np.float32)
    pad[:, :cols] = np.abs(x)
    s = _stored_scale(pad.reshape(rows, n_groups, group).max(axis=2) / np.float32(qmax), "float16")
    sf = np.repeat(s.astype(np.float32), group, axis=1)[:, :cols]
    return _round_clamp(x / sf, qmax), s


def lqer_factors(err: np.ndarray, lq: object) -> LQERFactors:
    """Rank-r correction of a quantization error E (rows, cols): B = Vᵀ in b_bits with group
    scales, A = U·S in a_bits; A's one scale is the least-squares fit of the codes' product to E
    (so ||E - A·B|| <= ||E|| up to its fp16 rounding), of the codes rounded at 1, 3/4, 1/2, 3/8
    or 1/4 of A's absmax."""
    rows, cols = err.shape
    r = min(lq.rank, rows, cols)  # type: ignore[attr-defined]
    e = err.astype(np.float64)
    u, sv, vt = np.linalg.svd(e, full_matrices=False)
    a = (u[:, :r] * sv[:r]).astype(np.float32)
    b, b_scale = _quantize_int_codes(vt[:r].astype(np.float32), lq.b_bits, lq.b_group)  # type: ignore[attr-defined]
    bd = (b.astype(np.float32) * np.repeat(b_scale.astype(np.float32), lq.b_group, axis=1)[:, :cols]).astype(np.float64)  # type: ignore[attr-defined]
    aqmax = 2 ** (lq.a_bits - 1) - 1  # type: ignore[attr-defined]
    amax = float(np.abs(a).max()) if a.size else 0.0
    best = (float(np.square(e).sum()), np.zeros((rows, r), np.int8), np.float16(0))
    for frac in (1.0, 0.75, 0.5, 0.375, 0.25):
        if amax == 0:
            break
        qa = _round_clamp(a / np.float32(amax * frac / aqmax), aqmax)
        prod = qa.astype(np.float64) @ bd
        pp = float(np.square(prod).sum())
        if pp == 0:
            continue
        sa = np.float16(float((e * prod).sum()) / pp)
        resid = float(np.square(e - np.float64(sa) * prod).sum())
        if resid < best[0]:
            best = (resid, qa, sa)
    return LQERFactors(best[1], np.array(best[2], np.float16), b, b_scale, lq.b_group)  # type: ignore[attr-defined]


def _add_lqer(qstate: QuantizedState, weights: dict[str, np.ndarray], spec: QuantSettings) -> None:
    """Attach LQER factors to the top_k matrices (by quantization-error norm) spec.lqer selects."""
    lq = getattr(spec, "lqer", None)
    if lq is None:
        return
    deq = dequantize_state(QuantizedState({n: t for n, t in qstate.tensors.items() if n in weights}))
    cands = [n for n, t in qstate.tensors.items()
             if t.kind == "int" and len(t.shape) == 2 and n in weights and any(fnmatch.fnmatchcase(n, g) for g in lq.match)]
    errs = {n: weights[n] - deq[n].astype(np.float32) for n in cands}
    ranked = sorted(cands, key=lambda n: (-float(np.square(errs[n], dtype=np.float64).sum()), n))
    for n in ranked[:lq.top_k]:
        qstate.tensors[n].lqer = lqer_factors(errs[n], lq)


def quantize_state(state: Mapping[str, np.ndarray], groups: GroupsArg, spec: QuantSettings,
                   hessians: Mapping[str, np.ndarray] | None = None, *, device: object = None,
                   gptq: GPTQRunner | None = None) -> QuantizedState:
    """Quantize a state dict. `groups` maps each name to one of quantspec.GROUPS;
    `hessians[name]` (in x in) is required for every 2-D tensor of a group with gptq=True, and
    (unless quant.rank.without_hessians says otherwise) for every candidate of quant.rank.

    GPTQ'd tensors are swept by recurc/gptq.py in torch on `device` (default the CPU), all
    together after their scales are set; `gptq` replaces that step (runtime/export.py spreads it
    over the ranks of a run). The codes depend on the device's arithmetic: the same device gives
    the same bytes."""
    out = QuantizedState()
    items = [(name, np.asarray(arr), _group_of(groups, name)) for name, arr in state.items()]
    top = rank_top(spec, [(n, tuple(a.shape), a.dtype.name, g) for n, a, g in items], hessians)
    weights: dict[str, np.ndarray] = {}
    jobs: list = []
    for name, a, group in items:
        plan = plan_tensor(tuple(a.shape), a.dtype.name, group, spec, name, top.get(name))
        qt = QTensor(name, group, tuple(a.shape), a.dtype.name, plan.kind, plan.bits)
        if plan.kind == "passthrough":
            qt.data = np.ascontiguousarray(a.astype(plan.store_dtype, copy=False))
        else:
            w = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(w).all():
                raise SpecError(f"tensor {name!r} has NaN or infinite values; cannot quantize it")
            if plan.gptq:   # values come from the sweep below; the scale is fixed now
                from .gptq import GPTQJob
                rounding, qt.scale = _row_scales(w, plan)
                jobs.append(GPTQJob(name, w, rounding, 2 ** (plan.bits - 1) - 1,
                                    _checked_hessian(name, w.shape, hessians)))
                weights[name] = w
            elif plan.kind == "int":
                qt.q, qt.scale = _quantize_int(w, plan)
                weights[name] = w
            elif plan.kind == "fp8":
                qt.q, qt.scale = _quantize_fp8(w, plan)
            else:
                qt.q, qt.scale = _quantize_ternary(w, plan)
                assert plan.gq is not None
                qt.group_size, qt.packing = plan.gq.group_size, plan.gq.packing
        out.tensors[name] = qt
    if jobs:
        if gptq is None:
            from .gptq import gptq_codes
            codes = gptq_codes(jobs, device)
        else:
            codes = gptq(jobs)
        for j in jobs:
            out.tensors[j.name].q = codes[j.name]
    _add_lqer(out, weights, spec)
    return out


def _checked_hessian(name: str, shape: tuple[int, ...], hessians: Mapping[str, np.ndarray] | None) -> np.ndarray:
    if hessians is None or name not in hessians:
        raise SpecError(f"GPTQ requested for {name!r} but no Hessian was given for it",
                        hint="pass hessians={name: X^T X} for every 2-D tensor of a gptq group, or set gptq: false")
    h = np.asarray(hessians[name])
    if h.shape != (shape[1], shape[1]) or not np.isfinite(h).all():
        raise SpecError(f"Hessian of {name!r} must be a finite {shape[1]}x{shape[1]} matrix, got shape {h.shape}")
    return h


def dequantize_state(qstate: QuantizedState) -> dict[str, np.ndarray]:
    """Float tensors back, in their original dtype (passthrough exactly as stored, then cast)."""
    out: dict[str, np.ndarray] = {}
    for name, t in qstate.tensors.items():
        if t.kind == "passthrough":
            assert t.data is not None
            out[name] = t.data.astype(t.orig_dtype, copy=False)
            continue
        assert t.q is not None
        v = fp8_decode(t.q) if t.kind == "fp8" else t.q.astype(np.float32)
        if t.scale is None:        # unscaled fp8
            w = v
        elif t.group_size:
            s = np.repeat(t.scale.astype(np.float32), t.group_size)[:v.size]
            w = (v.reshape(-1) * s).reshape(v.shape)
        elif t.scale.ndim > 0:
            w = v * t.scale.astype(np.float32).reshape(-1, *([1] * (v.ndim - 1)))
        else:
            w = v * np.float32(t.scale)
        if t.lqer is not None:
            w = w + t.lqer.product()
        out[name] = w.astype(t.orig_dtype)
    return out


def raw_payload_bytes(qstate: QuantizedState) -> dict[str, int]:
    """Bytes of values + scales + passthrough per group, before container and compression."""
    res = {g: 0 for g in GROUPS}
    for t in qstate.tensors.values():
        arrays = [t.data] if t.kind == "passthrough" else [t.scale]
        if t.q is not None:
            res[t.group] += len(_values_bytes(t))
        if t.lqer is not None:
            arrays += [t.lqer.a, t.lqer.a_scale, t.lqer.b, t.lqer.b_scale]
        res[t.group] += sum(int(a.nbytes) for a in arrays if a is not None)
    return res


def pack_base3(q: np.ndarray) -> bytes:
    """Ternary values (-1, 0, 1), flattened, 5 to a byte: sum of (t_i + 1) * 3^i (at most 242)."""
    t = q.reshape(-1).astype(np.int16) + 1
    pad = np.ones(-(-t.size // 5) * 5, np.int16)   # padding trits decode to 0 values
    pad[:t.size] = t
    return (pad.reshape(-1, 5) @ np.array([1, 3, 9, 27, 81], np.int16)).astype(np.uint8).tobytes()


def unpack_base3(b: bytes, n: int) -> np.ndarray:
    """Inverse of pack_base3: `n` int8 ternary values."""
    v = np.frombuffer(b, np.uint8).astype(np.int16)
    if v.size != -(-n // 5) or (v > 242).any():
        raise SpecError("corrupt artifact: base-3 packed values out of range or of the wrong length")
    trits = (v[:, None] // np.array([1, 3, 9, 27, 81], np.int16)) % 3
    return (trits.reshape(-1)[:n] - 1).astype(np.int8)


def _values_bytes(t: QTensor) -> bytes:
    """The bytes of a tensor's values as the containers store them."""
    assert t.q is not None
    return pack_base3(t.q) if t.packing == "base3" else np.ascontiguousarray(t.q).tobytes()


# ----------------------------------------------------------------------------- compressors
def byte_shuffle(b: bytes, itemsize: int) -> bytes:
    """Transpose the bytes of a stream of `itemsize`-byte items (all low bytes, then the next...)."""
    if itemsize <= 1 or not b:
        return b
    return np.frombuffer(b, np.uint8).reshape(-1, itemsize).T.tobytes()


def byte_unshuffle(b: bytes, itemsize: int) -> bytes:
    if itemsize <= 1 or not b:
        return b
    return np.frombuffer(b, np.uint8).reshape(itemsize, -1).T.tobytes()


def compress(data: bytes, c: Compressor) -> bytes:
    lvl = c.effective_level
    if c.name == "zlib":
        return zlib.compress(data, lvl)
    if c.name == "lzma":
        return lzma.compress(data, preset=lvl)
    if c.name == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=lvl).compress(data)
    if c.name == "brotli":
        import brotli
        return brotli.compress(data, quality=lvl)
    return data


def decompress(blob: bytes, c: Compressor, limit: int | None = None) -> bytes:
    """The decompressed bytes; with `limit`, bounded and any damage one SpecError (recurc/inflate.py)."""
    if limit is not None:
        from .inflate import inflate
        return inflate(blob, c.name, limit)
    if c.name == "zlib":
        return zlib.decompress(blob)
    if c.name == "lzma":
        return lzma.decompress(blob)
    if c.name == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().decompress(blob)
    if c.name == "brotli":
        import brotli
        return brotli.decompress(blob)
    return blob


# ----------------------------------------------------------------------------- containers
def pack(qstate: QuantizedState, spec: QuantSettings) -> bytes:
    """Serialize with spec.container and compress with spec.compressor: the artifact's model bytes."""
    raw = _serialize_torch(qstate, spec) if spec.container == "torch" else _serialize_recurc(qstate, spec)
    return compress(raw, spec.compressor)


def unpack(blob: bytes, spec: QuantSettings, groups: GroupsArg | None = None,
           limit: int | None = None) -> QuantizedState:
    """Inverse of pack. The torch container does not record groups: pass `groups` to get them back
    (else those tensors get group "" ); the recurc container records them. With `limit` (bytes the
    container may inflate to) a damaged or hostile artifact is one SpecError."""
    raw = decompress(blob, spec.compressor, limit)
    try:
        qs = _deserialize_torch(raw) if spec.container == "torch" else _deserialize_recurc(raw)
    except SpecError:
        raise
    except Exception as exc:   # torch.load of garbage, truncated arrays
        if limit is None:
            raise
        raise SpecError(f"the artifact is damaged: its {spec.container} container does not read "
                        f"({(str(exc).splitlines() or [type(exc).__name__])[0][:120]})") from None
    if groups is not None:
        for t in qs.tensors.values():
            t.group = _group_of(groups, t.name)
    return qs


def _is_baseline(qstate: QuantizedState, spec: QuantSettings) -> bool:
    return not spec.compressor.byte_shuffle and all(
        t.kind == "passthrough" or (t.kind == "int" and t.bits == 8 and t.lqer is None) for t in qstate.tensors.values())


def _serialize_torch(qstate: QuantizedState, spec: QuantSettings) -> bytes:
    """The challenge's torch.save dict. Exactly "int8_clean_per_row_v1" when every quantized tensor
    is int8 and no byte shuffle is asked; otherwise RECURC_TORCH_FORMAT, which adds to qmeta the
    bits/scheme of every quantized tensor and stores byte-shuffled multi-byte tensors as uint8
    (itemsize, n) tensors listed under "byte_shuffled" as [dtype, shape] (entry key "scales/<name>" or "passthrough/<name>")."""
    import torch
    shuffle = spec.compressor.byte_shuffle

    def tens(a: np.ndarray, key: str, shuffled: dict[str, str]) -> "torch.Tensor":
        if shuffle and a.dtype.itemsize > 1 and a.ndim > 0:
            shuffled[key] = [a.dtype.name, list(a.shape)]
            u = np.frombuffer(byte_shuffle(np.ascontiguousarray(a).tobytes(), a.dtype.itemsize), np.uint8)
            return torch.from_numpy(u.reshape(a.dtype.itemsize, -1).copy())
        return torch.from_numpy(np.ascontiguousarray(a).copy())

    baseline = _is_baseline(qstate, spec)
    quantized: dict[str, object] = {}
    scales: dict[str, object] = {}
    dtypes: dict[str, str] = {}
    passthrough: dict[str, object] = {}
    orig: dict[str, str] = {}
    qmeta: dict[str, dict[str, object]] = {}
    shuffled: dict[str, str] = {}
    for name, t in qstate.tensors.items():
        if t.kind == "passthrough":
            assert t.data is not None
            passthrough[name] = tens(t.data, f"passthrough/{name}", shuffled)
            if t.data.dtype.name != t.orig_dtype:
                orig[name] = t.orig_dtype
            continue
        assert t.q is not None
        quantized[name] = torch.frombuffer(bytearray(_values_bytes(t)), dtype=torch.uint8) \
            if t.packing == "base3" else torch.from_numpy(t.q.copy())
        if t.scale is not None:
            scales[name] = tens(t.scale, f"scales/{name}", shuffled)
        dtypes[name] = t.orig_dtype
        if baseline:
            if t.scale is not None and t.scale.ndim > 0:
                qmeta[name] = {"scheme": "per_row", "axis": 0}
        else:
            scheme = "per_group" if t.group_size else "per_row" if t.scale is not None and t.scale.ndim > 0 else \
                "per_tensor" if t.scale is not None else "none"
            meta: dict[str, object] = {"scheme": scheme, "axis": 0, "bits": t.bits, "kind": t.kind}
            if t.group_size:
                meta["group_size"] = t.group_size
            if t.packing != "int8":
                meta.update(packing=t.packing, shape=list(t.shape))
            if t.lqer is not None:
                lq = t.lqer
                meta["lqer"] = {"a": torch.from_numpy(lq.a.copy()), "a_scale": torch.from_numpy(lq.a_scale.reshape(1).copy()),
                                "b": torch.from_numpy(lq.b.copy()), "b_scale": torch.from_numpy(lq.b_scale.copy()),
                                "b_group": lq.b_group}
            qmeta[name] = meta
    obj: dict[str, object] = {"__quant_format__": BASELINE_FORMAT if baseline else RECURC_TORCH_FORMAT,
                              "quantized": quantized, "scales": scales, "dtypes": dtypes, "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    if shuffled:
        obj["byte_shuffled"] = dict(sorted(shuffled.items()))   # order-free, so unpack->pack is identical
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _deserialize_torch(raw: bytes) -> QuantizedState:
    import torch
    obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    fmt = obj.get("__quant_format__")
    if fmt not in (BASELINE_FORMAT, RECURC_TORCH_FORMAT):
        raise SpecError(f"unknown quantized container format {fmt!r}")
    shuffled: dict[str, list] = obj.get("byte_shuffled", {})
    qmeta = obj.get("qmeta", {})
    orig = obj.get("passthrough_orig_dtypes", {})

    def arr(x: "torch.Tensor", key: str) -> np.ndarray:
        a = x.numpy()
        if key in shuffled:
            dt, shape = np.dtype(shuffled[key][0]), tuple(shuffled[key][1])
            return np.frombuffer(byte_unshuffle(a.tobytes(), dt.itemsize), dt).reshape(shape).copy()
        return a.copy()

    qs = QuantizedState()
    for name, q in obj["quantized"].items():
        meta = qmeta.get(name, {})
        packing = meta.get("packing", "int8")
        if packing == "base3":
            shape = tuple(int(x) for x in meta["shape"])
            qa = unpack_base3(q.numpy().tobytes(), math.prod(shape)).reshape(shape)
        else:
            qa = q.numpy().copy()
        scale = arr(obj["scales"][name], f"scales/{name}") if name in obj["scales"] else None
        t = QTensor(name, "", tuple(qa.shape), obj["dtypes"][name], meta.get("kind", "int"), int(meta.get("bits", 8)),
                    q=qa, scale=scale, group_size=int(meta.get("group_size", 0)), packing=packing)
        if "lqer" in meta:
            lq = meta["lqer"]
            t.lqer = LQERFactors(lq["a"].numpy().copy(), lq["a_scale"].numpy().reshape(()).copy(), lq["b"].numpy().copy(),
                                 lq["b_scale"].numpy().copy(), int(lq["b_group"]))
        qs.tensors[name] = t
    for name, p in obj["passthrough"].items():
        d = arr(p, f"passthrough/{name}")
        qs.tensors[name] = QTensor(name, "", tuple(d.shape), orig.get(name, d.dtype.name), "passthrough", data=d)
    return qs


def _serialize_recurc(qstate: QuantizedState, spec: QuantSettings) -> bytes:
    """recurc's flat format: three streams, then the JSON header, its u32 length and MAGIC:
    all quantized values (int8, one byte per value: bit-packing b<8 compressed worse with every
    compressor we measured, see docs/size-model.md), all scales, all passthrough bytes. Multi-byte
    arrays are byte-shuffled one by one when asked. Order of tensors = header order.
    The values come first, before any other byte: a few KB of JSON ahead of them made zstd-22 code
    them up to 10 % worse, and 4 magic bytes ahead of ternary values cost brotli-11 15 %."""
    shuffle = spec.compressor.byte_shuffle
    entries, vals, scales, passes = [], [], [], []

    def put(a: np.ndarray, sink: list[bytes]) -> None:
        b = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        sink.append(byte_shuffle(b, a.dtype.itemsize) if shuffle else b)

    for t in qstate.tensors.values():
        e: dict[str, object] = {"n": t.name, "g": t.group, "s": list(t.shape), "o": t.orig_dtype, "k": t.kind}
        if t.kind == "passthrough":
            assert t.data is not None
            e["d"] = t.data.dtype.name
            put(t.data, passes)
        else:
            assert t.q is not None
            e["b"] = t.bits
            if t.scale is not None:
                e.update(sd=t.scale.dtype.name, ss=list(t.scale.shape))
                put(t.scale, scales)
            if t.group_size:
                e["gs"] = t.group_size
            if t.packing != "int8":
                e["p"] = t.packing
            vals.append(_values_bytes(t))
            if t.lqer is not None:   # A and B codes follow the tensor's values; their scales, its scale
                lq = t.lqer
                e["lq"] = [lq.a.shape[1], lq.b_group]
                vals += [lq.a.tobytes(), lq.b.tobytes()]
                put(lq.a_scale, scales)
                put(lq.b_scale, scales)
        entries.append(e)
    header = json.dumps({"v": 1, "shuffle": shuffle, "t": entries}, separators=(",", ":")).encode()
    return b"".join([*vals, *scales, *passes, header, struct.pack("<I", len(header)), RECURC_MAGIC])


def _stream_bytes(e: dict) -> int:
    """Bytes a header entry's tensor takes in the streams (values + scale, or passthrough data)."""
    if e["k"] == "passthrough":
        return math.prod(e["s"]) * np.dtype(e["d"]).itemsize
    n = math.prod(e["s"])
    total = -(-n // 5) if e.get("p") == "base3" else n
    if "ss" in e:
        total += math.prod(e["ss"]) * np.dtype(e["sd"]).itemsize
    if "lq" in e:
        r, g = e["lq"]
        rows, cols = e["s"]
        total += rows * r + r * cols + 2 + r * -(-cols // g) * 2
    return total


def _deserialize_recurc(raw: bytes) -> QuantizedState:
    if raw[-4:] != RECURC_MAGIC or len(raw) < 8:
        if raw[:4] == b"RCQ1":
            raise SpecError("this artifact is in recurc's older container (RCQ1, header first)",
                            hint="re-export the checkpoint with this recurc (`recurc measure CKPT --spec S -o FILE`)")
        raise SpecError("not a recurc container (bad magic)")
    (hlen,) = struct.unpack_from("<I", raw, len(raw) - 8)
    if hlen > len(raw) - 8:
        raise SpecError("corrupt recurc container: the header length exceeds the file")
    try:
        head = json.loads(raw[len(raw) - 8 - hlen:len(raw) - 8])
        shuffle = bool(head["shuffle"])
        entries = head["t"]
        want = sum(_stream_bytes(e) for e in entries)
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"corrupt recurc container: unreadable header ({exc})") from None
    if want != len(raw) - 8 - hlen:
        raise SpecError(f"corrupt recurc container: its streams hold {len(raw) - 8 - hlen:,} bytes, "
                        f"its header describes {want:,}")
    pos = 0

    def take(nbytes: int) -> bytes:
        nonlocal pos
        b = raw[pos:pos + nbytes]
        pos += nbytes
        return b

    def take_arr(dtype: str, shape: list[int]) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        b = take(int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
        if shuffle:
            b = byte_unshuffle(b, dt.itemsize)
        return np.frombuffer(b, dt).astype(dt.newbyteorder("="), copy=True).reshape(shape)

    qs = QuantizedState()
    lqer_codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for e in entries:   # stream 1: values (then any LQER codes)
        if e["k"] != "passthrough":
            n = int(np.prod(e["s"], dtype=np.int64))
            packing = e.get("p", "int8")
            if packing == "base3":
                q = unpack_base3(take(-(-n // 5)), n).reshape(e["s"])
            else:
                q = np.frombuffer(take(n), np.uint8 if e["k"] == "fp8" else np.int8).reshape(e["s"]).copy()
            qs.tensors[e["n"]] = QTensor(e["n"], e["g"], tuple(e["s"]), e["o"], e["k"], e["b"], q=q,
                                         group_size=int(e.get("gs", 0)), packing=packing)
            if "lq" in e:
                r, (rows, cols) = e["lq"][0], e["s"]
                lqer_codes[e["n"]] = (np.frombuffer(take(rows * r), np.int8).reshape(rows, r).copy(),
                                      np.frombuffer(take(r * cols), np.int8).reshape(r, cols).copy())
        else:
            qs.tensors[e["n"]] = QTensor(e["n"], e["g"], tuple(e["s"]), e["o"], "passthrough")
    for e in entries:   # stream 2: scales (then any LQER scales)
        if e["k"] != "passthrough":
            if "ss" in e:
                qs.tensors[e["n"]].scale = take_arr(e["sd"], e["ss"])
            if "lq" in e:
                r, g = e["lq"]
                a, b = lqer_codes[e["n"]]
                a_scale = take_arr("float16", [])
                b_scale = take_arr("float16", [r, -(-e["s"][1] // g)])
                qs.tensors[e["n"]].lqer = LQERFactors(a, a_scale, b, b_scale, g)
    for e in entries:   # stream 3: passthrough
        if e["k"] == "passthrough":
            qs.tensors[e["n"]].data = take_arr(e["d"], e["s"])
    return qs
