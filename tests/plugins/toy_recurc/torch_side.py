"""Torch side of toy_gain: x0 ← gain ⊙ x0."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ToyGainModule(nn.Module):
    def __init__(self, model, use) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(model.dim))

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        return x * self.gain.to(x.dtype)


class ToyDampHook:
    """Torch side of toy_damp: stateless, so `own` (the pass's module) is unused."""

    def __init__(self, use) -> None:
        self.use = use

    def pre(self, own: nn.Module, x: Tensor) -> Tensor:
        return x

    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        return x_in + 0.5 * (x - x_in)
