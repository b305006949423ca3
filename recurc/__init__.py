"""recurc: a declarative architecture-spec compiler for depth-recurrent transformer LMs.

    import recurc
    spec = recurc.load_spec("specs/loop45x2.yaml", ["model.dim=576"])
    plan = recurc.make_plan(spec)          # no torch
    recurc.estimate(plan)                  # params, FLOPs, predicted bytes (no torch)
    model = recurc.build(plan)             # torch nn.Module
    recurc.diff(plan_a, plan_b); recurc.variants("examples/sweep_loops.yaml")

Everything is imported on first use, so `import recurc` stays cheap and torch-free.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_FROM = {"load_spec": "spec", "spec_from_text": "spec", "Spec": "spec", "make_plan": "plan", "Plan": "plan",
         "parse_order": "order", "SpecError": "errors"}
_SUBMODULES = ("build", "estimate", "diff", "variants", "render", "emit")


def __getattr__(name: str):
    if name in _FROM:
        return getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'recurc' has no attribute {name!r}")
