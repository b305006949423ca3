"""Optimizers of a run: Muon for the 2-D matrices of attention and MLP, Adam for the rest.

Parameter groups come from the Plan (`ParamInfo.group`), never from guessing at names, so a
block shared by several virtual layers is one tensor in one group and is updated once per step.

Muon (Jordan et al., the modded-nanogpt optimizer the challenge uses): SGD momentum (Nesterov),
then the update is replaced by an approximately orthogonal matrix with the same row/column
spaces, computed by a quintic Newton-Schulz iteration. The numerics are the challenge script's:
Newton-Schulz in bf16 on CUDA, the scaled update kept in bf16 until it is added to the fp32
weight. Two things differ in how, not what, is computed:
  * matrices of one shape are stacked and orthogonalised by one batched iteration (9 blocks give
    4 shapes, so ~20 batched matrix products per step instead of ~270 small ones);
  * under several ranks each rank orthogonalises its share of every stack, then the shares are
    all-gathered, so Newton-Schulz costs 1/N per GPU. Gradients are already averaged by DDP and
    momentum is cheap, so every rank keeps every momentum buffer; the result is the same for
    any world size.

Every param group carries `base_lr`; the schedule sets `lr = base_lr * scale` each step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from recurc.plan import Plan
from recurc.ir import TrainSettings

# Coefficients of the quintic iteration (modded-nanogpt): they push singular values into
# roughly [0.7, 1.2] in 5 steps rather than converging exactly, which is all Muon needs.
_NS_COEFFS = (3.4445, -4.7750, 2.0315)
MUON_GROUPS = ("attention", "mlp")


def zeropower_via_newtonschulz5(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximate U V^T of each matrix g = U S V^T (g: (..., rows, cols)). bf16 on CUDA, as the
    challenge; fp32 elsewhere because CPU bf16 matmuls are slow and the CPU runs are the
    exactness tests. The result stays in that dtype."""
    a, b, c = _NS_COEFFS
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = g.size(-2) > g.size(-1)
    if transposed:  # iterate on the wide orientation: X X^T is the smaller Gram matrix
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x
    return x.mT if transposed else x


_compiled_ns = None


def _orthogonalise(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Newton-Schulz, compiled on CUDA (one fused kernel chain per stack shape; eager launches
    ~30 small kernels per step of the iteration)."""
    global _compiled_ns
    if not g.is_cuda:
        return zeropower_via_newtonschulz5(g, steps=steps)
    if _compiled_ns is None:
        _compiled_ns = torch.compile(zeropower_via_newtonschulz5, dynamic=False)
    return _compiled_ns(g, steps=steps)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def orthogonalise_stack(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Newton-Schulz of a stack (n, rows, cols), split across ranks: rank r orthogonalises
    matrices [r*k, (r+1)*k) (k = ceil(n / world), zero-padded: a zero matrix stays zero), then
    all-gather. One rank: no communication."""
    rank, world = _world()
    if world == 1:
        return _orthogonalise(g, steps)
    n = g.size(0)
    k = -(-n // world)
    mine = g[rank * k:(rank + 1) * k]
    if mine.size(0) < k:
        mine = torch.cat([mine, mine.new_zeros((k - mine.size(0), *g.shape[1:]))])
    mine = _orthogonalise(mine, steps).contiguous()
    out = mine.new_empty((world, *mine.shape))
    dist.all_gather(list(out.unbind(0)), mine)
    return out.reshape(world * k, *g.shape[1:])[:n]


class Muon(torch.optim.Optimizer):
    """Momentum + Newton-Schulz orthogonalisation, for 2-D parameters only."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.95,
                 nesterov: bool = True, backend_steps: int = 5, weight_decay: float = 0.0) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, backend_steps=backend_steps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D parameters only, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            stacks: dict[tuple[int, ...], list[tuple[nn.Parameter, torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:  # unused on this phase's path (e.g. before loops switch on)
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(mom).add_(g)
                g = g.add(buf, alpha=mom) if group["nesterov"] else buf
                stacks.setdefault(tuple(p.shape), []).append((p, g))
            for shape, items in stacks.items():
                updates = orthogonalise_stack(torch.stack([g for _, g in items]), group["backend_steps"])
                # Orthogonal updates have RMS 1/sqrt(max dim); this keeps tall matrices' step size
                # comparable to square ones (the challenge's scaling, applied in the update's dtype).
                updates = updates * max(1.0, shape[0] / shape[1]) ** 0.5
                for (p, _), u in zip(items, updates.unbind(0)):
                    if group["weight_decay"]:
                        p.mul_(1.0 - lr * group["weight_decay"])
                    p.add_(u.to(p.dtype), alpha=-lr)
        return loss

    def set_momentum(self, momentum: float) -> None:
        for group in self.param_groups:
            group["momentum"] = momentum


@dataclass
class Optimizers:
    """The run's optimizers, stepped and scheduled together."""
    optimizers: list[torch.optim.Optimizer]

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def set_muon_momentum(self, momentum: float) -> None:
        for opt in self.optimizers:
            if isinstance(opt, Muon):
                opt.set_momentum(momentum)

    def set_lr_scale(self, scale: float) -> None:
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError(f"checkpoint holds {len(states)} optimizers, this run has {len(self.optimizers)}")
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)


def param_groups(model: nn.Module, plan: Plan) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Model parameters by Plan group. Fails loudly if the module and the Plan disagree on names."""
    named = dict(model.named_parameters())  # shared modules appear once (remove_duplicate)
    planned = {p.name: p for p in plan.params}
    extra, missing = sorted(set(named) - set(planned)), sorted(set(planned) - set(named))
    if extra or missing:
        raise ValueError(f"module and Plan disagree on parameters: not in the Plan {extra[:5]}, "
                         f"not in the module {missing[:5]}")
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for info in plan.params:  # Plan order: stable, same on every rank
        p = named[info.name]
        if tuple(p.shape) != info.shape:
            raise ValueError(f"{info.name}: module shape {tuple(p.shape)} but Plan shape {info.shape}")
        key = "muon" if info.group in MUON_GROUPS and p.ndim == 2 else info.group
        if info.name == "lm_head.weight":
            key = "head"
        groups.setdefault(key, []).append((info.name, p))
    return groups


def build_optimizers(model: nn.Module, plan: Plan, train: TrainSettings) -> Optimizers:
    """Muon for attention/mlp matrices; Adam for embeddings (embed_lr; an untied head head_lr),
    scalars and per-pass tensors (scalar_lr); also for any non-2-D attention/mlp tensor."""
    groups = param_groups(model, plan)
    fused = next(model.parameters()).is_cuda
    lrs = {"embeddings": train.embed_lr, "head": train.head_lr}
    adam_groups = []
    for key, items in groups.items():
        if key == "muon":
            continue
        lr = lrs.get(key, train.scalar_lr)
        # decoupled weight decay on the embeddings only; scalars are gains and mixes, not weights
        wd = train.weight_decay if key in ("embeddings", "head") else 0.0
        adam_groups.append(dict(params=[p for _, p in items], lr=lr, base_lr=lr, weight_decay=wd, name=key))
    opts: list[torch.optim.Optimizer] = []
    if adam_groups:
        opts.append(torch.optim.AdamW(adam_groups, betas=(train.beta1, train.beta2), eps=1e-8, fused=fused))
    if "muon" in groups:
        muon = Muon([p for _, p in groups["muon"]], lr=train.matrix_lr, momentum=train.muon_momentum,
                    backend_steps=train.muon_backend_steps, weight_decay=train.weight_decay)
        muon.param_groups[0]["base_lr"] = train.matrix_lr
        muon.param_groups[0]["name"] = "muon"
        opts.append(muon)
    return Optimizers(opts)
