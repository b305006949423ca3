"""Per-pass components from the seed documents (../shared/seeds): Output-LN and Birkhoff mixing
(aazizyan, PR #855), per-token exit gates and a low-rank GRU state carry (MrINVISO, PR #298).

Spec syntax: `components: [{use: output_ln}, {use: birkhoff_mix, init_logit: 0.0}, ...]`; they
run, as every per-pass component, on the passes `per_pass.scope` selects, and their `post`
hooks apply in the order the spec lists them. Tensors are `passes.<v>.<name>` in the group
"per_pass": stored as `quant.control_dtype` while they fit `quant.passthrough_max_numel`, and
quantized only where the spec gives the group a rule (`quant.groups.per_pass`).
The forward of each is in recurc/nn/seeds.py; docs/components.md has the formulas and shapes.
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from ..ir import ComponentUse
from ..strict import Strict
from .base import Component, Site, TensorDecl


def _later_pass(site: Site) -> bool:
    """A pass with a previous pass of the same block (main order's pass index > 0)."""
    return site.layer is not None and site.layer.pass_index > 0


class OutputLNConfig(Strict):
    eps: float | None = Field(None, gt=0, description="RMSNorm epsilon; default: the dtype's machine epsilon")


class OutputLN(Component):
    """A norm on the block's update before the residual add: x_in + g ⊙ rms_norm(x − x_in),
    g (dim,) per pass, initialised to ones. The update is everything the block added to its
    input (attention, MLP and, with block scalars, the resid_mix shift towards x0)."""
    name = "output_ln"
    kind = "per_pass"
    Config = OutputLNConfig
    torch = "recurc.nn.seeds:OutputLNHook"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return [TensorDecl("out_ln_gain", (site.model.dim,), "per_pass", "ones")]


class BirkhoffConfig(Strict):
    init_logit: float = Field(0.0, description="initial θ; 0 gives σ = 1/2, the centre of the polytope")
    per_channel: bool = Field(True, description="one θ per channel (dim,), else one per pass (1,)")


class BirkhoffMix(Component):
    """Doubly-stochastic mixing of the stream with the same block's previous-pass output: the
    2×2 matrix M = [[σ(θ), 1−σ(θ)], [1−σ(θ), σ(θ)]] (every doubly-stochastic 2×2 matrix has this
    form) mixes (x, prev), and the first row continues: x ← σ(θ) ⊙ x + (1 − σ(θ)) ⊙ prev.
    Only later passes own θ."""
    name = "birkhoff_mix"
    kind = "per_pass"
    Config = BirkhoffConfig
    torch = "recurc.nn.seeds:BirkhoffMixHook"
    needs_previous_pass = True

    def applies(self, use: ComponentUse, site: Site) -> bool:
        return _later_pass(site)

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        width = site.model.dim if use.get("per_channel") else 1
        return [TensorDecl("birkhoff_logit", (width,), "per_pass", f"const:{use.get('init_logit')}")]


class ExitGateConfig(Strict):
    bias_init: float = Field(3.0, description="initial gate bias: σ(3) ≈ 0.95, nearly every token takes the pass")


class ExitGate(Component):
    """A per-token exit gate per pass: x ← x_in + g·(x − x_in), g = σ(w · rms_norm(x_in) + b),
    w (1, dim) zeros and b (1,) per pass; g → 0 lets a token skip the pass."""
    name = "exit_gate"
    kind = "per_pass"
    Config = ExitGateConfig
    torch = "recurc.nn.seeds:ExitGateHook"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return [TensorDecl("exit_gate_w", (1, site.model.dim), "per_pass", "zeros"),
                TensorDecl("exit_gate_b", (1,), "per_pass", f"const:{use.get('bias_init')}")]


class GRUCarryConfig(Strict):
    rank: int = Field(16, ge=1, le=4096, description="the GRU's hidden size r")


class GRUCarry(Component):
    """A low-rank GRU state carry between passes: the previous pass's output, projected to rank r,
    is the hidden state of a GRU cell whose input is this pass's output projected to rank r; the
    new state goes back up to dim and is added: x ← x + U·GRUCell(D_x·n(x), D_h·n(prev)),
    n = rms_norm. Only later passes own it. U starts at zero, so the carry starts as identity."""
    name = "gru_carry"
    kind = "per_pass"
    Config = GRUCarryConfig
    torch = "recurc.nn.seeds:GRUCarryHook"
    needs_previous_pass = True

    def applies(self, use: ComponentUse, site: Site) -> bool:
        return _later_pass(site)

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        d, r = site.model.dim, use.get("rank")
        down, cell = f"normal:{1 / math.sqrt(d):.6g}", f"normal:{1 / math.sqrt(r):.6g}"
        return [TensorDecl("gru_down_x", (r, d), "per_pass", down),
                TensorDecl("gru_down_h", (r, d), "per_pass", down),
                TensorDecl("gru_w_ih", (3 * r, r), "per_pass", cell),
                TensorDecl("gru_w_hh", (3 * r, r), "per_pass", cell),
                TensorDecl("gru_b_ih", (3 * r,), "per_pass", "zeros"),
                TensorDecl("gru_b_hh", (3 * r,), "per_pass", "zeros"),
                TensorDecl("gru_up", (d, r), "per_pass", "zeros")]


COMPONENTS = (OutputLN, BirkhoffMix, ExitGate, GRUCarry)
