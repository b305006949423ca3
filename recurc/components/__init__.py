"""Components: the unit of extension.

A component is one class that says everything recurc needs to know about a piece of a model:
its spec schema (`Config`, a pydantic model), the tensors it owns (`tensors`: name, shape, role,
init), its forward FLOPs per token (`flops`), and where its torch forward lives (`torch`, a
"module:attr" reference imported only when a model is built, so estimating never imports torch).
Quantization follows from the role of each tensor (the spec's per-group rules).

The Plan builder, the estimator, build, emit and diff treat every component alike: adding one
is a new class here (or in an installed package) and nothing else. Kinds and where they act:

  mlp       the MLP of a block (`model.mlp.activation` names it); torch: `cls(dim, MLPSettings)`,
            forward(x, down=None) (`down`: a pass's own down projection, sharing: mlp_down)
  token     a token-level addition before the first block (`components: [{use: NAME, ...}]`);
            torch: `cls(model, use)`, forward(x, idx) -> x, applied at `stage` ("embed": to the raw
            embedding, before its norm; "input": to the normalised block input x0)
  value     additions to the attention values v of chosen layers (value embeddings); torch:
            `cls(model, use, slots)` with `prepare(idx, dtype)` once per forward and
            `extra(prepared, slot)` per layer
  per_pass  tensors owned by each pass of a looped block (`per_pass.film: true` or
            `components: [{use: NAME}]`); torch: a stateless hook `cls(use)` with
            `pre(own, x) -> x` and `post(own, x_in, x, prev) -> x`, where `own` is the pass's
            module holding its tensors (a hook may own none); optionally
            `adapters(site) -> {projection: adapter}` on the layer's projections (per-pass LoRA)
  block     tensors owned by each physical block it applies to (`blocks.<b>.<name>`) and a hook
            on every layer that runs the block (Legendre weight sharing); torch: as per_pass
  schedule  no tensors: `depth_choices` gives the orders a training step draws from and their
            probabilities (random_depth); no torch side (`torch = ""`)

Third-party packages register components under the entry-point group "recurc.components"
(`[project.entry-points."recurc.components"] toy = "toy_pkg:ToyScale"`); a spec names them by
`use:` and never carries code.
"""
from __future__ import annotations

from .base import Component, Site, TensorDecl, all_components, lookup

__all__ = ["Component", "Site", "TensorDecl", "all_components", "lookup"]
