"""Torch side of toy_gain: x0 ← gain ⊙ x0."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recurc.nn.layers import PassHook      # a core module: every emitted script carries it


class ToyGainModule(nn.Module):
    def __init__(self, model, use) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(model.dim))

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        return x * self.gain.to(x.dtype)


class ToyDampHook(PassHook):
    """Torch side of toy_damp: stateless, so `own` (the pass's module) is unused; `pre` is
    PassHook's identity."""

    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        return x_in + 0.5 * (x - x_in)
