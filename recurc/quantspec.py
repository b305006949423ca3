"""Validated configuration of quantization and compression (the `quant:` section of a spec).

Kept apart from spec.py because recurc/quant.py (the one implementation of the
export format) and the torch-free estimator both read it.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import SpecError
from .ir import GROUPS, QuantSettings, Storage
from .strict import Strict

Group = Literal["embeddings", "attention", "mlp", "per_pass", "scalars"]


class ClipRule(Strict):
    """Where a row is clipped before rounding.

    percentile: clip = q-th percentile of |w| over the row (baseline: 99.99984).
    std:        clip = k * std(row) ("SDClip", e.g. k=12.85 for int6 matrices).
    """
    kind: Literal["percentile", "std"] = "percentile"
    value: float = Field(99.99984, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "ClipRule":
        if self.kind == "percentile" and not (0 < self.value <= 100):
            raise ValueError("a percentile clip must lie in (0, 100]")
        return self


class GroupQuant(Strict):
    """How the tensors of one group are stored in the artifact.

    scheme "int": symmetric per-row integers in [-(2^(b-1)-1), 2^(b-1)-1] with one scale per row
    (per tensor for 1-D); "ternary": {-1,0,1} per row with one scale; "fp16"/"fp32": passthrough.
    """
    scheme: Literal["int", "ternary", "fp16", "fp32"] = "int"
    bits: int = Field(8, ge=2, le=8)
    clip: ClipRule = ClipRule()
    gptq: bool = False
    scale_dtype: Literal["fp16", "fp32"] = "fp16"


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
Kind = Literal["int", "ternary", "passthrough"]
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_STORE_DTYPES = {"fp16": "float16", "fp32": "float32"}


def plan_tensor(shape: tuple[int, ...], dtype: str, group: str, spec: QuantSettings) -> Storage:
    """Decide the storage of a tensor from (shape, dtype, group, the resolved quant settings): no
    data needed, so the export (recurc.quant) and the size model (recurc.sizemodel) apply the very
    same rule. `dtype` is a numpy dtype name ("float32", "int64", ...)."""
    if group not in GROUPS:
        raise SpecError(f"unknown tensor group {group!r}", hint=f"groups are {', '.join(GROUPS)}")
    if dtype not in FLOAT_DTYPES:
        return Storage("passthrough", store_dtype=dtype)
    gq = spec.groups.get(group)  # type: ignore[call-overload]
    if gq is not None and gq.scheme in ("fp16", "fp32"):
        return Storage("passthrough", store_dtype=_STORE_DTYPES[gq.scheme])
    numel = math.prod(shape)
    if gq is None or numel <= spec.passthrough_max_numel:
        pd = spec.control_dtype if group in ("scalars", "per_pass") else spec.passthrough_dtype
        return Storage("passthrough", store_dtype=_STORE_DTYPES[pd])
    per_row = len(shape) == 2
    sd = _STORE_DTYPES[gq.scale_dtype] if per_row else "float32"
    if gq.scheme == "ternary":
        return Storage("ternary", bits=2, per_row=per_row, scale_dtype=sd, gq=gq)
    return Storage("int", bits=gq.bits, per_row=per_row, scale_dtype=sd, gq=gq)
