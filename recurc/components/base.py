"""The component contract and the registry (built-ins plus the "recurc.components" entry points)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import SpecError
from ..ir import Block, ComponentUse, ModelShape, Owner, VirtualLayer
from ..strict import Strict

if TYPE_CHECKING:
    from ..order import Order

Kind = Literal["mlp", "token", "per_pass", "value", "block", "schedule"]
ENTRY_POINT_GROUP = "recurc.components"


class NoConfig(Strict):
    """A component without settings."""


@dataclass(frozen=True)
class TensorDecl:
    """A tensor a component owns. `name` is relative to its owner's module path."""
    name: str
    shape: tuple[int, ...]
    group: str                  # role: the quantization group (see recurc.ir.GROUPS)
    init: str = "zeros"         # "zeros" | "ones" | "normal:STD" | "const:V" (recurc.nn.init_tensor)


@dataclass(frozen=True)
class Site:
    """Where a component instance lives: the owner of its tensors and, for per-pass components,
    the block and the main order's virtual layer that owns the pass."""
    model: ModelShape
    owner: Owner
    block: Block | None = None
    layer: VirtualLayer | None = None
    hidden: int = 0             # MLP components: the hidden width
    slots: int = 0              # value components: the number of layer slots
    passes: int = 0             # per-pass and block components: how often the main order runs the block
    modules: tuple[str, ...] = ()   # block components: the sub-modules ("attn", "mlp") the block owns


class Component:
    name: ClassVar[str]
    kind: ClassVar[Kind]
    Config: ClassVar[type[Strict]] = NoConfig
    torch: ClassVar[str]        # "package.module:attr" of the torch side
    # token components: where the forward applies ("embed": raw embedding; "input": after its norm)
    stage: ClassVar[str] = "input"
    # per-pass components that read the block's previous pass (skipped where there is none)
    needs_previous_pass: ClassVar[bool] = False
    # MLP components: the projections (sub-module names) whose torch forward routes through a
    # layer's projection adapters (`adapt`), so per-pass LoRA and Legendre sharing can reach them
    projections: ClassVar[tuple[str, ...]] = ()

    def stage_of(self, use: ComponentUse) -> str:
        return self.stage

    def tensors(self, use: ComponentUse, site: Site) -> list[TensorDecl]:
        return []

    def flops(self, use: ComponentUse, site: Site) -> float:
        """Forward FLOPs per token: 2 per weight of its matrices (elementwise work left out)."""
        return 2.0 * sum(math.prod(t.shape) for t in self.tensors(use, site) if len(t.shape) == 2)

    def slots(self, use: ComponentUse, n_virtual: int, n_physical: int) -> int:
        """Value components: how many layer slots (rows of per-layer tensors) the component has."""
        return 0

    def layer_slot(self, use: ComponentUse, virtual: int, physical: int) -> int | None:
        """Value components: the slot the layer at (virtual, physical) index uses, or None."""
        return None

    def applies(self, use: ComponentUse, site: Site) -> bool:
        """Per-pass components: whether this pass owns the component's tensors. Block components:
        whether the block owns them (site.layer None) and whether a layer runs the hook."""
        return True

    def depth_choices(self, use: ComponentUse, main: Order, where: str | None) -> list[tuple[Order, float]]:
        """Schedule components: the orders a training step of the main phase draws from, with
        their probabilities (summing to 1). Each distinct order becomes one prebuilt path."""
        return []

    def config(self, data: dict[str, Any]) -> dict[str, Any]:
        """Validate the spec's settings for this component; plain data with defaults filled in.
        Bad settings are one SpecError naming the component and the field."""
        from pydantic import ValidationError
        try:
            return self.Config.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(settings)"
            msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            raise SpecError(f"component {self.name}: {field}: {msg}",
                            hint=f"its settings: {', '.join(self.Config.model_fields) or 'none'}") from None


def _builtins() -> dict[str, type[Component]]:
    from . import mlp, per_pass, seeds, sharing, token, value
    out: dict[str, type[Component]] = {}
    for mod in (mlp, per_pass, seeds, sharing, token, value):
        for c in mod.COMPONENTS:
            out[c.name] = c
    return out


@lru_cache(maxsize=1)
def all_components() -> dict[str, Component]:
    """Built-in components and those installed packages register (entry points)."""
    from importlib.metadata import entry_points
    out = {name: cls() for name, cls in _builtins().items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take recurc down
            raise SpecError(f"the component {ep.name!r} of an installed package could not be loaded: {exc}",
                            hint=f"entry point {ep.value} in group {ENTRY_POINT_GROUP}") from None
        if not (isinstance(cls, type) and issubclass(cls, Component)):
            raise SpecError(f"entry point {ep.name!r} ({ep.value}) is not a recurc Component class")
        if cls.name in out:
            raise SpecError(f"the component name {cls.name!r} of entry point {ep.value} is taken")
        out[cls.name] = cls()
    return out


def lookup(name: str, kind: Kind | None = None, where: str | None = None) -> Component:
    comps = all_components()
    c = comps.get(name)
    if c is None or (kind is not None and c.kind != kind):
        names = sorted(n for n, x in comps.items() if kind is None or x.kind == kind)
        raise SpecError(f"no {kind + ' ' if kind else ''}component named {name!r}", where=where,
                        hint=f"known: {', '.join(names)}; a package can add one through the "
                             f"{ENTRY_POINT_GROUP!r} entry-point group")
    return c
