"""Torch side of the token-level components (recurc/components/token.py). Each module holds the
tensors its component declares, under the component's name (`smear_gate.scale`, ...)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import ComponentUse, ModelShape
from .layers import CastedLinear


class SmearGate(nn.Module):
    def __init__(self, model: ModelShape, use: ComponentUse) -> None:
        super().__init__()
        self.vector = use.get("form") == "vector"
        self.window = use.get("window")
        self.bos_id = use.get("bos_id") if use.get("bos_fix") else None
        if self.vector:
            self.gate = nn.Parameter(torch.zeros(model.dim))
        else:
            self.fc = CastedLinear(self.window, 1)
            self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))          # x_{t-1}; zeros before the first position
        if self.vector:
            g = torch.sigmoid(self.gate.to(x.dtype))
            gate = g.expand_as(x)
        else:
            gate = self.scale.to(x.dtype) * torch.sigmoid(self.fc(x[..., : self.window]))
        if self.bos_id is not None:
            # a document start reads nothing of the previous document
            gate = gate * (idx != self.bos_id).unsqueeze(-1).to(x.dtype)
        if self.vector:
            return torch.lerp(x, prev, gate)
        return x + gate * prev


class BigramHash(nn.Module):
    def __init__(self, model: ModelShape, use: ComponentUse) -> None:
        super().__init__()
        self.buckets = use.get("buckets")
        self.embed = nn.Embedding(self.buckets, use.get("dim"))
        self.proj = CastedLinear(use.get("dim"), model.dim)
        self.scale = nn.Parameter(torch.full((1,), float(use.get("scale_init"))))

    def bucket(self, idx: Tensor) -> Tensor:
        h = torch.bitwise_xor(36313 * idx[:, 1:], 27191 * idx[:, :-1]) % (self.buckets - 1)
        first = torch.full_like(idx[:, :1], self.buckets - 1)      # position 0 has no previous token
        return torch.cat((first, h), dim=1)

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        e = self.proj(self.embed(self.bucket(idx)).to(x.dtype))
        return x + self.scale.to(x.dtype) * e


class LogitBias(nn.Module):
    def __init__(self, model: ModelShape, use: ComponentUse) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(model.vocab_size))

    def forward(self, logits: Tensor, idx: Tensor | None) -> Tensor:
        return logits + self.bias.to(logits.dtype)
