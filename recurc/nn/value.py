"""Torch side of value embeddings (recurc/components/value.py)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ir import ComponentUse, ModelShape
from .layers import CastedLinear


class ValueEmbeddings(nn.Module):
    def __init__(self, model: ModelShape, use: ComponentUse, slots: int) -> None:
        super().__init__()
        kv, k = model.kv_heads * model.head_dim, use.get("dim")
        self.tables = use.get("tables")
        for t in range(self.tables):
            self.add_module(f"embed{t}", nn.Embedding(model.vocab_size, k))
            self.add_module(f"proj{t}", CastedLinear(k, kv, zero_init=True))
            self.register_parameter(f"scale{t}", nn.Parameter(torch.full((1,), float(use.get("scale_init")))))
        self.layer_scales = nn.Parameter(torch.ones(slots, self.tables))

    def prepare(self, idx: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """Each table's scaled projection λ_t · P_t(E_t[idx]), computed once per forward."""
        out = []
        for t in range(self.tables):
            e = getattr(self, f"embed{t}")(idx).to(dtype)
            out.append(getattr(self, f"scale{t}").to(dtype) * getattr(self, f"proj{t}")(e))
        return tuple(out)

    def extra(self, prepared: tuple[Tensor, ...], slot: int) -> Tensor:
        s = self.layer_scales[slot].to(prepared[0].dtype)
        v = s[0] * prepared[0]
        for t in range(1, self.tables):
            v = v + s[t] * prepared[t]
        return v
