"""Shared by the component tests: a built model whose every tensor is drawn at random, so that
no zero-initialised tensor (a LoRA B, a Legendre coefficient, a zero-init projection) hides a
term of the formula a test checks."""
from __future__ import annotations

import torch

from recurc.build import build


def randomised_model(plan, scale: float = 0.3) -> torch.nn.Module:
    """build(plan) with every parameter N(0, scale²) from seed 0; its state dict is the Plan's
    parameter table, name for name and shape for shape."""
    torch.manual_seed(0)
    m = build(plan)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * scale)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {p.name: p.shape for p in plan.params}
    return m
