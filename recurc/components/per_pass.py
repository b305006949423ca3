"""Per-pass components: tensors each pass of a looped block owns (`passes.<v>.<name>`), applied
around the block: `pre` to its input, `post` to its output."""
from __future__ import annotations

from pydantic import Field

from ..ir import ComponentUse
from ..strict import Strict
from .base import Component, Site, TensorDecl


class IterationEmbedding(Component):
    """A learned vector added to the block input of each pass (per_pass.iteration_embedding: learned)."""
    name = "iteration_embedding"
    kind = "per_pass"
    torch = "recurc.nn.per_pass:IterationEmbedding"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return [TensorDecl("iter_emb", (site.model.dim,), "per_pass", "zeros")]


class FiLM(Component):
    """Scale and shift of the block input per pass: x·(1 + s) + b (per_pass.film)."""
    name = "film"
    kind = "per_pass"
    torch = "recurc.nn.per_pass:FiLM"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        d = site.model.dim
        return [TensorDecl("film_scale", (d,), "per_pass", "zeros"),
                TensorDecl("film_shift", (d,), "per_pass", "zeros")]


class TimestepConfig(Strict):
    cap: float = Field(4.0, gt=0, description="γ is clamped to [-cap, cap]")


class TimestepScale(Component):
    """γ per pass scaling the block's residual update: x_in + clamp(γ)·(x − x_in) (per_pass.timestep_scale)."""
    name = "timestep_scale"
    kind = "per_pass"
    Config = TimestepConfig
    torch = "recurc.nn.per_pass:TimestepScale"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return [TensorDecl("gamma", (site.model.dim,), "per_pass", "ones")]


class CrossRepeatScale(Component):
    """Adds s ⊙ (the same block's output on its previous pass); only later passes own s
    (per_pass.cross_repeat_scale)."""
    name = "cross_repeat_scale"
    kind = "per_pass"
    torch = "recurc.nn.per_pass:CrossRepeatScale"
    needs_previous_pass = True

    def applies(self, use: ComponentUse, site: Site) -> bool:
        return site.layer is not None and site.layer.pass_index > 0

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return [TensorDecl("cross_repeat", (site.model.dim,), "per_pass", "zeros")]


COMPONENTS = (IterationEmbedding, FiLM, TimestepScale, CrossRepeatScale)
