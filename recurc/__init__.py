"""recurc: a declarative architecture-spec compiler for depth-recurrent transformer LMs.

    import recurc
    spec = recurc.load_spec("specs/loop45x2.yaml", ["model.dim=576"])
    plan = recurc.make_plan(spec)          # no torch; a spec path works too
    recurc.estimate(plan)                  # params, FLOPs, predicted bytes (no torch)
    model = recurc.build(plan)             # torch nn.Module
    recurc.diff(plan_a, plan_b); recurc.variants("examples/sweep_loops.yaml")

Every function takes a Plan, a Spec or a spec path. Everything is imported on first use, so
`import recurc` stays cheap and torch-free.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # for readers and type checkers only; nothing is imported at run time
    from .plan import Plan
    from .spec import Spec

__version__ = "0.1.0"

# names served lazily by __getattr__: the data types and helpers of the spec front end
_LAZY = {"Spec": "spec", "spec_from_text": "spec", "Plan": "plan", "parse_order": "order", "SpecError": "errors"}
# public functions named like the submodule that implements them
_FUNCTIONS = ("build", "estimate", "diff", "variants")


def load_spec(path: str | Path, overrides: Iterable[str] = ()) -> "Spec":
    """Read a YAML spec (following `extends`), apply `key.path=value` overrides, validate."""
    from .spec import load_spec as _load
    return _load(path, list(overrides))


def make_plan(spec: "Spec | str | Path", overrides: Iterable[str] = ()) -> "Plan":
    """Spec (or spec path, with overrides) → Plan."""
    from .plan import make_plan as _make
    from .spec import Spec as _Spec
    if not isinstance(spec, _Spec):
        spec = load_spec(spec, overrides)
    elif overrides:
        raise TypeError("overrides apply to a spec path; pass a path, or load_spec(path, overrides)")
    return _make(spec)


def _plan(x: Any) -> "Plan":
    from .plan import Plan as _Plan
    return x if isinstance(x, _Plan) else make_plan(x)


def _call(module: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the implementation `recurc.<module>.<name>`. Importing a submodule (here, or inside
    the call) rebinds the package attribute of its name to the module: the public function of
    that name is put back afterwards, so `recurc.estimate` stays the function below."""
    try:
        return getattr(importlib.import_module(f".{module}", __name__), name)(*args, **kwargs)
    finally:
        _restore()


def _restore() -> None:
    package = sys.modules[__name__]
    for name in _FUNCTIONS:
        if isinstance(package.__dict__.get(name), ModuleType):
            package.__dict__[name] = _PUBLIC[name]


def build(plan: "Plan | Spec | str | Path", device: Any = None):
    """The torch module of a Plan (fp32; device "meta" allocates nothing)."""
    return _call("build", "build", _plan(plan), device=device)


def estimate(plan: "Plan | Spec | str | Path", **kwargs: Any):
    """Counts, FLOPs and predicted artifact bytes (recurc.estimate.estimate's keywords)."""
    return _call("estimate", "estimate", _plan(plan), **kwargs)


def diff(a: Any, b: Any, **kwargs: Any):
    """Semantic difference of two Plans, Specs or spec paths."""
    return _call("diff", "diff", a, b, **kwargs)


def variants(template: Any, **kwargs: Any):
    """Expand, score, filter and rank a template's sweep (recurc.variants.variants's keywords)."""
    return _call("variants", "variants", template, **kwargs)


_PUBLIC = {"build": build, "estimate": estimate, "diff": diff, "variants": variants}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'recurc' has no attribute {name!r}")


__all__ = ["load_spec", "make_plan", "build", "estimate", "diff", "variants", *_LAZY, "__version__"]


def __dir__() -> list[str]:
    return sorted(__all__)
