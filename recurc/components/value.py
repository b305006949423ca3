"""Value embeddings: token tables whose projections are added to the attention values v of chosen
layers (`components: [{use: value_embeddings, layers: [9, 10], index: physical}]`)."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator

from ..ir import ComponentUse
from ..strict import Strict
from .base import Component, Site, TensorDecl


class ValueEmbeddingsConfig(Strict):
    tables: int = Field(1, ge=1, le=8, description="shared tables (iverbovoy's stack uses 2)")
    dim: int = Field(128, ge=1, le=4096, description="table width k, projected k → KV·head_dim")
    layers: Union[list[int], Literal["all"]] = Field(
        description="the layers whose values get the embedding, each with its own learned scale per table")
    index: Literal["physical", "virtual"] = Field(description="whether `layers` counts physical or virtual layers")
    scale_init: float = 0.1

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        if isinstance(v, list) and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError("layers must be distinct non-negative indices")
        return v


class ValueEmbeddings(Component):
    """v ← v + Σ_t s[slot, t] · λ_t · P_t(E_t[token]) on the listed layers: E_t a V×k table, P_t a
    k → KV·hd projection, λ_t a learned scalar (init 0.1), s the per-layer scales (init 1)."""
    name = "value_embeddings"
    kind = "value"
    Config = ValueEmbeddingsConfig
    torch = "recurc.nn.value:ValueEmbeddings"

    def slots(self, use: ComponentUse, n_virtual: int, n_physical: int) -> int:
        layers = use.get("layers")
        if layers == "all":
            return n_virtual if use.get("index") == "virtual" else n_physical
        return len(layers)

    def layer_slot(self, use: ComponentUse, virtual: int, physical: int) -> int | None:
        i = virtual if use.get("index") == "virtual" else physical
        layers = use.get("layers")
        if layers == "all":
            return i
        return layers.index(i) if i in layers else None

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        m, k = site.model, use.get("dim")
        kv = m.kv_heads * m.head_dim
        out: list[TensorDecl] = []
        for t in range(use.get("tables")):
            out += [TensorDecl(f"embed{t}.weight", (m.vocab_size, k), "embeddings", "normal:0.005"),
                    TensorDecl(f"proj{t}.weight", (kv, k), "embeddings", "zeros"),
                    TensorDecl(f"scale{t}", (1,), "scalars", f"const:{use.get('scale_init')}")]
        out.append(TensorDecl("layer_scales", (site.slots, use.get("tables")), "scalars", "ones"))
        return out

    def flops(self, use: ComponentUse, site: Site) -> float:
        m = site.model
        return 2.0 * use.get("tables") * use.get("dim") * m.kv_heads * m.head_dim


COMPONENTS = (ValueEmbeddings,)
