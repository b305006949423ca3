"""The physics of the size model: entropy of quantized weights drawn from a weight-shape model.

A unit-variance generalized Gaussian exp(-|x/a|^beta) (beta = 2 Gaussian, smaller heavier-tailed),
rounded at a step that the clip rule gives (std rule: k*sigma/qmax exactly; percentile rule: an
order statistic of the row, integrated over rows by quadrature). Returns the entropy and the
expected Huffman code length of the values. numpy, no scipy; recurc.sizemodel calls this only
for combinations it has not cached.
"""
from __future__ import annotations

import heapq
import math
from functools import lru_cache

import numpy as np

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


def _top_order_stats(n: int, k: int, beta: float) -> np.ndarray:
    """(k, quadrature points): the 1st..k-th largest |x| of n samples at the same quadrature
    quantiles (comonotone: a row whose maximum is high has its next values high too)."""
    return np.stack([_order_stat_quantiles(n, j, beta) for j in range(k)])


def _searched_clips(n: int, bits: int, candidates: tuple[float, ...], beta: float,
                    floor: float = 0.0, per: str = "row") -> np.ndarray:
    """Clip/sigma per quadrature point of clip `search` (quant.py's "GPTQ-lite"): of the candidate
    row quantiles, the one whose rounding has the least squared error, the error being
    n·step²/12 for the values inside plus the squared excess of the order statistics above the
    clip (clamped to it); per row, or (`per` "matrix") the one least on average over the rows;
    `absmax` is the single candidate 1.0. `floor`: the least clip (sigma units) the scale floor
    1/qmax leaves, i.e. 1/sigma for an absolute weight std sigma (0: no floor). Under the floor
    every candidate below it rounds with the same step, so a small-weight matrix's search is moot."""
    qmax = 2 ** (bits - 1) - 1
    above = max(1, min(n, max(n - 1 - int(np.floor(np.float32(c) * np.float32(n - 1))) for c in candidates) + 1))
    top = _top_order_stats(n, above, beta)
    best_clip = best_err = None
    for c in candidates:
        clip = top[0] if c >= 1.0 else np.array(_percentile_clips(n, 100.0 * c, beta))
        clip = np.maximum(clip, floor)
        step = clip / qmax
        excess = np.clip(top - clip[None, :], 0.0, None)
        err = n * step ** 2 / 12.0 + (excess ** 2).sum(axis=0)
        if per == "matrix":
            err = np.full_like(err, err.mean())
        if best_clip is None:
            best_clip, best_err = clip, err
        else:
            better = err < best_err
            best_clip, best_err = np.where(better, clip, best_clip), np.where(better, err, best_err)
    assert best_clip is not None
    return best_clip


@lru_cache(maxsize=1)
def _fp8_magnitudes() -> np.ndarray:
    """The non-negative e4m3fn values in code order 0..126 (bias 7, subnormals below 2^-6, max 448)."""
    c = np.arange(127)
    e, m = c >> 3, (c & 7).astype(np.float64)
    return np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e - 7.0))


def _fp8_entropy(beta: float, sigma: float | None, n: int, row_scaled: bool) -> tuple[float, float]:
    """(entropy, Huffman length) of e4m3 codes of generalized-Gaussian weights: plain casts read the
    absolute std `sigma` (the subnormals and the saturation at 448 are absolute; None: a std of 1,
    where neither matters); rows scaled to absmax 448 (`row_scaled`) read the row maximum of n values."""
    mags = _fp8_magnitudes()
    edges = np.concatenate([0.5 * (mags[1:] + mags[:-1]), [np.inf]])   # round to nearest code
    if row_scaled:
        scales = _order_stat_quantiles(n, 0, beta) / 448.0               # sigma units per code unit
    else:
        scales = np.array([1.0 / (sigma if sigma else 1.0)])
    p = np.zeros(len(mags))
    for s in scales:
        surv = np.concatenate([[1.0], _surv(np.minimum(edges[:-1] * s, _XMAX), beta), [0.0]])
        p += surv[:-1] - surv[1:]
    return _entropy_from_abs_probs(p / len(scales))


def value_entropy(kind: str, bits: int, rule: str, value: float, n: int, beta: float,
                  sigma: float | None, candidates: tuple[float, ...] = (), per: str = "row") -> tuple[float, float]:
    """(entropy, Huffman length) in bits/value of a tensor's quantized values under the weight-shape model.

    n: values sharing one scale (row length, or numel for per-tensor); sigma: absolute weight std
    (read by the scale floor 1/qmax of the percentile and search rules, and by plain FP8; None:
    floor inactive); candidates, per: the row quantiles of clip `search` and where it chooses.
    kind "fp8": `rule` "row" for rows scaled to absmax 448, else a plain cast."""
    if kind == "ternary":
        _, _, m = _shape_table(beta)
        p0 = 1.0 - float(_surv(np.array([0.5 * m]), beta)[0])
        return _entropy_from_abs_probs(np.array([p0, 1.0 - p0]))
    if kind == "fp8":
        return _fp8_entropy(beta, sigma, n, rule == "row")
    qmax = 2 ** (bits - 1) - 1
    if rule == "std":
        clip = np.array([value])
    elif rule in ("search", "absmax"):
        floor = 1.0 / sigma if (rule == "search" and sigma) else 0.0
        clip = _searched_clips(n, bits, tuple(candidates) if rule == "search" else (1.0,), beta, floor, per)
    else:
        clip = np.array(_percentile_clips(n, value, beta))
    step = clip / qmax
    if rule == "percentile" and sigma is not None:
        step = np.maximum(step, 1.0 / qmax / sigma)
    p = _level_probs(step, clip, qmax, beta).mean(axis=0)     # mixture over rows
    return _entropy_from_abs_probs(p)
