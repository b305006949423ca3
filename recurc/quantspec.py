"""Validated configuration of quantization and compression (the `quant:` section of a spec).

Kept apart from spec.py because recurc/quant.py (the one implementation of the
export format) and the torch-free estimator both read it.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import SpecError
from .ir import CLIP_SEARCH_QUANTILES, GROUPS, QuantPatch as IRQuantPatch, QuantSettings, Storage
from .ir import GroupQuant as IRGroupQuant
from .strict import Strict

Group = Literal["embeddings", "attention", "mlp", "per_pass", "scalars"]


class ClipRule(Strict):
    """Where a row is clipped before rounding.

    percentile: clip = q-th percentile of |w| over the row (baseline: 99.99984).
    std:        clip = k * std(row) ("SDClip", e.g. k=12.85 for int6 matrices).
    absmax:     clip = max|w| of the row, scale = absmax/qmax with no floor (int8 gate rows).
    search:     "GPTQ-lite": of the row quantiles `candidates` of |w| (1.0 = absmax), the clip
                whose rounding has the least squared error, chosen per row or per matrix (`per`);
                the scale floored at 1/qmax, as percentile's (the records' clamp_min(1/clip_range)).
    `value` is read by percentile and std only.
    """
    kind: Literal["percentile", "std", "absmax", "search"] = "percentile"
    value: float = Field(99.99984, gt=0)
    candidates: tuple[float, ...] = CLIP_SEARCH_QUANTILES
    per: Literal["row", "matrix"] = "row"

    @model_validator(mode="after")
    def _range(self) -> "ClipRule":
        if self.kind == "percentile" and not (0 < self.value <= 100):
            raise ValueError("a percentile clip must lie in (0, 100]")
        if not self.candidates or not all(0 < c <= 1 for c in self.candidates):
            raise ValueError("clip search candidates are row quantiles in (0, 1], at least one")
        return self


class QuantPatch(Strict):
    """Fields of a group's rule that a per-tensor override or a rank rule replaces; unset keeps."""
    scheme: Literal["int", "ternary", "fp8", "fp16", "fp32"] | None = None
    bits: int | None = Field(None, ge=2, le=8)
    clip: ClipRule | None = None
    gptq: bool | None = None
    scale_dtype: Literal["fp16", "fp32"] | None = None
    group_size: int | None = Field(None, ge=0)
    packing: Literal["int8", "base3"] | None = None
    fp8_scale: Literal["none", "row"] | None = None


class GroupQuant(Strict):
    """How the tensors of one group are stored in the artifact.

    scheme "int": symmetric per-row integers in [-(2^(b-1)-1), 2^(b-1)-1] with one scale per row
    (per tensor for 1-D); "ternary": {-1,0,1} with one absmean scale per row, or per `group_size`
    values of the flattened tensor, one byte a value or base-3 packed 5 a byte (`packing`);
    "fp8": e4m3 bytes, plain or with rows scaled to absmax 448 (`fp8_scale: row`, fp16 scales);
    "fp16"/"fp32": passthrough.
    """
    scheme: Literal["int", "ternary", "fp8", "fp16", "fp32"] = "int"
    bits: int = Field(8, ge=2, le=8)
    clip: ClipRule = ClipRule()
    gptq: bool = False
    scale_dtype: Literal["fp16", "fp32"] = "fp16"
    group_size: int = Field(0, ge=0)
    packing: Literal["int8", "base3"] = "int8"
    fp8_scale: Literal["none", "row"] = "none"

    @model_validator(mode="after")
    def _consistent(self) -> "GroupQuant":
        problem = _rule_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def _rule_problem(gq: "GroupQuant | IRGroupQuant", resolved: bool = False) -> str:
    """Why a group rule cannot be stored, or "" (checked again after overrides apply; there a
    group's `gptq` is simply not used by a tensor an override moves to another scheme)."""
    if gq.group_size and gq.scheme != "ternary":
        return "group_size applies to scheme ternary only"
    if gq.packing == "base3" and gq.scheme != "ternary":
        return "packing base3 holds ternary values only (5 trits a byte)"
    if gq.gptq and gq.scheme != "int" and not resolved:
        return "gptq applies to scheme int only"
    return ""


def _globs(v: object) -> object:
    return [v] if isinstance(v, str) else v


class Override(Strict):
    """`quant.overrides: [{match: GLOB|[GLOB..], set: {...}, force: bool}]`: tensors whose
    state-dict name matches a glob (fnmatch: `*`, `?`, `[45]`) take the fields of `set`, in list
    order (a later override wins). `force` quantizes a matching tensor even when it has at most
    passthrough_max_numel elements, e.g. int8 per row for small gate matrices:
    `{match: "blocks.*.attn.gate.weight", set: {bits: 8, clip: {kind: absmax}}, force: true}`."""
    match: tuple[str, ...] = Field(min_length=1)
    set: QuantPatch = QuantPatch()
    force: bool = False

    _m = field_validator("match", mode="before")(classmethod(lambda cls, v: _globs(v)))


class RankRule(Strict):
    """`quant.rank`: mixed precision by Hessian-trace rank. Of the integer matrices whose names
    match `match`, the ones matching `forced` always take `top`; of the others, the `count` (or
    `fraction`) with the largest trace of their Hessian (X^T X of their input) take `top` too, the
    rest take `rest`. Without a Hessian for a candidate the export refuses, or (`without_hessians:
    top|rest`) puts it in that set. Estimates (no Hessians) assume `rest` unless it says `top`."""
    match: tuple[str, ...] = ("*",)
    forced: tuple[str, ...] = ()
    count: int | None = Field(None, ge=0)
    fraction: float | None = Field(None, ge=0, le=1)
    top: QuantPatch = QuantPatch(bits=6)
    rest: QuantPatch = QuantPatch(bits=5)
    by: Literal["hessian_trace"] = "hessian_trace"
    without_hessians: Literal["refuse", "top", "rest"] = "refuse"

    _m = field_validator("match", "forced", mode="before")(classmethod(lambda cls, v: _globs(v)))

    @model_validator(mode="after")
    def _one_size(self) -> "RankRule":
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give the rank rule exactly one of count or fraction")
        return self


class LQER(Strict):
    """`quant.lqer`: of the integer matrices matching `match`, the `top_k` with the largest
    quantization-error norm ||W - Q||_F also store a rank-`rank` SVD of the error E = U S Vᵀ:
    A = U·S as `a_bits` integers with one fp16 scale per matrix, B = Vᵀ as `b_bits` integers with
    one fp16 scale per `b_group` columns; the dequantized weight is Q + A·B."""
    rank: int = Field(4, ge=1, le=64)
    top_k: int = Field(3, ge=1)
    a_bits: int = Field(2, ge=2, le=8)
    b_bits: int = Field(4, ge=2, le=8)
    b_group: int = Field(64, ge=1)
    match: tuple[str, ...] = ("*",)

    _m = field_validator("match", mode="before")(classmethod(lambda cls, v: _globs(v)))


class Compressor(Strict):
    name: Literal["zlib", "lzma", "zstd", "brotli", "none"] = "zlib"
    level: int | None = None          # None: the compressor's maximum (zlib 9, lzma 9, zstd 22, brotli 11)
    byte_shuffle: bool = False        # transpose bytes of multi-byte streams before compressing

    @model_validator(mode="after")
    def _level(self) -> "Compressor":
        limits = {"zlib": (0, 9), "lzma": (0, 9), "zstd": (1, 22), "brotli": (0, 11), "none": (0, 0)}
        lo, hi = limits[self.name]
        if self.level is not None and not (lo <= self.level <= hi):
            raise ValueError(f"{self.name} level must lie in {lo}..{hi}, got {self.level}")
        return self

    @property
    def effective_level(self) -> int:
        return self.level if self.level is not None else {"zlib": 9, "lzma": 9, "zstd": 22, "brotli": 11, "none": 0}[self.name]


class QuantSpec(Strict):
    """Per-group quantization plus the container and compressor of the artifact.

    A float tensor with at most `passthrough_max_numel` elements is never quantized: it is
    stored as `passthrough_dtype`, except control tensors (group "scalars" and "per_pass")
    which are stored as `control_dtype` — the baseline keeps those fp32.
    """
    groups: dict[Group, GroupQuant] = Field(default_factory=lambda: {
        g: GroupQuant() for g in ("embeddings", "attention", "mlp")})
    passthrough_max_numel: int = Field(65536, ge=0)
    passthrough_dtype: Literal["fp16", "fp32"] = "fp16"
    control_dtype: Literal["fp16", "fp32"] = "fp32"
    container: Literal["torch", "recurc"] = "torch"   # torch.save dict (baseline) or recurc's flat format
    compressor: Compressor = Compressor()
    # the trained-weight profile the size model assumes (recurc/profiles.py): a built-in name or a
    # JSON file from `recurc measure --save-profile` (relative to the spec file)
    # (`auto`: derived from the training budget, docs/size-model.md)
    weights: str = "auto"
    # a sibling spec whose artifact was measured, "PATH=BYTES" (compressed model bytes; PATH
    # relative to the spec file): the size model then predicts only the difference to it
    anchor: str | None = None
    # export: when the artifact comes out over the budget, prune the cheapest ±1 values, then coarsen
    # a clip or drop a bit, until it fits `fit_margin` bytes under it (recurc/fit_budget.py)
    fit_budget: bool = True
    fit_margin: int = Field(0, ge=0)
    overrides: tuple[Override, ...] = ()
    rank: RankRule | None = None
    lqer: LQER | None = None

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        from .profiles import load_profile
        load_profile(v)     # a clear error now rather than at estimate time
        return v

    @field_validator("anchor")
    @classmethod
    def _anchor(cls, v: str | None) -> str | None:
        if v is not None:
            from .profiles import split_anchor
            split_anchor(v)     # a ValueError, which pydantic reports at the value's position
        return v


# ----------------------------------------------------------------------------- per-tensor rules
Kind = Literal["int", "ternary", "fp8", "passthrough"]
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_STORE_DTYPES = {"fp16": "float16", "fp32": "float32"}
_PATCH_FIELDS = ("scheme", "bits", "clip", "gptq", "scale_dtype", "group_size", "packing", "fp8_scale")


def plan_tensor(shape: tuple[int, ...], dtype: str, group: str, spec: QuantSettings, name: str = "",
                top: bool | None = None) -> Storage:
    """Decide the storage of a tensor from (shape, dtype, group, the resolved quant settings, its
    state-dict name): no data needed, so the export (recurc.quant) and the size model
    (recurc.sizemodel) apply the very same rule. `dtype` is a numpy dtype name ("float32", ...).
    `top` is the rank rule's data-driven decision for this tensor (recurc.quant.rank_top);
    None (no Hessians, e.g. an estimate) takes the rule's provisional choice.

    Order: the group's rule; each override whose glob matches `name`, in list order; then, for
    an integer matrix the rank rule selects, its top or rest patch."""
    if group not in GROUPS:
        raise SpecError(f"unknown tensor group {group!r}", hint=f"groups are {', '.join(GROUPS)}")
    if dtype not in FLOAT_DTYPES:
        return Storage("passthrough", store_dtype=dtype)
    gq, quantized = _resolved(shape, group, spec, name)
    rank = getattr(spec, "rank", None)
    if quantized and rank is not None and is_rank_candidate(shape, name, gq, rank):
        if _matches(name, rank.forced):
            top = True
        elif top is None:
            top = rank.without_hessians == "top"
        gq = _patched(gq, rank.top if top else rank.rest)
    if gq is not None and gq.scheme in ("fp16", "fp32"):
        return Storage("passthrough", store_dtype=_STORE_DTYPES[gq.scheme])
    if not quantized:
        pd = spec.control_dtype if group in ("scalars", "per_pass") else spec.passthrough_dtype
        return Storage("passthrough", store_dtype=_STORE_DTYPES[pd])
    assert gq is not None
    problem = _rule_problem(gq, resolved=True)
    if problem:
        raise SpecError(f"tensor {name or shape}: {problem}", hint="check quant.overrides and quant.rank")
    per_row = len(shape) == 2
    sd = _STORE_DTYPES[gq.scale_dtype] if per_row else "float32"
    if gq.scheme == "ternary":
        if gq.group_size:
            return Storage("ternary", bits=2, per_row=False, scale_dtype=_STORE_DTYPES[gq.scale_dtype], gq=gq)
        return Storage("ternary", bits=2, per_row=per_row, scale_dtype=sd, gq=gq)
    if gq.scheme == "fp8":
        return Storage("fp8", bits=8, per_row=per_row and gq.fp8_scale == "row", scale_dtype=sd, gq=gq)
    return Storage("int", bits=gq.bits, per_row=per_row, scale_dtype=sd, gq=gq)


def _resolved(shape: tuple[int, ...], group: str, spec: QuantSettings, name: str) -> "tuple[IRGroupQuant | GroupQuant | None, bool]":
    """The group's rule after the overrides matching `name`, and whether the tensor is quantized
    (a rule exists and the tensor is larger than passthrough_max_numel or an override forces it)."""
    gq, force = spec.groups.get(group), False  # type: ignore[call-overload]
    for ov in getattr(spec, "overrides", ()):
        if name and _matches(name, ov.match):
            gq = _patched(gq, ov.set)
            force = force or ov.force
    return gq, gq is not None and (force or math.prod(shape) > spec.passthrough_max_numel)


def rank_candidates(tensors: "list[tuple[str, tuple[int, ...], str, str]]", spec: QuantSettings) -> tuple[list[str], list[str]]:
    """(forced, ranked): the names of (name, shape, dtype, group) tensors the rank rule places
    always in `top`, and those it places by their Hessian trace."""
    rank = getattr(spec, "rank", None)
    forced: list[str] = []
    ranked: list[str] = []
    if rank is None:
        return forced, ranked
    for name, shape, dtype, group in tensors:
        if dtype not in FLOAT_DTYPES:
            continue
        gq, quantized = _resolved(shape, group, spec, name)
        if quantized and gq is not None and is_rank_candidate(shape, name, gq, rank):
            (forced if _matches(name, rank.forced) else ranked).append(name)
    return forced, ranked


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def _patched(gq: "IRGroupQuant | GroupQuant | None", patch: "IRQuantPatch | QuantPatch") -> "IRGroupQuant | GroupQuant":
    """`gq` with the set fields of `patch` (a tensor outside spec.groups starts from the defaults)."""
    base = gq if gq is not None else IRGroupQuant()
    update = {f: getattr(patch, f) for f in _PATCH_FIELDS if getattr(patch, f) is not None}
    if not update:
        return base
    if dataclasses.is_dataclass(base):
        return dataclasses.replace(base, **update)
    return base.model_copy(update=update)   # a pydantic GroupQuant (a QuantSpec passed directly)


def is_rank_candidate(shape: tuple[int, ...], name: str, gq: "IRGroupQuant | GroupQuant", rank: object) -> bool:
    """An integer matrix (before the rank patch) that the rank rule's `match` selects."""
    return len(shape) == 2 and gq.scheme == "int" and bool(name) and _matches(name, rank.match)  # type: ignore[attr-defined]


def rank_top_count(rank: object, n_ranked: int) -> int:
    """How many of `n_ranked` non-forced candidates take the rank rule's `top` patch."""
    if rank.count is not None:  # type: ignore[attr-defined]
        return min(rank.count, n_ranked)  # type: ignore[attr-defined]
    return min(n_ranked, int(math.floor(rank.fraction * n_ranked + 0.5)))  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- raw bytes
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1, "int16": 2,
             "int32": 4, "int64": 8, "bool": 1}


def raw_bytes(storage: Storage, shape: tuple[int, ...]) -> int:
    """Bytes a tensor's values and scales take in the artifact before container and compression
    (exactly what recurc's container streams hold for it, the LQER factors aside: lqer_raw_bytes).
    int: a byte a value; ternary: a byte a value, or ceil(n/5) base-3 packed; fp8: a byte a value;
    plus the scales (one per row, per group, or one fp32 per tensor; fp8 unscaled: none)."""
    n = math.prod(shape)
    if storage.kind == "passthrough":
        return n * _ITEMSIZE[storage.store_dtype]
    gq = storage.gq
    scale = _ITEMSIZE[storage.scale_dtype]
    values = -(-n // 5) if gq is not None and gq.packing == "base3" else n
    if storage.kind == "ternary" and gq is not None and gq.group_size:
        return values + -(-n // gq.group_size) * scale
    if storage.kind == "fp8" and not storage.per_row:
        return values
    if storage.per_row:
        return values + shape[0] * scale
    return values + 4


def lqer_raw_bytes(shape: tuple[int, ...], lqer: object) -> int:
    """Bytes of one matrix's LQER factors: A (rows x r) and B (r x cols) a byte a value, A's one
    fp16 scale, B's fp16 scale per `b_group` columns of each of its r rows."""
    rows, cols = shape
    r = min(lqer.rank, rows, cols)  # type: ignore[attr-defined]
    return rows * r + 2 + r * cols + r * -(-cols // lqer.b_group) * 2  # type: ignore[attr-defined]
