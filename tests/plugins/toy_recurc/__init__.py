"""A third-party recurc component, for tests: a learned per-channel gain on the block input x0.
It lives in this package alone; recurc finds it through the "recurc.components" entry point."""
from __future__ import annotations

from pydantic import Field

from recurc.components import Component, Site, TensorDecl
from recurc.ir import ComponentUse
from recurc.strict import Strict


class ToyGainConfig(Strict):
    init: float = Field(1.0, description="initial gain")


class ToyGain(Component):
    name = "toy_gain"
    kind = "token"
    Config = ToyGainConfig
    torch = "toy_recurc.torch_side:ToyGainModule"

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return [TensorDecl("gain", (site.model.dim,), "scalars", f"const:{use.get('init')}")]

    def flops(self, use: ComponentUse, site: Site) -> float:
        return float(site.model.dim)


class ToyDamp(Component):
    """A per-pass hook that owns no tensors: every pass halves its block's residual update
    (x_in + (x − x_in)/2). Tests that a pass with hooks but no tensors still gets its module."""
    name = "toy_damp"
    kind = "per_pass"
    torch = "toy_recurc.torch_side:ToyDampHook"
