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
- ternary scheme: per row scale = mean|w| (BitNet b1.58 absmean), values round(w/scale) in {-1,0,1}.
- passthrough: non-float tensors as-is; groups with scheme fp16/fp32 at that dtype; float
  tensors with numel <= passthrough_max_numel, or of a group absent from spec.groups, as
  control_dtype for groups "scalars"/"per_pass" and passthrough_dtype otherwise.
- GPTQ (GroupQuant.gptq): column sweep with the upper Cholesky factor of H^-1, 1% dampening,
  blocks of 128 columns (Frantar et al. 2022), row scales fixed before the sweep. No act-order.
"""
from __future__ import annotations

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
                              plan_tensor)

BASELINE_FORMAT = "int8_clean_per_row_v1"
RECURC_TORCH_FORMAT = "recurc_int_per_row_v1"   # torch container, any bits / ternary / shuffle
RECURC_MAGIC = b"RCQ2"   # at the end of the raw container (RCQ1: magic and header first)
GPTQ_DAMP = 0.01          # fraction of mean(diag H) added to the diagonal
GPTQ_BLOCK = 128          # columns per lazy-update block
STD_RULE_SCALE_FLOOR = 1e-12

GroupsArg = Mapping[str, str] | Callable[[str], str]


# ----------------------------------------------------------------------------- data types
@dataclass
class QTensor:
    """One stored tensor. int/ternary: `q` (int8 values) and `scale`; passthrough: `data`."""
    name: str
    group: str
    shape: tuple[int, ...]
    orig_dtype: str
    kind: Kind
    bits: int = 8
    q: np.ndarray | None = None
    scale: np.ndarray | None = None
    data: np.ndarray | None = None


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


def _quantize_int(w: np.ndarray, plan: Storage, hessian: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
    clip = _row_clip(w, gq) if w.size else np.zeros(w.shape[0], np.float32)
    scale = _row_scale(clip, gq, qmax)
    clipped = np.maximum(np.minimum(w, clip[:, None]), -clip[:, None])
    if gq.gptq:
        q = gptq_quantize(w, scale, qmax, hessian)   # clamping to ±qmax is part of the sweep's error
    else:
        q = _round_clamp(clipped / scale[:, None], qmax)
    return q, scale.astype(plan.scale_dtype)


def _quantize_ternary(w: np.ndarray, plan: Storage) -> tuple[np.ndarray, np.ndarray]:
    w2 = w if plan.per_row else w.reshape(1, -1)
    scale = np.maximum(np.abs(w2).mean(axis=1, dtype=np.float64), 1e-12).astype(np.float32)
    q = _round_clamp(w2 / scale[:, None], 1).reshape(w.shape)
    return q, (scale.astype(plan.scale_dtype) if plan.per_row else np.array(scale[0], np.float32))


def gptq_quantize(w: np.ndarray, scale: np.ndarray, qmax: int, hessian: np.ndarray) -> np.ndarray:
    """GPTQ (Frantar et al. 2022) for W (rows, cols) with fixed per-row `scale` and H = X^T X (cols, cols).

    Columns are quantized left to right; each column's rounding error, divided by the diagonal of
    the upper Cholesky factor U of H^-1, is spread over the not-yet-quantized columns (U's rows),
    lazily per block of GPTQ_BLOCK columns. Returns int8 values in [-qmax, qmax]."""
    W = w.astype(np.float64).copy()
    H = np.array(hessian, dtype=np.float64, copy=True)
    cols = W.shape[1]
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(cols)] += GPTQ_DAMP * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)                       # H = L L^T
    Linv = np.linalg.solve(L, np.eye(cols))         # H^-1 = Linv^T Linv
    U = np.linalg.cholesky(Linv.T @ Linv).T         # upper factor: H^-1 = U^T U
    s = scale.astype(np.float64)[:, None]
    Q = np.zeros(W.shape, dtype=np.int8)
    for i1 in range(0, cols, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, cols)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = W1[:, i:i + 1]
            qi = np.clip(np.round(col / s), -qmax, qmax)
            Q[:, i1 + i] = qi[:, 0].astype(np.int8)
            err = (col - qi * s) / U1[i, i]
            W1[:, i:] -= err @ U1[i:i + 1, i:]
            E1[:, i:i + 1] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return Q


def quantize_state(state: Mapping[str, np.ndarray], groups: GroupsArg, spec: QuantSettings,
                   hessians: Mapping[str, np.ndarray] | None = None) -> QuantizedState:
    """Quantize a state dict. `groups` maps each name to one of quantspec.GROUPS;
    `hessians[name]` (in x in) is required for every 2-D tensor of a group with gptq=True."""
    out = QuantizedState()
    for name, arr in state.items():
        a = np.asarray(arr)
        group = _group_of(groups, name)
        plan = plan_tensor(tuple(a.shape), a.dtype.name, group, spec)
        qt = QTensor(name, group, tuple(a.shape), a.dtype.name, plan.kind, plan.bits)
        if plan.kind == "passthrough":
            qt.data = np.ascontiguousarray(a.astype(plan.store_dtype, copy=False))
        else:
            w = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(w).all():
                raise SpecError(f"tensor {name!r} has NaN or infinite values; cannot quantize it")
            hessian = None
            if plan.gptq:
                hessian = _checked_hessian(name, w.shape, hessians)
            if plan.kind == "int":
                qt.q, qt.scale = _quantize_int(w, plan, hessian)
            else:
                qt.q, qt.scale = _quantize_ternary(w, plan)
        out.tensors[name] = qt
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
        assert t.q is not None and t.scale is not None
        s = t.scale.astype(np.float32)
        if s.ndim > 0:
            out[name] = (t.q.astype(np.float32) * s.reshape(-1, *([1] * (t.q.ndim - 1)))).astype(t.orig_dtype)
        else:
            out[name] = (t.q.astype(np.float32) * np.float32(s)).astype(t.orig_dtype)
    return out


def raw_payload_bytes(qstate: QuantizedState) -> dict[str, int]:
    """Bytes of values + scales + passthrough per group, before container and compression."""
    res = {g: 0 for g in GROUPS}
    for t in qstate.tensors.values():
        arrays = [t.data] if t.kind == "passthrough" else [t.q, t.scale]
        res[t.group] += sum(int(a.nbytes) for a in arrays if a is not None)
    return res


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


def decompress(blob: bytes, c: Compressor) -> bytes:
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


def unpack(blob: bytes, spec: QuantSettings, groups: GroupsArg | None = None) -> QuantizedState:
    """Inverse of pack. The torch container does not record groups: pass `groups` to get them back
    (else those tensors get group "" ); the recurc container records them."""
    raw = decompress(blob, spec.compressor)
    qs = _deserialize_torch(raw) if spec.container == "torch" else _deserialize_recurc(raw)
    if groups is not None:
        for t in qs.tensors.values():
            t.group = _group_of(groups, t.name)
    return qs


def _is_baseline(qstate: QuantizedState, spec: QuantSettings) -> bool:
    return not spec.compressor.byte_shuffle and all(
        t.kind == "passthrough" or (t.kind == "int" and t.bits == 8) for t in qstate.tensors.values())


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
        assert t.q is not None and t.scale is not None
        quantized[name] = torch.from_numpy(t.q.copy())
        scales[name] = tens(t.scale, f"scales/{name}", shuffled)
        dtypes[name] = t.orig_dtype
        if baseline:
            if t.scale.ndim > 0:
                qmeta[name] = {"scheme": "per_row", "axis": 0}
        else:
            qmeta[name] = {"scheme": "per_row" if t.scale.ndim > 0 else "per_tensor", "axis": 0,
                           "bits": t.bits, "kind": t.kind}
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
        qa = q.numpy().copy()
        qs.tensors[name] = QTensor(name, "", tuple(qa.shape), obj["dtypes"][name], meta.get("kind", "int"),
                                   int(meta.get("bits", 8)), q=qa, scale=arr(obj["scales"][name], f"scales/{name}"))
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
            assert t.q is not None and t.scale is not None
            e.update(b=t.bits, sd=t.scale.dtype.name, ss=list(t.scale.shape))
            vals.append(t.q.tobytes())
            put(t.scale, scales)
        entries.append(e)
    header = json.dumps({"v": 1, "shuffle": shuffle, "t": entries}, separators=(",", ":")).encode()
    return b"".join([*vals, *scales, *passes, header, struct.pack("<I", len(header)), RECURC_MAGIC])


def _stream_bytes(e: dict) -> int:
    """Bytes a header entry's tensor takes in the streams (values + scale, or passthrough data)."""
    if e["k"] == "passthrough":
        return math.prod(e["s"]) * np.dtype(e["d"]).itemsize
    return math.prod(e["s"]) + math.prod(e["ss"]) * np.dtype(e["sd"]).itemsize


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
    for e in entries:   # stream 1: values
        if e["k"] != "passthrough":
            n = int(np.prod(e["s"], dtype=np.int64))
            q = np.frombuffer(take(n), np.int8).reshape(e["s"]).copy()
            qs.tensors[e["n"]] = QTensor(e["n"], e["g"], tuple(e["s"]), e["o"], e["k"], e["b"], q=q)
        else:
            qs.tensors[e["n"]] = QTensor(e["n"], e["g"], tuple(e["s"]), e["o"], "passthrough")
    for e in entries:   # stream 2: scales
        if e["k"] != "passthrough":
            qs.tensors[e["n"]].scale = take_arr(e["sd"], e["ss"])
    for e in entries:   # stream 3: passthrough
        if e["k"] == "passthrough":
            qs.tensors[e["n"]].data = take_arr(e["d"], e["s"])
    return qs
