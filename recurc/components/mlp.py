"""MLP components: the feed-forward of a block, named by `model.mlp.activation` (or a block's
own `mlp.activation`)."""
from __future__ import annotations

from ..ir import ComponentUse
from .base import Component, Site, TensorDecl


class ReluSquared(Component):
    """fc (hidden×d) → relu(·)² → proj (d×hidden); proj starts at zero so a new block is the identity."""
    name = "relu2"
    kind = "mlp"
    torch = "recurc.nn.layers:MLP"
    projections = ("fc", "proj")

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        d, h = site.model.dim, site.hidden
        return [TensorDecl("fc.weight", (h, d), "mlp", "module"),
                TensorDecl("proj.weight", (d, h), "mlp", "zeros")]


class LeakyReluSquared(ReluSquared):
    """As relu2 with leaky_relu(·, negative_slope)² (the SP8192 records use slope 0.5)."""
    name = "leaky_relu2"
    torch = "recurc.nn.layers:LeakyMLP"


COMPONENTS = (ReluSquared, LeakyReluSquared)
