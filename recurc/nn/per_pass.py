"""Torch side of the per-pass components (recurc/components/per_pass.py): hooks applied around a
block by each pass that owns their tensors. The tensors live on the pass's own module
(`passes.<v>.<name>`); a hook is stateless apart from its settings, so one hook object serves
every pass and torch.compile sees plain attribute reads."""
from __future__ import annotations

from torch import Tensor, nn

from .layers import PassHook


class IterationEmbedding(PassHook):
    def pre(self, own: nn.Module, x: Tensor) -> Tensor:
        return x + own.iter_emb.to(x.dtype)


class FiLM(PassHook):
    def pre(self, own: nn.Module, x: Tensor) -> Tensor:
        return x * (1 + own.film_scale.to(x.dtype)) + own.film_shift.to(x.dtype)


class TimestepScale(PassHook):
    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        cap = self.use.get("cap")
        return x_in + own.gamma.clamp(-cap, cap).to(x.dtype) * (x - x_in)


class CrossRepeatScale(PassHook):
    def post(self, own: nn.Module, x_in: Tensor, x: Tensor, prev: Tensor | None) -> Tensor:
        return x + own.cross_repeat.to(x.dtype) * prev
