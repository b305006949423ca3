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
