"""Sharing and per-pass components of issue 14: per-pass low-rank adapters (`lora`), polynomial
(Legendre) weight sharing across a block's passes (`legendre`) and random depth sampling during
training (`random_depth`). ../shared/FEATURES.md names them (DepthLoRA, RecurLoRA, iverbovoy's
rank-2 trial; 2026-03-31_LegendreGPT; the seeds' Huginn-style random depth); the formulas,
shapes and inits below are recurc's definitions, documented in docs/components.md.

Spec syntax (`components:` entries):
  {use: lora, rank: 4, targets: [attn.c_q, attn.c_v], alpha: null, passes: all}
  {use: legendre, degree: 2, targets: [attn.c_q, attn.c_k, attn.c_v, attn.proj, mlp.fc, mlp.proj]}
  {use: random_depth, min: 1, max: 4, distribution: lognormal_poisson, mean: 3, sigma: 0.5}

The torch side of the first two is recurc/nn/sharing.py; random depth has none: the Plan's main
phase carries the distribution (ir.Phase.choices) and the trainer draws from it each step.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ..errors import SpecError
from ..ir import ComponentUse
from ..order import Order
from ..strict import Strict
from .base import Component, Site, TensorDecl, lookup

# Projections an adapter can name: "<sub-module>.<linear>" as the built block holds them.
Projection = Literal["attn.c_q", "attn.c_k", "attn.c_k_down", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj"]
ATTENTION_PROJECTIONS = ("attn.c_q", "attn.c_k_down", "attn.c_k", "attn.c_v", "attn.proj")


def _listed_once(targets: list[str]) -> list[str]:
    if len(set(targets)) != len(targets):
        raise ValueError("a projection is listed twice")
    return targets


# A component's `targets`: projections, each at most once.
Targets = Annotated[list[Projection], AfterValidator(_listed_once)]


def projection_shapes(site: Site, attention: bool = True) -> dict[str, tuple[int, int]]:
    """(out, in) of every projection the block at `site` runs: attention's where `attention`
    (a layer may run none), the MLP's where its component routes them through adapters."""
    m, blk = site.model, site.block
    assert blk is not None
    d, kv, k_rank = m.dim, m.kv_heads * m.head_dim, m.attention.k_rank
    out: dict[str, tuple[int, int]] = {}
    if attention:
        out["attn.c_q"] = (d, d)
        if k_rank:
            out["attn.c_k_down"] = (k_rank, d)
        out["attn.c_k"] = (kv, k_rank or d)
        out["attn.c_v"] = (kv, d)
        out["attn.proj"] = (d, d)
    mlp = lookup(blk.activation, "mlp")
    decls = {t.name: t.shape for t in mlp.tensors(ComponentUse(blk.activation, "mlp"), Site(m, site.owner, blk,
                                                                                       hidden=blk.mlp_hidden))}
    for name in mlp.projections:
        shape = decls.get(f"{name}.weight")
        if shape is not None and len(shape) == 2:
            out[f"mlp.{name}"] = (shape[0], shape[1])
    return out


def _check_targets(name: str, targets: list[str], shapes: dict[str, tuple[int, int]], site: Site) -> None:
    m, blk = site.model, site.block
    for t in targets:
        if t in shapes:
            continue
        if t == "attn.c_k_down" and not m.attention.k_rank:
            raise SpecError(f"component {name}: target attn.c_k_down needs a low-rank key projection",
                            hint="set model.attention.k_rank, or target attn.c_k")
        if t.startswith("mlp."):
            raise SpecError(f"component {name}: the MLP component {blk.activation} has no projection {t[4:]} "
                            "that takes adapters", hint="relu2 and leaky_relu2 route fc and proj through them")


# ---------------------------------------------------------------- per-pass LoRA
class LoRAConfig(Strict):
    rank: int = Field(4, ge=1, le=1024, description="the adapters' rank r")
    targets: Targets = Field(["attn.c_q", "attn.c_v"], min_length=1,
                            description="projections adapted on each pass (DepthLoRA: Q and V)")
    alpha: float | None = Field(None, gt=0, description="the update is scaled by alpha / rank; default 1")
    passes: Literal["all", "later"] = Field("all", description="which scoped passes own adapters: all, or "
                                            "those after a block's first (the first runs the shared weights)")


class LoRA(Component):
    """Per-pass low-rank adapters: on each scoped pass, each target projection W (out × in)
    computes y = W·x + (alpha/r)·B·(A·x) with the pass's own A (r × in, normal 1/√in) and
    B (out × r, zeros, so every pass starts as the shared block). Tensors
    `passes.<v>.lora_<sub>_<linear>_{a,b}` in the group per_pass."""
    name = "lora"
    kind = "per_pass"
    Config = LoRAConfig
    torch = "recurc.nn.sharing:LoRAHook"

    def applies(self, use: ComponentUse, site: Site) -> bool:
        return use.get("passes") == "all" or (site.layer is not None and site.layer.pass_index > 0)

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        has_attn = site.layer is None or site.layer.attn is not None   # a layer may run no attention
        shapes = projection_shapes(site, attention=has_attn)
        targets = [t for t in use.get("targets") if has_attn or not t.startswith("attn.")]
        _check_targets(self.name, targets, shapes, site)
        r, out = use.get("rank"), []
        for t in targets:
            o, i = shapes[t]
            key = t.replace(".", "_")
            out += [TensorDecl(f"lora_{key}_a", (r, i), "per_pass", f"normal:{1 / math.sqrt(i):.6g}"),
                    TensorDecl(f"lora_{key}_b", (o, r), "per_pass", "zeros")]
        return out


# ---------------------------------------------------------------- Legendre sharing
class LegendreConfig(Strict):
    degree: int = Field(2, ge=1, le=16, description="highest polynomial degree; stores degree extra "
                        "coefficient matrices per target")
    targets: Targets = Field(["attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj"],
                            min_length=1, description="projections whose weights are polynomials in depth")


class Legendre(Component):
    """Polynomial weight sharing over a looped block's passes: pass k of K runs
    W(t_k) = C_0 + Σ_{j=1..n} P_j(t_k)·C_j, t_k = −1 + 2k/(K−1), P_j the Legendre polynomials.
    C_0 is the block's own weight (`...c_q.weight`, unchanged); C_j are `...c_q.legendre<j>`,
    same shape and group (attention / mlp: quantized like the weight), zeros at init so every
    pass starts as the shared block. Blocks the main order runs more than once carry them; a pass
    beyond K (a longer evaluation order) takes t = 1. The basis is in recurc/nn/sharing.py."""
    name = "legendre"
    kind = "block"
    Config = LegendreConfig
    torch = "recurc.nn.sharing:LegendreHook"

    def applies(self, use: ComponentUse, site: Site) -> bool:
        return site.passes > 1

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        blk, n = site.block, use.get("degree")
        assert blk is not None
        if n >= site.passes:
            raise SpecError(f"component legendre: degree {n} on block {blk.name}, which the order runs "
                            f"{site.passes} times: {site.passes} passes determine at most degree {site.passes - 1}",
                            hint=f"lower `degree` to {site.passes - 1} or run the block more often")
        shapes = projection_shapes(site)
        _check_targets(self.name, use.get("targets"), shapes, site)
        out = []
        for t in use.get("targets"):
            part = t.split(".")[0]
            if part not in site.modules:    # borrowed from another block, or not run: no weight here
                continue
            group = "attention" if part == "attn" else "mlp"
            out += [TensorDecl(f"{t}.legendre{j}", shapes[t], group, "zeros") for j in range(1, n + 1)]
        return out

    def flops(self, use: ComponentUse, site: Site) -> float:
        # The pass multiplies by one formed (out × in) matrix, as without sharing; forming it is
        # 2·degree·out·in per forward call, not per token (amortised over the batch: ~0).
        return 0.0


# ---------------------------------------------------------------- random depth
class RandomDepthConfig(Strict):
    min: int = Field(1, ge=1, le=64, description="fewest passes of the loop a step samples")
    max: int | None = Field(None, ge=1, le=64, description="most passes; default the main order's count")
    distribution: Literal["lognormal_poisson", "uniform", "weights"] = "lognormal_poisson"
    mean: float | None = Field(None, gt=0, description="lognormal_poisson: mean count before truncation; "
                               "default the main order's count")
    sigma: float = Field(0.5, gt=0, le=4, description="lognormal_poisson: σ of log λ")
    weights: list[float] | None = Field(None, description="distribution weights: one per count min..max")

    @model_validator(mode="after")
    def _consistent(self) -> "RandomDepthConfig":
        if self.max is not None and self.max < self.min:
            raise ValueError("max is below min")
        if (self.weights is not None) != (self.distribution == "weights"):
            raise ValueError("`weights` goes with distribution: weights, and only with it")
        if self.weights is not None and (any(w < 0 or not math.isfinite(w) for w in self.weights)
                                         or sum(self.weights) <= 0):
            raise ValueError("weights must be finite, non-negative and not all zero")
        return self


def lognormal_poisson(lo: int, hi: int, mean: float, sigma: float) -> list[float]:
    """P(count = n) for n in lo..hi: count = lo + Poisson(λ), log λ ~ N(log(mean − lo) − σ²/2, σ)
    (so E[λ] = mean − lo; Huginn's r ~ Poisson(e^τ) + 1 with lo = 1), truncated to ≤ hi and
    renormalised. The mixture over λ is integrated by the midpoint rule on μ ± 8σ (4,001 points)."""
    mu = math.log(mean - lo) - sigma * sigma / 2
    steps, width = 4001, 16 * sigma
    h = width / steps
    mass = [0.0] * (hi - lo + 1)
    for i in range(steps):
        tau = mu - width / 2 + (i + 0.5) * h
        w = math.exp(-0.5 * ((tau - mu) / sigma) ** 2)
        lam = math.exp(tau)
        for j in range(len(mass)):
            mass[j] += w * math.exp(j * tau - lam - math.lgamma(j + 1))
    total = sum(mass)
    return [x / total for x in mass]


class RandomDepth(Component):
    """Random depth sampling during training (Huginn-style): each training step runs the main
    order with its loop repeated n times, n drawn from the configured distribution over
    min..max; evaluation and export run the spec's order (or its eval order). The draw is a
    pure function of (train.seed, step): the same on every DDP rank and across a resume."""
    name = "random_depth"
    kind = "schedule"
    Config = RandomDepthConfig
    torch = ""      # no torch side: the distribution is data on the Plan's main phase

    def depth_choices(self, use: ComponentUse, main: Order, where: str | None) -> list[tuple[Order, float]]:
        loops = main.loops
        if len(loops) != 1:
            raise SpecError(f"random_depth needs an order with exactly one repeat `xN`, this one has {len(loops)}",
                            where=where, hint="write the order with a single loop, e.g. `0..3,(4,5)x2,6..10`")
        k = loops[0].count
        lo, hi = use.get("min"), use.get("max") or k
        if hi < lo:
            raise SpecError(f"random_depth: max defaults to the order's loop count {k}, below min {lo}",
                            where=where, hint="give max")
        dist = use.get("distribution")
        if dist == "uniform":
            probs = [1.0 / (hi - lo + 1)] * (hi - lo + 1)
        elif dist == "weights":
            w = use.get("weights")
            if len(w) != hi - lo + 1:
                raise SpecError(f"random_depth: {len(w)} weights for the {hi - lo + 1} counts {lo}..{hi}",
                                where=where)
            probs = [x / sum(w) for x in w]
        else:
            mean = use.get("mean") or float(k)
            if mean <= lo:
                raise SpecError(f"random_depth: mean {mean:g} must exceed min {lo} (count = min + Poisson)",
                                where=where)
            probs = lognormal_poisson(lo, hi, mean, use.get("sigma"))
        return [(main.with_loop_count(n), p) for n, p in zip(range(lo, hi + 1), probs) if p > 0]


COMPONENTS = (LoRA, Legendre, RandomDepth)
