"""Torch side of the seed per-pass components (recurc/components/seeds.py): Output-LN, Birkhoff
mixing, per-token exit gates and a low-rank GRU carry between passes.

Each hook reads the tensors build created on the pass's own module (`passes.<v>.<name>`) and
keeps only its settings, so one hook object serves every pass and torch.compile sees plain
attribute reads. This file depends on torch and recurc.nn.layers (PassHook) alone: `recurc emit`
copies it verbatim into the submission script (the class names are unique in that script).

In `post(own, x_in, x, prev)`: `x_in` is the block's input (after the `pre` hooks), `x` its
output, `prev` the same block's output on its previous pass (None on a first pass).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import PassHook


class OutputLNHook(PassHook):
    """x_in + g ⊙ rms_norm(x − x_in): the block's update normalized before the residual add."""

    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        u = x - x_in
        return x_in + own.out_ln_gain.to(x.dtype) * F.rms_norm(u, (u.size(-1),), eps=self.use.get("eps"))


class BirkhoffMixHook(PassHook):
    """σ(θ) ⊙ x + (1 − σ(θ)) ⊙ prev: the first row of [[σ, 1−σ], [1−σ, σ]] applied to (x, prev)."""

    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        return torch.lerp(prev, x, torch.sigmoid(own.birkhoff_logit.to(x.dtype)))


class ExitGateHook(PassHook):
    """x_in + g·(x − x_in), g = σ(w · rms_norm(x_in) + b) one scalar per token."""

    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        h = F.rms_norm(x_in, (x_in.size(-1),))
        g = torch.sigmoid(F.linear(h, own.exit_gate_w.to(x.dtype), own.exit_gate_b.to(x.dtype)))
        return x_in + g * (x - x_in)


class GRUCarryHook(PassHook):
    """A GRU cell of hidden size r between passes (PyTorch's GRUCell equations):
    a = D_x·rms_norm(x), h = D_h·rms_norm(prev),
    [r_i, z_i, n_i] = W_ih·a + b_ih, [r_h, z_h, n_h] = W_hh·h + b_hh,
    ρ = σ(r_i + r_h), z = σ(z_i + z_h), n = tanh(n_i + ρ ⊙ n_h), h' = (1 − z) ⊙ n + z ⊙ h,
    out = x + U·h'."""

    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        dt = x.dtype
        a = F.linear(F.rms_norm(x, (x.size(-1),)), own.gru_down_x.to(dt))
        h = F.linear(F.rms_norm(prev, (prev.size(-1),)), own.gru_down_h.to(dt))
        ri, zi, ni = F.linear(a, own.gru_w_ih.to(dt), own.gru_b_ih.to(dt)).chunk(3, dim=-1)
        rh, zh, nh = F.linear(h, own.gru_w_hh.to(dt), own.gru_b_hh.to(dt)).chunk(3, dim=-1)
        reset, update = torch.sigmoid(ri + rh), torch.sigmoid(zi + zh)
        n = torch.tanh(ni + reset * nh)
        return x + F.linear(torch.lerp(n, h, update), own.gru_up.to(dt))
