"""Predict the artifact's compressed model bytes from tensor shapes alone (no torch, no weights).

Model (docs/size-model.md has the derivation and the measured errors):
  bytes = sum over quantized tensors of numel * (coded_c(H) + gptq_bits) / 8     (the int values)
        + scale bytes * ratio_c(scale dtype, shuffle)
        + passthrough bytes * ratio_c(dtype, shuffle)
        + container overhead (a_c + b_c * number of tensors)
H is the entropy of a tensor's quantized values under a generalized-Gaussian weight shape
(recurc/entropy.py), with the shape β and GPTQ's extra bits per tensor role taken from a
trained-weight profile (recurc/profiles.py). coded_c(H) is each compressor's measured cost on
i.i.d. quantized data. The band is the profile's own, measured by leave-one-out over the artifacts
it was calibrated on (recurc/calibration.py).

Every constant below says where it came from; benchmarks/calibrate_sizemodel.py re-measures them.
This module imports neither torch nor numpy: entropies come from an on-disk cache, and only a
combination not yet computed loads recurc.entropy (numpy).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

from recurc.atomic import atomic_write
from recurc.profiles import PROFILES, ROLES, TRAINED_BETA, WeightProfile, load_profile, weight_role  # noqa: F401
from recurc.ir import GROUPS, QuantSettings, Storage
from recurc.quantspec import QuantSpec, plan_tensor, raw_bytes  # noqa: F401 - QuantSpec() is a valid `spec` too

# ----------------------------------------------------------------------------- constants
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
    ('recurc', 'zlib'): (130.4, 2.8, 2.74),
    ('recurc', 'lzma'): (140.9, 1.14, 1.14),
    ('recurc', 'zstd'): (128.6, 1.66, 1.56),
    ('recurc', 'brotli'): (129.6, 1.43, 1.55),
    ('recurc', 'none'): (20.0, 90.0, 110.0),        # rough: JSON header bytes, not measured
}
# Relative band added to every prediction for effects the model leaves out (compressor block
# boundaries, the Huffman redundancy of real histograms): the worst synthetic error measured.
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


HUFFMAN_BASED = ("zlib", "zstd", "brotli")   # their residual knots are measured above the Huffman length
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1, "bool": 1,
             "int16": 2, "int32": 4, "int64": 8}


def _itemsize(dtype: str) -> int:
    if dtype in _ITEMSIZE:
        return _ITEMSIZE[dtype]
    import numpy as np   # an unusual dtype name: let numpy say
    return np.dtype(dtype).itemsize


def _interp(x: float, knots: tuple[tuple[float, float], ...]) -> float:
    """Piecewise-linear interpolation through (x, y) knots, constant beyond the ends (np.interp)."""
    xs = [k[0] for k in knots]
    i = bisect.bisect_right(xs, x)
    if i == 0:
        return knots[0][1]
    if i == len(knots):
        return knots[-1][1]
    (x0, y0), (x1, y1) = knots[i - 1], knots[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def coded_bits(compressor: str, h: float, huff: float) -> float:
    """Predicted bits/value of a stream of i.i.d. values with entropy h and Huffman length huff."""
    base = huff if compressor in HUFFMAN_BASED else h
    return max(base + _interp(h, EXCESS_KNOTS[compressor]), ZERO_ENTROPY_FLOOR)


def stream_ratio(compressor: str, dtype: str, shuffle: bool, kind: str) -> float:
    """Compressed/raw ratio of a float stream ("scale" or "pass"); 1.0 for 1-byte streams."""
    if compressor == "none" or _itemsize(dtype) == 1:
        return 1.0
    return STREAM_RATIO.get((compressor, dtype, shuffle, kind), 1.0)


# ----------------------------------------------------------------------------- entropy cache
class _EntropyCache:
    """value_entropy results on disk, keyed by the entropy model's source: computing them needs
    numpy and ~1-10 ms each, reading them needs neither (it keeps `recurc estimate` fast).
    A missing, unreadable or read-only cache only costs the computation."""

    def __init__(self) -> None:
        self.entries: dict[str, list[float]] | None = None
        self.dirty = False

    @cached_property
    def path(self) -> Path:
        root = os.environ.get("RECURC_CACHE_DIR") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recurc"
        src = Path(__file__).with_name("entropy.py").read_bytes()
        return Path(root) / f"entropy-{hashlib.sha256(src).hexdigest()[:16]}.json"

    def get(self, key: str) -> list[float] | None:
        if self.entries is None:
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError):
                loaded = {}
            self.entries = {k: v for k, v in loaded.items() if isinstance(v, list) and len(v) == 2
                            and all(isinstance(x, (int, float)) for x in v)} if isinstance(loaded, dict) else {}
        return self.entries.get(key)

    def put(self, key: str, value: tuple[float, float]) -> None:
        assert self.entries is not None
        self.entries[key] = list(value)
        self.dirty = True

    def flush(self) -> None:
        if not self.dirty or self.entries is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(self.entries, separators=(",", ":")))
            self.dirty = False
        except OSError:
            pass


_CACHE = _EntropyCache()


def value_entropy(kind: str, bits: int, rule: str, value: float, n: int, beta: float,
                  sigma: float | None, candidates: tuple[float, ...] = (), per: str = "row") -> tuple[float, float]:
    """(entropy, Huffman length) in bits/value of a tensor's quantized values (recurc.entropy)."""
    key = (f"{kind}|{bits}|{rule}|{value!r}|{n}|{beta!r}|{sigma!r}" + (f"|{candidates!r}" if candidates else "")
           + (f"|{per}" if per != "row" else ""))
    hit = _CACHE.get(key)
    if hit is None:
        from recurc import entropy
        hit = entropy.value_entropy(kind, bits, rule, value, n, beta, sigma, candidates, per)
        _CACHE.put(key, hit)
    return hit[0], hit[1]


def packed_ternary_entropy(beta: float) -> tuple[float, float]:
    """(entropy, Huffman length) per base-3 packed byte (5 i.i.d. trits): what a compressor codes."""
    key = f"base3|{beta!r}"
    hit = _CACHE.get(key)
    if hit is None:
        from recurc import entropy
        import numpy as np
        h, _ = entropy.value_entropy("ternary", 2, "", 0.0, 1, beta, None)
        p0 = _trit_zero(h)
        trit = np.array([(1 - p0) / 2, p0, (1 - p0) / 2])
        prod = trit
        for _ in range(4):
            prod = np.outer(prod, trit).ravel()
        hit = (5 * h, entropy.huffman_bits(prod))
        _CACHE.put(key, hit)
    return hit[0], hit[1]


def _trit_zero(h: float) -> float:
    """P(0) of a symmetric trit with entropy h (bisection; h rises with P(0) below 1/3)."""
    lo, hi = 1e-9, 1.0 / 3.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        e = -(mid * math.log2(mid) + (1 - mid) * math.log2((1 - mid) / 2))
        lo, hi = (mid, hi) if e < h else (lo, mid)
    return 0.5 * (lo + hi) if h < math.log2(3) - 1e-9 else 1.0 / 3.0


# ----------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class ShapeAssumption:
    """What is assumed about the weights. `profile` (default: the spec's `quant.weights`) gives the
    prediction and the relative width of its band; `beta` fixes one shape for all roles instead
    (synthetic checks; band MODEL_REL_ERR). `sigma`: absolute weight std per group, which matters
    only for the scale floor 1/qmax of the percentile and search rules and for plain FP8.
    `muon`: (matrix_lr, weight_decay) of the training recipe: with weight decay, the std of the
    Muon-trained matrices (groups attention and mlp) where `sigma` gives none is the profile's
    weight-decay equilibrium (`decay_sigma`)."""
    beta: float | None = None
    sigma: tuple[tuple[str, float], ...] = ()
    profile: WeightProfile | None = None
    muon: tuple[float, float] | None = None

    def sigma_of(self, group: str, shape: tuple[int, ...] = (), prof: WeightProfile | None = None) -> float | None:
        given = dict(self.sigma).get(group)
        if given is not None or self.muon is None or prof is None:
            return given
        if group in ("attention", "mlp") and len(shape) == 2:
            return decay_sigma(prof, shape, *self.muon)
        return None

    def resolve(self, spec: QuantSettings) -> tuple[WeightProfile, float]:
        """The profile the prediction uses and the relative half-width of its band."""
        if self.beta is not None:
            return WeightProfile.uniform(self.beta), MODEL_REL_ERR
        prof = self.profile or load_profile(spec.weights)
        return prof, prof.band


def decay_sigma(prof: WeightProfile, shape: tuple[int, ...], lr: float, wd: float) -> float | None:
    """Std of a Muon-trained matrix at the weight-decay equilibrium: each step W ← (1 − lr·wd)·W −
    lr·O, with O the orthogonalised update (entries of RMS 1/√cols after the records' √max(1,
    rows/cols) scaling), holds E‖W‖² where the decay removes what the updates add:
    σ² = τ·lr / (2·wd·cols), τ the updates' correlation time in steps (1 for independent steps),
    the profile's `decay_tau` (fitted; None: unknown, the scale floor is taken as inactive)."""
    if wd <= 0 or prof.decay_tau is None:
        return None
    return math.sqrt(prof.decay_tau * lr / (2.0 * wd * shape[1]))


def _lqer_matrices(descs: list[TensorDesc], storages: list[Storage], spec: QuantSettings) -> set[int]:
    """Indices of the tensors predicted to carry LQER factors: of the integer matrices `match`
    selects, the top_k largest (the export ranks by the error norm ‖W − Q‖_F, which grows with
    the number of values; ties by name, as the export's)."""
    lq = getattr(spec, "lqer", None)
    if lq is None:
        return set()
    import fnmatch
    cands = [i for i, (d, st) in enumerate(zip(descs, storages))
             if st.kind == "int" and len(d.shape) == 2 and any(fnmatch.fnmatchcase(d.name, g) for g in lq.match)]
    cands.sort(key=lambda i: (-math.prod(descs[i].shape), descs[i].name))
    return set(cands[:lq.top_k])


def _lqer_bits(shape: tuple[int, ...], lq, comp: str) -> tuple[float, int, float]:
    """(coded bits of the A and B codes, raw bytes, fp16 scale bytes) of one matrix's LQER factors.
    A = U·S (rows x r, a_bits) and B = Vᵀ (r x cols, b_bits, absmax per b_group columns): their
    values are modelled as Gaussian at the absmax of their scale's group (A: the whole matrix)."""
    rows, cols = shape
    r = min(lq.rank, rows, cols)
    ha, la = value_entropy("int", lq.a_bits, "absmax", 0.0, rows * r, 2.0, None)
    hb, lb = value_entropy("int", lq.b_bits, "absmax", 0.0, min(lq.b_group, cols), 2.0, None)
    bits = rows * r * coded_bits(comp, ha, la) + r * cols * coded_bits(comp, hb, lb)
    scale_bytes = 2 + r * -(-cols // lq.b_group) * 2
    return bits, rows * r + r * cols + scale_bytes, scale_bytes


def _value_bits(st: Storage, shape: tuple[int, ...], comp: str, beta: float, sigma: float | None,
                gptq_bits: float) -> float:
    """Coded bits of one tensor's values (no scales)."""
    numel = math.prod(shape)
    gq = st.gq
    assert gq is not None
    if st.kind == "ternary" and gq.packing == "base3":
        h5, l5 = packed_ternary_entropy(round(beta, 4))
        return -(-numel // 5) * min(coded_bits(comp, h5, l5), 8.0 + ZERO_ENTROPY_FLOOR)
    if st.kind == "fp8":
        h, huff = value_entropy("fp8", 8, "row" if st.per_row else "none", 0.0, int(shape[1] if st.per_row else 1),
                                round(beta, 4), None if sigma is None else round(sigma, 6))
        return numel * coded_bits(comp, h, huff)
    n = shape[1] if st.per_row else numel
    kind = gq.clip.kind
    floored = st.kind == "int" and kind in ("percentile", "search")
    h, huff = value_entropy(st.kind, st.bits, kind, float(gq.clip.value), int(n), round(beta, 4),
                            None if (sigma is None or not floored) else round(sigma, 6),
                            tuple(gq.clip.candidates) if kind == "search" else (),
                            gq.clip.per if kind == "search" else "row")
    extra = gptq_bits if gq.gptq and st.kind == "int" else 0.0
    return numel * (coded_bits(comp, h, huff) + extra)


def predict(tensors: Iterable[TensorDesc | tuple], spec: QuantSettings,
            assume: ShapeAssumption | None = None) -> SizeEstimate:
    """Predict raw and compressed bytes per group, with the band of the trained-weight profile.

    `tensors`: TensorDesc or (name, shape, group[, dtype]) tuples. Each tensor's storage is
    `plan_tensor` with its name, as the export decides it (overrides by name, the rank rule's
    provisional choice without Hessians), so estimate and export take the same decisions."""
    assume = assume or ShapeAssumption()
    prof, band = assume.resolve(spec)
    comp, shuffle = spec.compressor.name, spec.compressor.byte_shuffle
    est = SizeEstimate()
    descs = [t if isinstance(t, TensorDesc) else TensorDesc(t[0], tuple(t[1]), t[2], *(t[3:] or ())) for t in tensors]
    storages = [plan_tensor(tuple(d.shape), d.dtype, d.group, spec, d.name) for d in descs]
    lqer = _lqer_matrices(descs, storages, spec)
    counts: dict[tuple, int] = {}
    for i, (d, st) in enumerate(zip(descs, storages)):   # identical tensors share one computation
        key = (tuple(d.shape), d.dtype, d.group, weight_role(d.name, d.group), st, i in lqer)
        counts[key] = counts.get(key, 0) + 1
    for (shape, dtype, group, role, st, has_lqer), count in counts.items():
        numel = math.prod(shape) * count
        g = est.groups[group]
        if st.kind == "passthrough":
            est.n_passthrough += count
            nb = numel * _itemsize(st.store_dtype)
            c = nb * stream_ratio(comp, st.store_dtype, shuffle, "pass")
            g.raw_bytes += nb
            g.compressed += c
            g.low += c * (1 - band)    # the band was measured on whole artifacts, these bytes included
            g.high += c * (1 + band)
            continue
        est.n_quantized += count
        raw = raw_bytes(st, shape) * count
        values_raw = (-(-math.prod(shape) // 5) if st.gq is not None and st.gq.packing == "base3" else math.prod(shape)) * count
        sb = raw - values_raw
        sc = sb * stream_ratio(comp, st.scale_dtype, shuffle, "scale")
        # percentile, search and absmax clips are row order statistics: they read the tails
        rule = ("percentile" if st.kind == "int" and st.gq is not None and st.gq.clip.kind != "std"
                else "fp8" if st.kind == "fp8" else "std")
        vals = count * _value_bits(st, shape, comp, prof.beta_of(role, rule), assume.sigma_of(group, shape, prof),
                                   prof.gptq_bits_of(role)) / 8
        if has_lqer:
            lbits, lraw, lsb = _lqer_bits(shape, spec.lqer, comp)
            vals += count * lbits / 8
            sc += count * lsb * stream_ratio(comp, "float16", shuffle, "scale")
            raw += count * lraw
            est.n_quantized += 2 * count    # A and B are stored as tensors of their own
        g.raw_bytes += raw
        g.compressed += vals + sc
        g.low += (vals + sc) * (1 - band)
        g.high += (vals + sc) * (1 + band)
    a, bp, bq = OVERHEAD[(spec.container, comp)]
    est.overhead = a + bp * est.n_passthrough + bq * est.n_quantized
    _CACHE.flush()
    return est


# ----------------------------------------------------------------------------- profile fitting
@dataclass(frozen=True)
class TensorEntropy:
    """Measured entropy (bits/value) of one tensor's quantized values, rounded and with GPTQ."""
    name: str
    shape: tuple[int, ...]
    group: str
    entropy_rounded: float
    entropy_gptq: float | None = None


def read_tensor_entropies(path: str | Path) -> list[TensorEntropy]:
    """The per-tensor statistics benchmarks/trained_size.py writes (tensors.json)."""
    d = json.loads(Path(path).read_text())
    return [TensorEntropy(t["name"], tuple(t["shape"]), t["group"], t["entropy_rtn"], t.get("entropy_gptq"))
            for t in d["tensors"]]


def fit_profile(records: Iterable[TensorEntropy], spec: QuantSettings, name: str, source: str = "",
                fallback: WeightProfile | None = None) -> WeightProfile:
    """Per role: the shape β whose predicted entropy, summed over the role's tensors, equals the
    measured sum (β in [0.3, 2] under SDClip, where the Gaussian's β = 2 is the maximum; [0.3, 8]
    under the percentile clip), and GPTQ's mean extra bits/value over the GPTQ'd tensors. Roles
    with no quantized tensor keep `fallback`'s values (default: the challenge-baseline profile)."""
    from recurc import entropy   # bisection over beta: values not worth caching
    fallback = fallback or PROFILES["challenge-baseline"]
    by_role: dict[str, list[tuple[Storage, tuple[int, ...], TensorEntropy]]] = {r: [] for r in ROLES}
    for r in records:
        tp = plan_tensor(tuple(r.shape), "float32", r.group, spec, r.name)
        if tp.kind == "int" and tp.gq is not None:
            by_role[weight_role(r.name, r.group)].append((tp, tuple(r.shape), r))
    beta, gbits = {}, {}
    for role, items in by_role.items():
        if not items:
            beta[role], gbits[role] = fallback.beta_of(role), fallback.gptq_bits_of(role)
            continue
        sizes = [math.prod(s) for _, s, _ in items]
        measured = sum(n * r.entropy_rounded for n, (_, _, r) in zip(sizes, items))

        def predicted(b: float) -> float:
            total = 0.0
            for n, (tp, shape, _) in zip(sizes, items):
                row = shape[1] if tp.per_row else n
                total += n * entropy.value_entropy("int", tp.bits, tp.gq.clip.kind, float(tp.gq.clip.value),
                                                   int(row), b, None)[0]
            return total
        # Entropy rises with beta: under SDClip up to the Gaussian (its maximum), under the
        # percentile clip further (lighter tails, smaller row maxima, finer steps).
        lo, hi = 0.3, (2.0 if any(tp.gq.clip.kind == "std" for tp, _, _ in items) else 8.0)
        if predicted(hi) <= measured:
            lo = hi
        for _ in range(24):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if predicted(mid) < measured else (lo, mid)
        beta[role] = round(0.5 * (lo + hi), 3)
        with_gptq = [(n, r) for n, (_, _, r) in zip(sizes, items) if r.entropy_gptq is not None]
        gbits[role] = (round(sum(n * (r.entropy_gptq - r.entropy_rounded) for n, r in with_gptq)
                             / sum(n for n, _ in with_gptq), 4) if with_gptq else fallback.gptq_bits_of(role))
    return WeightProfile.make(name, beta, gbits, source)


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
