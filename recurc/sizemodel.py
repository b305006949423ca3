"""Predict the artifact's compressed model bytes from tensor shapes alone (no torch, no weights).

Model (docs/size-model.md has the derivation and the measured errors):
  bytes = sum over quantized tensors of numel * (H + excess_c(H)) / 8      (the int values)
        + scale bytes * ratio_c(scale dtype, shuffle)
        + passthrough bytes * ratio_c(dtype, shuffle)
        + container overhead (a_c + b_c * number of tensors)
H is the entropy of the quantized values of a row, computed numerically from a weight-shape model:
a unit-variance generalized Gaussian exp(-|x/a|^beta) (beta=2 Gaussian; beta<2 heavier tails,
beta>2 lighter). The step is clip/qmax where the clip is k*std (std rule: exact) or the row's
percentile of |w| (distribution of that order statistic over rows, integrated by quadrature), with
the percentile rule's scale floor 1/qmax when the weights' absolute std is known (else inactive).
excess_c(H) is each compressor's measured distance from the entropy on i.i.d. quantized data.

Every constant below says where it came from; benchmarks/calibrate_sizemodel.py re-measures them.
This module never imports torch (recurc.quant imports it only inside its torch container).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

import numpy as np

from recurc.quant import GPTQ_BLOCK, STD_RULE_SCALE_FLOOR, TensorPlan, plan_tensor  # noqa: F401
from recurc.quantspec import GROUPS, QuantSpec

# ----------------------------------------------------------------------------- constants
# Trained-weight shape (generalized-Gaussian beta), fitted so that the naive baseline
# (int8, percentile 99.99984, zlib-9) predicts its published 15,815,847 bytes
# (benchmarks/calibrate_sizemodel.py --fit-baseline). beta > 2 means lighter tails than Gaussian
# at the row max: Muon-trained matrices have flat spectra and bounded-looking rows.
TRAINED_BETA = 1.9068
# Interval used for the confidence band on trained weights (shape not known before training).
TRAINED_BETA_RANGE = (1.6, 2.6)

# Residual bits/value of each compressor, measured on 2^20 i.i.d. Gaussian values quantized at
# various steps (calibrate_sizemodel.py --excess), as (H, residual) knots, linear interpolation:
# above the Huffman length for zlib/zstd/brotli (HUFFMAN_BASED), above the entropy for lzma.
EXCESS_KNOTS: dict[str, tuple[tuple[float, float], ...]] = {
    "none": ((0.0, 0.0), (8.0, 0.0)),
    "zlib": ((0.001, -0.9907), (0.701, -0.256), (1.242, 0.0825), (1.588, 0.2106), (1.98, 0.2933), (2.407, 0.4042), (2.929, 0.4275), (3.38, 0.4844), (4.373, 0.5179), (5.371, 0.2014), (6.37, 0.0489), (7.362, 0.0339)),
    "lzma": ((0.001, 0.0039), (0.701, 0.1328), (1.242, 0.1789), (1.588, 0.208), (1.98, 0.2401), (2.407, 0.2753), (2.929, 0.3127), (3.38, 0.1842), (4.373, 0.1508), (5.371, 0.1312), (6.37, 0.1219), (7.362, 0.1136)),
    "zstd": ((0.001, -0.9962), (0.701, -0.328), (1.242, -0.0563), (1.588, 0.0081), (1.98, 0.0072), (2.407, 0.0096), (2.929, 0.013), (3.38, 0.0151), (4.373, 0.0123), (5.371, 0.0207), (6.37, 0.0296), (7.362, 0.0167)),
    "brotli": ((0.001, -0.9968), (0.701, -0.3278), (1.242, 0.0002), (1.588, 0.0002), (1.98, 0.0003), (2.407, 0.0003), (2.929, 0.0003), (3.38, 0.0007), (4.373, 0.0006), (5.371, 0.0009), (6.37, 0.0016), (7.362, 0.0004)),
}
# A stream of only zeros/one symbol: compressors still pay a little per value (bits/value).
ZERO_ENTROPY_FLOOR = 0.002

# Compressed/raw ratio of fp16/fp32 streams of trained-like values (scales: positive, similar
# magnitude; passthrough: N(0, s) values), keyed (compressor, dtype, shuffle). Measured by
# calibrate_sizemodel.py --streams on 64 Ki-value streams.
STREAM_RATIO: dict[tuple[str, str, bool, str], float] = {
    ('zlib', 'float16', False, 'scale'): 0.811,
    ('lzma', 'float16', False, 'scale'): 0.772,
    ('zstd', 'float16', False, 'scale'): 0.8036,
    ('brotli', 'float16', False, 'scale'): 0.781,
    ('zlib', 'float16', True, 'scale'): 0.7952,
    ('lzma', 'float16', True, 'scale'): 0.7153,
    ('zstd', 'float16', True, 'scale'): 0.7444,
    ('brotli', 'float16', True, 'scale'): 0.6902,
    ('zlib', 'float32', False, 'scale'): 0.8735,
    ('lzma', 'float32', False, 'scale'): 0.8311,
    ('zstd', 'float32', False, 'scale'): 0.8737,
    ('brotli', 'float32', False, 'scale'): 0.8353,
    ('zlib', 'float32', True, 'scale'): 0.7974,
    ('lzma', 'float32', True, 'scale'): 0.7886,
    ('zstd', 'float32', True, 'scale'): 0.7801,
    ('brotli', 'float32', True, 'scale'): 0.7788,
    ('zlib', 'float16', False, 'pass'): 0.8687,
    ('lzma', 'float16', False, 'pass'): 0.814,
    ('zstd', 'float16', False, 'pass'): 0.8586,
    ('brotli', 'float16', False, 'pass'): 0.7914,
    ('zlib', 'float16', True, 'pass'): 0.8033,
    ('lzma', 'float16', True, 'pass'): 0.7717,
    ('zstd', 'float16', True, 'pass'): 0.7951,
    ('brotli', 'float16', True, 'pass'): 0.764,
    ('zlib', 'float32', False, 'pass'): 0.8943,
    ('lzma', 'float32', False, 'pass'): 0.8562,
    ('zstd', 'float32', False, 'pass'): 0.8905,
    ('brotli', 'float32', False, 'pass'): 0.873,
    ('zlib', 'float32', True, 'pass'): 0.8052,
    ('lzma', 'float32', True, 'pass'): 0.7989,
    ('zstd', 'float32', True, 'pass'): 0.8036,
    ('brotli', 'float32', True, 'pass'): 0.7988,
}
# Container + serialization overhead after compression, keyed (container, compressor):
# (constant, per passthrough tensor, per quantized tensor) bytes. calibrate_sizemodel.py --overhead
# (torch.save: zip entry + 64-byte alignment per storage, names repeated in the pickle dicts).
OVERHEAD: dict[tuple[str, str], tuple[float, float, float]] = {
    ('torch', 'zlib'): (720.2, 40.44, 79.51),
    ('torch', 'lzma'): (803.3, 19.0, 34.18),
    ('torch', 'zstd'): (784.3, 28.56, 55.0),
    ('torch', 'brotli'): (789.4, 20.58, 38.33),
    ('torch', 'none'): (1100.0, 120.0, 240.0),     # rough: raw zip/pickle bytes, not measured
    ('recurc', 'zlib'): (129.9, 2.8, 2.73),
    ('recurc', 'lzma'): (143.1, 1.14, 1.09),
    ('recurc', 'zstd'): (129.6, 1.67, 1.56),
    ('recurc', 'brotli'): (130.2, 1.27, 1.43),
    ('recurc', 'none'): (20.0, 90.0, 110.0),        # rough: JSON header bytes, not measured
}
# Relative band added to every prediction for effects the model leaves out (compressor block
# boundaries, GPTQ's slightly wider value histogram): the worst synthetic error measured.
MODEL_REL_ERR = 0.005


# ----------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class TensorDesc:
    name: str
    shape: tuple[int, ...]
    group: str
    dtype: str = "float32"


@dataclass
class GroupEstimate:
    raw_bytes: int = 0          # exact: values + scales + passthrough bytes before compression
    compressed: float = 0.0     # predicted compressed bytes of this group's streams
    low: float = 0.0
    high: float = 0.0


@dataclass
class SizeEstimate:
    groups: dict[str, GroupEstimate] = field(default_factory=lambda: {g: GroupEstimate() for g in GROUPS})
    overhead: float = 0.0       # container + serialization, compressed
    n_passthrough: int = 0
    n_quantized: int = 0

    @property
    def raw_bytes(self) -> int:
        return sum(g.raw_bytes for g in self.groups.values())

    @property
    def total(self) -> float:
        return self.overhead + sum(g.compressed for g in self.groups.values())

    @property
    def low(self) -> float:
        return self.overhead + sum(g.low for g in self.groups.values())

    @property
    def high(self) -> float:
        return self.overhead + sum(g.high for g in self.groups.values())


# ----------------------------------------------------------------------------- weight shape
_XMAX = 60.0
_NGRID = 24001


@lru_cache(maxsize=64)
def _shape_table(beta: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Grid x >= 0 and two-sided survival S(x) = P(|X| > x) of the unit-variance generalized
    Gaussian; plus E|X|. Integrated numerically (no scipy), tail summed from the far end so
    that S stays accurate down to 1e-300."""
    a = math.sqrt(math.gamma(1.0 / beta) / math.gamma(3.0 / beta))
    x = np.linspace(0.0, _XMAX, _NGRID)
    f = np.exp(-np.power(x / a, beta))
    dx = x[1] - x[0]
    seg = 0.5 * (f[1:] + f[:-1]) * dx
    tail = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])
    tail /= tail[0]
    mean_abs = float(np.sum(0.5 * (x[1:] * f[1:] + x[:-1] * f[:-1]) * dx) / np.sum(seg))
    return x, tail, mean_abs


@lru_cache(maxsize=64)
def _log_surv_table(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """log S on the grid, computed once per shape (it used to be recomputed on every call)."""
    gx, s, _ = _shape_table(beta)
    return gx, np.log(np.maximum(s, 1e-300))


def _surv(x: np.ndarray, beta: float) -> np.ndarray:
    gx, ls = _log_surv_table(beta)
    return np.exp(np.interp(x, gx, ls))


def _inv_surv(s: np.ndarray, beta: float) -> np.ndarray:
    gx, ls = _log_surv_table(beta)
    return np.interp(np.log(s), ls[::-1], gx[::-1])


_QUAD = (np.arange(16) + 0.5) / 16      # quadrature points of the rows' clip distribution


def _order_stat_quantiles(n: int, j: int, beta: float) -> np.ndarray:
    """Quantiles (at _QUAD) of the (j+1)-th largest |x| of n samples, by bisection on
    P(at most j of n exceed x) = sum_{i<=j} C(n,i) s^i (1-s)^(n-i), s = S(x)."""
    lo = np.full(_QUAD.shape, 0.0)
    hi = np.full(_QUAD.shape, _XMAX * 0.99)
    logc = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(j + 1)]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        s = np.clip(_surv(mid, beta), 1e-300, 1 - 1e-16)
        cdf = sum(np.exp(lc + i * np.log(s) + (n - i) * np.log1p(-s)) for i, lc in enumerate(logc))
        below = cdf < _QUAD
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


@lru_cache(maxsize=4096)
def _percentile_clips(n: int, pct: float, beta: float) -> tuple[float, ...]:
    """Clip/sigma of a row of n values at percentile pct, at the quadrature points, with
    torch.quantile's linear interpolation between the order statistics around rank pct*(n-1)."""
    rank = np.float32(pct / 100.0) * np.float32(n - 1)
    lo, w = int(np.floor(rank)), float(rank - np.floor(rank))
    j_lo = n - 1 - lo                      # how many values lie above the lower order statistic
    if j_lo > 20:                          # interior quantile: concentrated, use the population one
        return tuple(np.full(_QUAD.shape, float(_inv_surv(np.array([1.0 - pct / 100.0]), beta)[0])))
    below = _order_stat_quantiles(n, j_lo, beta)
    above = _order_stat_quantiles(n, max(j_lo - 1, 0), beta) if w > 0 else below
    return tuple((1 - w) * below + w * above)


# ----------------------------------------------------------------------------- entropy
def _level_probs(step: np.ndarray, clip: np.ndarray, qmax: int, beta: float) -> np.ndarray:
    """P(level j), j = 0..qmax (|level|; the sign splits it evenly), for each (step, clip) pair
    in sigma units: values beyond the clip land on the top level round(clip/step)."""
    j = np.arange(qmax + 1)
    top = np.minimum(np.round(clip / step), qmax).astype(int)
    edges = (j[None, :] + 0.5) * step[:, None]                     # upper edge of |level| j
    s = _surv(edges, beta)
    p = np.concatenate([1 - s[:, :1], s[:, :-1] - s[:, 1:]], axis=1)
    # fold everything above the top level onto it
    for r, t in enumerate(top):
        p[r, t] = s[r, t - 1] if t > 0 else 1.0
        p[r, t + 1:] = 0.0
    return p


def huffman_bits(p: np.ndarray) -> float:
    """Expected code length (bits/symbol) of a Huffman code for probabilities p. Brotli's and
    zstd's literal coders are Huffman coders: their measured excess over the entropy follows the
    Huffman redundancy (which jumps with the exact probabilities) plus a small smooth residual."""
    p = [float(x) for x in p if x > 0]
    if len(p) < 2:
        return 0.0
    heap = [(x, i, (i,)) for i, x in enumerate(p)]
    heapq.heapify(heap)
    depth = [0] * len(p)
    k = len(p)
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        for i in a[2] + b[2]:
            depth[i] += 1
        heapq.heappush(heap, (a[0] + b[0], k, a[2] + b[2]))
        k += 1
    return float(sum(x * d for x, d in zip(p, depth)))


def _entropy_from_abs_probs(p: np.ndarray) -> tuple[float, float]:
    """(entropy, Huffman length) in bits of a symmetric integer variable given P(|level|=j)."""
    p = np.maximum(p, 0.0)
    p = p / p.sum()
    sym = np.concatenate([p[:0:-1] / 2, p[:1], p[1:] / 2])
    sym = sym[sym > 1e-15]
    return float(-(sym * np.log2(sym)).sum()), huffman_bits(sym)


@lru_cache(maxsize=8192)
def value_entropy(kind: str, bits: int, rule: str, value: float, n: int, beta: float,
                  sigma: float | None) -> tuple[float, float]:
    """(entropy, Huffman length) in bits/value of a tensor's quantized values under the weight-shape model.

    n: values sharing one scale (row length, or numel for per-tensor); sigma: absolute weight std
    (only used by the percentile rule's scale floor 1/qmax; None = floor inactive)."""
    if kind == "ternary":
        _, _, m = _shape_table(beta)
        p0 = 1.0 - float(_surv(np.array([0.5 * m]), beta)[0])
        return _entropy_from_abs_probs(np.array([p0, 1.0 - p0]))
    qmax = 2 ** (bits - 1) - 1
    if rule == "std":
        clip = np.array([value])
    else:
        clip = np.array(_percentile_clips(n, value, beta))
    step = clip / qmax
    if rule == "percentile" and sigma is not None:
        step = np.maximum(step, 1.0 / qmax / sigma)
    p = _level_probs(step, clip, qmax, beta).mean(axis=0)     # mixture over rows
    return _entropy_from_abs_probs(p)


HUFFMAN_BASED = ("zlib", "zstd", "brotli")   # their residual knots are measured above the Huffman length


def coded_bits(compressor: str, h: float, huff: float) -> float:
    """Predicted bits/value of a stream of i.i.d. values with entropy h and Huffman length huff."""
    knots = EXCESS_KNOTS[compressor]
    base = huff if compressor in HUFFMAN_BASED else h
    return max(base + float(np.interp(h, [k[0] for k in knots], [k[1] for k in knots])), ZERO_ENTROPY_FLOOR)


def stream_ratio(compressor: str, dtype: str, shuffle: bool, kind: str) -> float:
    """Compressed/raw ratio of a float stream ("scale" or "pass"); 1.0 for 1-byte streams."""
    if compressor == "none" or np.dtype(dtype).itemsize == 1:
        return 1.0
    return STREAM_RATIO.get((compressor, np.dtype(dtype).name, shuffle, kind), 1.0)


# ----------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class ShapeAssumption:
    """What is assumed about the weights: generalized-Gaussian shape and, optionally, the
    absolute std per group (matters only for the percentile rule's 1/qmax scale floor)."""
    beta: float = TRAINED_BETA
    sigma: tuple[tuple[str, float], ...] = ()

    def sigma_of(self, group: str) -> float | None:
        return dict(self.sigma).get(group)


def _tensor_value_bits(plan: TensorPlan, shape: tuple[int, ...], group: str, comp: str,
                       assume: ShapeAssumption, beta: float) -> float:
    numel = int(np.prod(shape, dtype=np.int64))
    n = shape[1] if plan.per_row else numel
    gq = plan.gq
    assert gq is not None
    h, huff = value_entropy(plan.kind, plan.bits, gq.clip.kind, float(gq.clip.value), int(n), beta,
                            assume.sigma_of(group))
    return numel * coded_bits(comp, h, huff)


def predict(tensors: Iterable[TensorDesc | tuple], spec: QuantSpec,
            assume: ShapeAssumption | None = None) -> SizeEstimate:
    """Predict raw and compressed bytes per group, with a band from the weight-shape range.

    `tensors`: TensorDesc or (name, shape, group[, dtype]) tuples."""
    assume = assume or ShapeAssumption()
    comp, shuffle = spec.compressor.name, spec.compressor.byte_shuffle
    est = SizeEstimate()
    betas = (assume.beta,) if assume.beta != TRAINED_BETA else (TRAINED_BETA, *TRAINED_BETA_RANGE)
    counts: dict[tuple[tuple[int, ...], str, str], int] = {}
    for t in tensors:   # identical (shape, dtype, group) tensors share one computation
        d = t if isinstance(t, TensorDesc) else TensorDesc(t[0], tuple(t[1]), t[2], *(t[3:] or ()))
        key = (tuple(d.shape), d.dtype, d.group)
        counts[key] = counts.get(key, 0) + 1
    for (shape, dtype, group), count in counts.items():
        d = TensorDesc("", shape, group, dtype)
        plan = plan_tensor(d.shape, d.dtype, d.group, spec)
        numel = int(np.prod(d.shape, dtype=np.int64)) * count
        g = est.groups[d.group]
        if plan.kind == "passthrough":
            est.n_passthrough += count
            nb = numel * np.dtype(plan.store_dtype).itemsize
            c = nb * stream_ratio(comp, plan.store_dtype, shuffle, "pass")
            g.raw_bytes += nb
            g.compressed += c
            g.low += c * (1 - MODEL_REL_ERR)
            g.high += c * (1 + MODEL_REL_ERR)
            continue
        est.n_quantized += count
        n_scales = (d.shape[0] if plan.per_row else 1) * count
        sb = n_scales * np.dtype(plan.scale_dtype).itemsize
        sc = sb * stream_ratio(comp, plan.scale_dtype, shuffle, "scale")
        vals = [count * _tensor_value_bits(plan, d.shape, d.group, comp, assume, b) / 8 for b in betas]
        g.raw_bytes += numel + sb
        g.compressed += vals[0] + sc
        g.low += (min(vals) + sc) * (1 - MODEL_REL_ERR)
        g.high += (max(vals) + sc) * (1 + MODEL_REL_ERR)
    a, bp, bq = OVERHEAD[(spec.container, comp)]
    est.overhead = a + bp * est.n_passthrough + bq * est.n_quantized
    return est


# ----------------------------------------------------------------------------- reference shapes
def baseline_tensors(vocab: int = 1024, layers: int = 9, dim: int = 512, kv_dim: int = 256,
                     mlp: int = 1024, heads: int = 8) -> list[TensorDesc]:
    """The challenge baseline's state dict (FACTS.md), in its named_parameters order."""
    out = [TensorDesc("skip_weights", (layers // 2, dim), "scalars"),
           TensorDesc("tok_emb.weight", (vocab, dim), "embeddings")]
    for i in range(layers):
        p = f"blocks.{i}."
        out += [TensorDesc(p + "attn_scale", (dim,), "scalars"), TensorDesc(p + "mlp_scale", (dim,), "scalars"),
                TensorDesc(p + "resid_mix", (2, dim), "scalars"), TensorDesc(p + "attn.q_gain", (heads,), "scalars"),
                TensorDesc(p + "attn.c_q.weight", (dim, dim), "attention"),
                TensorDesc(p + "attn.c_k.weight", (kv_dim, dim), "attention"),
                TensorDesc(p + "attn.c_v.weight", (kv_dim, dim), "attention"),
                TensorDesc(p + "attn.proj.weight", (dim, dim), "attention"),
                TensorDesc(p + "mlp.fc.weight", (mlp, dim), "mlp"),
                TensorDesc(p + "mlp.proj.weight", (dim, mlp), "mlp")]
    return out


def group_of_name(name: str) -> str:
    """Best-effort group of a challenge-style parameter name (for checkpoints without a Plan)."""
    if any(k in name for k in ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight", "skip_gate")):
        return "scalars"
    if "emb" in name or "lm_head" in name:
        return "embeddings"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "per_pass"
