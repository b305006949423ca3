"""Token-level components: additions to the embedding before the first block
(`components: [{use: smear_gate}, {use: bigram_hash, buckets: 3072, dim: 112}]`), and to the
logits after the head (`{use: logit_bias}`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..ir import ComponentUse
from ..strict import Strict
from .base import Component, Site, TensorDecl


class SmearGateConfig(Strict):
    form: Literal["vector", "scalar"] = Field(
        "scalar", description="vector: x_t ← (1−σ(g))·x_t + σ(g)·x_{t−1} with g (d), after the embedding norm; "
        "scalar: x_t ← x_t + λ·σ(W·x_t[:12])·x_{t−1} with W 12→1 and λ, on the raw embedding")
    window: int = Field(12, ge=1, description="scalar form: leading channels the gate reads")
    bos_fix: bool = Field(False, description="no smearing into a document start (token `bos_id`)")
    bos_id: int = Field(1, ge=0)


class SmearGate(Component):
    """Mixes each position with the previous one (the parameter-golf SmearGate, both forms)."""
    name = "smear_gate"
    kind = "token"
    Config = SmearGateConfig
    torch = "recurc.nn.token:SmearGate"

    def stage_of(self, use: ComponentUse) -> str:
        return "input" if use.get("form") == "vector" else "embed"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        if use.get("form") == "vector":
            return [TensorDecl("gate", (site.model.dim,), "scalars", "zeros")]
        return [TensorDecl("fc.weight", (1, use.get("window")), "scalars", "zeros"),
                TensorDecl("scale", (1,), "scalars", "zeros")]

    def flops(self, use: ComponentUse, site: Site) -> float:
        return 2.0 * (use.get("window") + site.model.dim) if use.get("form") == "scalar" else 3.0 * site.model.dim


class BigramHashConfig(Strict):
    buckets: int = Field(3072, ge=2, le=1 << 20, description="hash buckets B")
    dim: int = Field(128, ge=1, le=4096, description="table width k, projected k→d")
    scale_init: float = 0.05


class BigramHash(Component):
    """A B×k table indexed by (36313·t_i XOR 27191·t_{i−1}) mod (B−1) (position 0: bucket B−1),
    projected k→d and scaled by a learned scalar, added to the token embedding."""
    name = "bigram_hash"
    kind = "token"
    Config = BigramHashConfig
    torch = "recurc.nn.token:BigramHash"
    stage = "embed"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        b, k, d = use.get("buckets"), use.get("dim"), site.model.dim
        return [TensorDecl("embed.weight", (b, k), "embeddings", "zeros"),
                TensorDecl("proj.weight", (d, k), "embeddings", "zeros"),
                TensorDecl("scale", (1,), "scalars", f"const:{use.get('scale_init')}")]

    def flops(self, use: ComponentUse, site: Site) -> float:
        return 2.0 * use.get("dim") * site.model.dim        # the projection; the lookup is free


class LogitBias(Component):
    """A learned bias per vocabulary entry added to the logits before the softcap (74M_Ternary's
    `vocab_bias`): V parameters, stored like the other control tensors."""
    name = "logit_bias"
    kind = "token"
    torch = "recurc.nn.token:LogitBias"
    stage = "logits"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return [TensorDecl("bias", (site.model.vocab_size,), "scalars", "zeros")]

    def flops(self, use: ComponentUse, site: Site) -> float:
        return 0.0      # one add per logit: elementwise


COMPONENTS = (SmearGate, BigramHash, LogitBias)
