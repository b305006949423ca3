"""Torch side of per-pass LoRA and Legendre weight sharing (recurc/components/sharing.py).

Both act inside a block, on its projections: the hook's `adapters(site)` returns, at build
time, one adapter per projection of the layer (`site.linears`: "attn.c_q" → the linear it runs),
and the layer routes that projection through it (recurc.nn.layers.Projections). An adapter has
`forms_weight`, `weight(w) -> w` and `output(x, y) -> y`. Everything per layer (which tensors,
the Legendre basis values) is fixed here, so the compiled forward sees constants and attribute
reads. Depends on torch and recurc.nn.layers (PassHook) alone: `recurc emit` copies it verbatim.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import PassHook


class LoRAAdapter:
    """y + s·B·(A·x), A and B read from the pass's module at call time."""
    forms_weight = False

    def __init__(self, own: nn.Module, key: str, scale: float) -> None:
        self.own, self.a, self.b, self.scale = own, f"lora_{key}_a", f"lora_{key}_b", scale

    def weight(self, w: Tensor) -> Tensor:
        return w

    def output(self, x: Tensor, y: Tensor) -> Tensor:
        a, b = getattr(self.own, self.a), getattr(self.own, self.b)
        delta = F.linear(F.linear(x, a.to(x.dtype)), b.to(x.dtype))
        return y + (delta if self.scale == 1.0 else self.scale * delta)


class LoRAHook(PassHook):
    """Per-pass LoRA on the spec's target projections of every pass that owns the tensors."""

    def adapters(self, site: Any) -> dict[str, LoRAAdapter]:
        if site.own is None:
            return {}
        alpha, rank = self.use.get("alpha"), self.use.get("rank")
        scale = 1.0 if alpha is None else alpha / rank
        return {t: LoRAAdapter(site.own, t.replace(".", "_"), scale) for t in self.use.get("targets")
                if t in site.linears and hasattr(site.own, f"lora_{t.replace('.', '_')}_a")}


class LegendreAdapter:
    """W(t) = C_0 + Σ_j P_j(t)·C_j with the P_j(t) of this layer as Python constants."""
    forms_weight = True

    def __init__(self, linear: nn.Module, basis: list[float]) -> None:
        self.linear, self.basis = linear, tuple(basis)

    def weight(self, w: Tensor) -> Tensor:
        for j, p in enumerate(self.basis, start=1):
            if p != 0.0:
                w = w + p * getattr(self.linear, f"legendre{j}")
        return w

    def output(self, x: Tensor, y: Tensor) -> Tensor:
        return y


def legendre_basis(degree: int, t: float) -> list[float]:
    """P_1(t) … P_degree(t) (Bonnet's recursion, as recurc.components.sharing.legendre_values)."""
    p = [1.0, t]
    for k in range(1, degree):
        p.append(((2 * k + 1) * t * p[k] - k * p[k - 1]) / (k + 1))
    return p[1:degree + 1]


class LegendreHook(PassHook):
    """Polynomial weight sharing: each layer of a looped block forms its projections' weights from
    the block's coefficients at its depth position t = −1 + 2k/(K−1) (k: the main order's pass)."""

    def adapters(self, site: Any) -> dict[str, LegendreAdapter]:
        K = site.passes
        k = min(site.layer.pass_index, K - 1)
        t = -1.0 + 2.0 * k / (K - 1) if K > 1 else 0.0
        basis = legendre_basis(self.use.get("degree"), t)
        return {name: LegendreAdapter(lin, basis) for name, lin in site.linears.items()
                if name in self.use.get("targets") and hasattr(lin, "legendre1")}
