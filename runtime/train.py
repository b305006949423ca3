"""Train a spec: `python -m runtime.train SPEC [key.path=value ...] [options]`.

One process or many: under `torchrun --standalone --nproc_per_node=N -m runtime.train SPEC` every
rank runs this same code with DDP (NCCL on CUDA, gloo on CPU). Without --data the run trains on
the offline demo data (`runtime.demo`, built into data/demo on first use).

What a step does, as in the challenge's script:
  * tokens_per_step tokens per optimizer step, whatever the number of ranks: each rank runs
    `accum` micro-batches of `micro_tokens` tokens (gradient accumulation, DDP syncs on the last);
  * the learning rate is scaled by a linear warmup and a linear warmdown, the warmdown measured in
    steps or, under a wall-clock cap, in remaining time (whichever is lower);
  * the spec's depth schedule picks the path (execution order) from the training fraction
    (steps done / iterations, or elapsed / cap when that is further along);
  * warmup_steps compile warm-up steps run first and are then undone (weights, optimizer and data
    position restored), so compilation costs no training and the timed run starts clean.
Validation time and checkpoint time do not count against the wall-clock cap.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch._functorch.config
import torch.distributed as dist
from torch import nn

from recurc.errors import SpecError
from recurc.plan import Plan, make_plan
from recurc.safeio import inside
from recurc.ir import TrainSettings
from recurc.spec import load_spec
from runtime.checkpoint import (CHECKPOINT_NAME, check_resumable, load_checkpoint, restore_error, rng_state, save_checkpoint,
                                set_rng_state)
from runtime.data import DistributedTokenLoader
from runtime.evaluate import EvalResult, ValidationSet, autocast_context, evaluate
from runtime.log import RunLogger
from runtime.optim import Optimizers, build_optimizers
from runtime.progress import RichProgress

DEMO_DIR = "data/demo"
DEFAULT_MICRO_TOKENS = {"cuda": 65_536, "cpu": 8_192}  # per rank per micro-batch (challenge: 65,536)


# ============================================================================ pure schedule math
def lr_scale(step: int, elapsed: float, train: TrainSettings, iterations: int, cap: float | None) -> float:
    """LR multiplier for the step after `step` completed steps and `elapsed` training seconds."""
    scale = 1.0
    if train.lr_warmup_steps and step < train.lr_warmup_steps:
        scale = (step + 1) / train.lr_warmup_steps
    wd = train.warmdown_steps
    if wd <= 0:
        return scale
    if step >= iterations - wd:  # by steps: linear to 0 at `iterations`
        scale = min(scale, max(iterations - step, 0) / wd)
    if cap is not None and step > 0:
        # by wall-clock (the challenge's rule): warmdown takes wd steps at the mean step time so far;
        # start it when that much time is left before the cap.
        warmdown_time = wd * elapsed / step
        remaining = max(cap - elapsed, 0.0)
        if remaining <= warmdown_time:
            scale = min(scale, remaining / max(warmdown_time, 1e-9))
    return scale


def muon_momentum_at(step: int, train: TrainSettings) -> float:
    """Muon momentum for the step after `step` completed steps: linear from the warm-up start to
    muon_momentum over muon_momentum_warmup_steps (the challenge's schedule), then constant."""
    n = train.muon_momentum_warmup_steps
    frac = min(step / n, 1.0) if n > 0 else 1.0
    return (1 - frac) * train.muon_momentum_warmup_start + frac * train.muon_momentum


def training_fraction(step: int, elapsed: float, iterations: int, cap: float | None) -> float:
    frac = step / iterations
    if cap is not None:
        frac = max(frac, elapsed / cap)
    return min(frac, 1.0)


def phase_at(plan: Plan, fraction: float, step: int = 0) -> int:
    """Index of the last phase that has started at `fraction` (or at `step`, for a phase that
    starts at a step)."""
    index = 0
    for i, phase in enumerate(plan.phases):
        if phase.started(fraction, step):
            index = i
    return index


def path_at(plan: Plan, fraction: float, step: int = 0) -> str:
    """The path training step `step` runs: its phase's path, or for a phase with choices
    (random_depth) the path drawn from (train.seed, step), the same on every rank and on resume."""
    return plan.phases[phase_at(plan, fraction, step)].draw(plan.train.seed, step)


def training_paths(plan: Plan) -> list[str]:
    """Every path a training step can run, in phase order (each is one compiled graph)."""
    return list(dict.fromkeys(name for ph in plan.phases for name, _ in ph.weighted()))


def plan_accumulation(tokens_per_step: int, world_size: int, seq_len: int, max_micro_tokens: int) -> tuple[int, int]:
    """(accumulation steps, tokens per micro-batch per rank) with world * accum * micro ==
    tokens_per_step, micro a multiple of seq_len and at most max_micro_tokens if possible."""
    if tokens_per_step % (world_size * seq_len):
        raise ValueError(f"tokens_per_step ({tokens_per_step:,}) must be a multiple of world_size × seq_len "
                         f"({world_size} × {seq_len})")
    per_rank = tokens_per_step // world_size
    seqs = per_rank // seq_len
    for accum in range(max(1, math.ceil(per_rank / max_micro_tokens)), seqs + 1):
        if seqs % accum == 0:
            return accum, per_rank // accum
    return seqs, seq_len


# ============================================================================ processes
@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_arg: str | None) -> Dist:
    """Join the torchrun process group if launched by torchrun; pick the device."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    want_cuda = device_arg != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local) if want_cuda else torch.device(device_arg or "cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        if want_cuda:
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Dist(rank, world, local, device)


def barrier(d: Dist) -> None:
    if d.distributed:
        dist.barrier()


# ============================================================================ attention kernels
# recurc/runtime_cli.py lists them too (the CLI imports no torch)
ATTENTION_KERNELS = ("auto", "flash", "cudnn", "efficient")


def select_attention_kernel(name: str) -> None:
    """Which kernels scaled_dot_product_attention may use on CUDA. "auto" leaves torch's own
    settings; "flash" is the challenge's choice (its script turns the others off; here the
    memory-efficient kernel stays on as the fallback for shapes flash cannot run, e.g. a dense
    document mask); "cudnn" and "efficient" prefer those kernels. On one H200 with torch 2.11
    the baseline measured the same ms/step and peak memory under "flash" and all four enabled
    (benchmarks/results/h200_session3_2026-12-02)."""
    if name not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention kernel {name!r} (one of {', '.join(ATTENTION_KERNELS)})")
    if name == "auto":
        return
    b = torch.backends.cuda
    b.enable_flash_sdp(name == "flash")
    b.enable_cudnn_sdp(name == "cudnn")
    b.enable_mem_efficient_sdp(True)
    b.enable_math_sdp(True)


# ============================================================================ activation recompute
_PARTITIONER_BEFORE: dict[str, object] = {}   # torch's own settings, saved by the first call


def allow_far_apart_recompute(allow: bool) -> None:
    """Whether the compiled backward may recompute cheap values whose uses lie far apart.

    torch's min-cut partitioner bans recomputing a value whose backward uses are far apart
    (`ban_recompute_used_far_apart`), a guard against long recompute chains. In one fullgraph
    of the whole model that ban reaches the residual stream: each layer's mixed input, post-
    attention and post-MLP sums are saved, although all of them are pointwise sums of matmul
    outputs the backward saves anyway. Lifted (with recompute chains bounded at 4 ops), the
    partitioner recomputes them inside the backward kernels: on CPU the baseline saves 13 % less
    per micro-batch (355.4 -> 309.4 MiB for 2,048 tokens; benchmarks/memory_probe.py --functorch
    ban_recompute_used_far_apart=False max_dist_from_bw=4). On one H200 it trades time for memory:
    peak 10,878 -> 9,504 MiB (0.922 of the challenge script's) at 255.7 -> 326.5 ms/step
    (benchmarks/results/h200_session4_2026-12-03), hence off by default. The challenge's script
    gets a little of the saving by accident: DDP splits its graph at gradient buckets, so fewer
    uses are far apart (341.4 MiB on CPU). A process-wide partitioner setting, read
    when a graph is compiled; off puts back the values torch had before the first call."""
    cfg = torch._functorch.config
    if not _PARTITIONER_BEFORE:
        _PARTITIONER_BEFORE.update(ban_recompute_used_far_apart=cfg.ban_recompute_used_far_apart,
                                   max_dist_from_bw=cfg.max_dist_from_bw)
    # recompute chains of at most 4 ops from the backward's use (the residual sums are one or two
    # adds away from saved tensors)
    lifted = {"ban_recompute_used_far_apart": False, "max_dist_from_bw": 4}
    for key, value in (lifted if allow else _PARTITIONER_BEFORE).items():
        setattr(cfg, key, value)



# ============================================================================ the model
def build_model(plan: Plan, device: torch.device) -> nn.Module:
    """The spec's model (recurc.build) on `device`: fp32, except that on CUDA the token embedding
    is bf16, as in the challenge's script (it casts the model to bf16 and only the linear layers
    and low-dimensional tensors back to fp32). That makes the residual stream bf16 from the first
    layer on (half the activation memory) and gives its RMS norms bf16's eps, as there."""
    from recurc.build import build
    model = build(plan, device=device)
    if torch.device(device).type == "cuda":
        model.tok_emb.to(torch.bfloat16)
    return model


class EMA:
    """Exponential moving average of the parameters, kept in fp32."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for _, p in model.named_parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach().float() for _, p in model.named_parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for t, n in zip(self.shadow, self.names):
            t.copy_(state[n])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for (_, p), t in zip(model.named_parameters(), self.shadow):
            p.copy_(t)


# ============================================================================ the run
@dataclass
class RunConfig:
    spec_path: str
    overrides: list[str]
    data: str
    val: str
    tokenizer: str
    out: Path
    resume: bool
    compile: bool
    warmup: bool
    log_json: Path
    log_every: int
    val_every: int
    ckpt_every: int
    micro_tokens: int | None
    export: bool
    progress: Any            # a progress display (runtime/progress.py) or None
    stdout_json: bool = False  # print each record as a JSON line (stdout is not a terminal)
    attention_kernel: str = "auto"  # scaled_dot_product_attention's kernels on CUDA (ATTENTION_KERNELS)
    recompute_far_apart: bool = False  # let the compiled backward recompute the residual stream


class Trainer:
    """State of one training run on one rank: model, optimizers, data, schedule position."""

    def __init__(self, cfg: RunConfig, plan: Plan, d: Dist, log: RunLogger) -> None:
        self.cfg, self.plan, self.d, self.log = cfg, plan, d, log
        t = self.train = plan.train
        self.iterations = t.iterations
        self.cap = t.max_wallclock_seconds
        seq_len = plan.model.seq_len
        max_micro = cfg.micro_tokens or DEFAULT_MICRO_TOKENS["cuda" if d.device.type == "cuda" else "cpu"]
        self.accum, self.micro_tokens = plan_accumulation(t.tokens_per_step, d.world_size, seq_len, max_micro)

        if d.device.type == "cuda":
            select_attention_kernel(cfg.attention_kernel)
        torch.manual_seed(t.seed)  # same initial weights on every rank (DDP also broadcasts them)
        self.base = build_model(plan, d.device)
        self.base.train()
        self.opt: Optimizers = build_optimizers(self.base, plan, t)
        self.ema = EMA(self.base, t.ema_decay) if t.ema_decay else None
        if cfg.compile:
            allow_far_apart_recompute(cfg.recompute_far_apart)
            # one graph per path the run executes (training paths with grad, the eval path without):
            # room for all of them, so a random-depth draw never falls back to eager
            limit = 2 * (len(training_paths(plan)) + 1)
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
        self.fwd: nn.Module = torch.compile(self.base, dynamic=False) if cfg.compile else self.base
        self.model: nn.Module = self.fwd
        if d.distributed:
            # Paths that skip some tensors (the flat order before loops switch on) leave them
            # without gradients; DDP must then look for unused parameters.
            multi_path = len(training_paths(plan)) > 1
            with warnings.catch_warnings():
                # torch >= 2.13 deprecates broadcast_buffers, but its replacement still syncs buffers
                # at init; the flag is what we mean (and every rank would print the warning)
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                self.model = nn.parallel.DistributedDataParallel(
                    self.fwd, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=multi_path)
        self.loader = self._loader()
        self.val = ValidationSet.load(cfg.val, cfg.tokenizer, seq_len, plan.model.vocab_size, t.val_tokens, d.device)
        self.val_batch_seqs = max(1, self.micro_tokens // seq_len)
        self.step = 0
        self.looped = False      # whether a phase past the first has run (loops switched on)
        self.elapsed = 0.0

    # ---------------------------------------------------------------- one optimizer step
    def train_step(self, path: str) -> torch.Tensor:
        """Forward/backward over `accum` micro-batches and one optimizer step; the mean loss."""
        seq_len = self.plan.model.seq_len
        total = torch.zeros((), device=self.d.device)
        for i in range(self.accum):
            x, y = self.loader.next_batch(self.micro_tokens, seq_len)
            x, y = x.to(self.d.device, non_blocking=True), y.to(self.d.device, non_blocking=True)
            sync = (self.model.no_sync() if isinstance(self.model, nn.parallel.DistributedDataParallel)
                    and i < self.accum - 1 else contextlib.nullcontext())
            with sync:
                with autocast_context(self.d.device):
                    loss = self.model(x, y, path=path)
                (loss / self.accum).backward()
            total += loss.detach()
        if self.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.base.parameters(), self.train.grad_clip)
        self.opt.step()
        self.opt.zero_grad()
        if self.ema is not None:
            self.ema.update(self.base)
        return total / self.accum

    # ---------------------------------------------------------------- warm-up, discarded
    def warmup(self) -> None:
        """Run warmup_steps steps (over every training path, so each gets compiled), then put the
        weights, optimizer state and data position back as they were."""
        n = self.train.warmup_steps if self.cfg.warmup else 0
        if n <= 0:
            return
        # on the host, as the challenge keeps it: a device copy would add its size to the peak memory
        model_state = {k: v.detach().cpu().clone() for k, v in self.base.state_dict().items()}
        opt_state = copy.deepcopy(self.opt.state_dict())
        loader_state = self.loader.state_dict()
        ema_state = copy.deepcopy(self.ema.state_dict()) if self.ema else None
        paths = training_paths(self.plan)
        t0 = time.perf_counter()
        n = max(n, len(paths))      # at least one step per path: each gets compiled
        for i in range(n):
            self.opt.set_lr_scale(1.0)
            self.train_step(paths[i % len(paths)])
        self._sync()
        with torch.no_grad():
            self.base.load_state_dict(model_state)
        self.opt.load_state_dict(opt_state)
        self.loader.load_state_dict(loader_state)
        if ema_state is not None:
            self.ema.load_state_dict(ema_state)
        self.log.event("warmup", steps=n, paths=",".join(paths), seconds=round(time.perf_counter() - t0, 2),
                       **self._peak_mem())

    # ---------------------------------------------------------------- checkpoints
    def _spec_key(self) -> str:
        data = self.plan.canonical()
        data.pop("train", None)  # a resumed run may change its training knobs, not its model
        return json.dumps(data, sort_keys=True)

    def save(self) -> None:
        if self.d.main:
            save_checkpoint(self.cfg.out / CHECKPOINT_NAME, {
                "spec": self._spec_key(), "step": self.step, "elapsed": self.elapsed,
                "model": self.base.state_dict(), "optimizers": self.opt.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "loader": self.loader.state_dict(), "rng": rng_state()})
        barrier(self.d)

    def load(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.d.device)
        check_resumable(state, path)
        if state["spec"] != self._spec_key():
            raise SpecError(f"{path} was written for another model than {self.cfg.spec_path}",
                            hint="resume needs the same spec (training settings may differ)")
        try:
            with torch.no_grad():
                self.base.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizers"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            self.loader.load_state_dict(state["loader"])
            set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise restore_error(path, exc) from None
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        frac = training_fraction(self.step, self.elapsed, self.iterations, self.cap)
        self.looped = self.step > 0 and phase_at(self.plan, frac, self.step) > 0
        self.log.event("resume", step=self.step, steps=self.iterations, elapsed=self.elapsed, checkpoint=str(path))

    # ---------------------------------------------------------------- helpers
    def _loader(self) -> DistributedTokenLoader:
        # The challenge's data order whatever the seed (shards by name from token 0; loader seed 0):
        # the seed changes the initial weights only, as in its script.
        return DistributedTokenLoader(self.cfg.data, self.d.rank, self.d.world_size, seed=0)

    def _peak_mem(self) -> dict[str, int]:
        """The CUDA allocator's peak so far (what the challenge's script reports), for the log:
        read at the warm-up's end, each logged step and before the final validation, it shows
        which phase sets a run's peak."""
        if self.d.device.type != "cuda":
            return {}
        return {"peak_mem_mib": torch.cuda.max_memory_allocated(self.d.device) // 2**20}

    def _sync(self) -> None:
        if self.d.device.type == "cuda":
            torch.cuda.synchronize(self.d.device)

    def _agreed(self, value: float, op=None) -> float:
        """A float every rank agrees on (max over ranks), e.g. elapsed time near the cap."""
        if not self.d.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.d.device)
        dist.all_reduce(t, op=op or dist.ReduceOp.MAX)
        return float(t.item())

    def _mean_loss(self, loss: torch.Tensor) -> float:
        if self.d.distributed:
            loss = loss.clone()
            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
            loss /= self.d.world_size
        return float(loss.item())

    def validate(self, path: str | None = None) -> EvalResult:
        self._sync()
        return evaluate(self.fwd, self.val, path=path or self.plan.eval_path, batch_seqs=self.val_batch_seqs,
                        device=self.d.device, rank=self.d.rank, world_size=self.d.world_size)

    def done(self) -> bool:
        return self.step >= self.iterations or (self.cap is not None and self.elapsed >= self.cap)

    def param_checksum(self) -> list[float]:
        """Per rank (sum, sum |x|) of all parameters in float64: equal on every rank under DDP."""
        with torch.no_grad():
            flat = torch.cat([p.detach().double().reshape(-1) for p in self.base.parameters()])
            mine = torch.stack([flat.sum(), flat.abs().sum()])
        if not self.d.distributed:
            return mine.tolist()
        gathered = [torch.zeros_like(mine) for _ in range(self.d.world_size)]
        dist.all_gather(gathered, mine)
        return [v for g in gathered for v in g.tolist()]

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.train
        self.log.event("run", spec=self.plan.name, params=self.plan.unique_params, world_size=self.d.world_size,
                       device=str(self.d.device), accum=self.accum, micro_tokens=self.micro_tokens,
                       tokens_per_step=t.tokens_per_step, compile=cfg.compile,
                       phases=" ".join(f"{ph.start:g}:{ph.path}" for ph in self.plan.phases),
                       model=type(self.base).__name__)
        ckpt = cfg.out / CHECKPOINT_NAME
        if cfg.resume and (ckpt.exists() or ckpt.is_symlink()):   # not a regular file: refused by load
            self.load(ckpt)
        self.warmup()
        self.log.start_progress(self.iterations, self.step)
        window_t, window_steps = 0.0, 0
        last_val: EvalResult | None = None
        start_step = self.step
        while True:
            last = self.done()
            if self.step > 0 and (last or (cfg.val_every and self.step % cfg.val_every == 0)):
                if last and (peak := self._peak_mem()):
                    self.log.event("trained", step=self.step, **peak)
                last_val = self.validate()
                self.log.event("val", step=self.step, steps=self.iterations, val_loss=last_val.loss,
                               val_bpb=last_val.bpb, elapsed=self.elapsed)
            if self.step > start_step and (last or (cfg.ckpt_every and self.step % cfg.ckpt_every == 0)):
                self.save()
            if last:
                break
            frac = training_fraction(self.step, self.elapsed, self.iterations, self.cap)
            path = path_at(self.plan, frac, self.step)
            if phase_at(self.plan, frac, self.step) > 0 and not self.looped:
                # loops switch on: pass-owned copies start from the shared weights (untie_init: copy)
                self.looped = True
                if self.step > 0:
                    self.base.copy_untied()
            scale = lr_scale(self.step, self.elapsed, t, self.iterations, self.cap)
            self.opt.set_lr_scale(scale)
            self.opt.set_muon_momentum(muon_momentum_at(self.step, t))
            self._sync()
            t0 = time.perf_counter()
            loss = self.train_step(path)
            self._sync()
            dt = time.perf_counter() - t0
            self.step += 1
            self.elapsed += dt
            if self.cap is not None:  # ranks must agree on when the cap stops the run
                self.elapsed = self._agreed(self.elapsed)
            window_t += dt
            window_steps += 1
            if self.step % cfg.log_every == 0 or self.step <= 3 or self.done():
                tok_s = t.tokens_per_step * window_steps / max(window_t, 1e-9)
                loss_v = self._mean_loss(loss)
                self.log.event("step", step=self.step, steps=self.iterations, loss=loss_v, lr_scale=scale,
                               path=path, tok_s=tok_s, step_ms=1000 * window_t / window_steps,
                               elapsed=self.elapsed, **self._peak_mem())
                self.log.advance(self.step, f"loss {loss_v:.3f}  {tok_s:,.0f} tok/s")
                window_t, window_steps = 0.0, 0
            else:
                self.log.advance(self.step)
        self.log.stop_progress()
        return self.finish(last_val)

    def finish(self, last_val: EvalResult | None) -> dict[str, Any]:
        """EMA weights in, final validation, ranks' agreement, export."""
        if self.ema is not None:
            self.ema.copy_to(self.base)
            self.save()  # the final checkpoint holds the weights that are exported (for `recurc measure`)
            last_val = self.validate()
        if last_val is None:
            last_val = self.validate()
        sums = self.param_checksum()
        agree = all(sums[i] == sums[i % 2] for i in range(len(sums)))
        final = dict(step=self.step, steps=self.iterations, val_loss=last_val.loss, val_bpb=last_val.bpb,
                     elapsed=self.elapsed, ema=self.ema is not None, ranks_agree=agree,
                     checksums=sums, tokens_seen=self.step * self.train.tokens_per_step)
        final.update(self._peak_mem())
        self.log.event("final", **final)
        if self.cfg.export:
            from runtime.export import export_run
            report = export_run(self, pre=last_val)
            self.log.event("export", **report)
            final["export"] = report
        return final

    def calibration_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """n training micro-batches from a fresh loader (the run's own position is untouched)."""
        loader = self._loader()
        return [loader.next_batch(self.micro_tokens, self.plan.model.seq_len) for _ in range(n)]


# ============================================================================ command line
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from recurc.cli import _Parser                    # usage errors as one `error:` line + hint
    from recurc.runtime_cli import add_train_options  # one definition, shared with `recurc train`
    p = _Parser(prog="python -m runtime.train", description="train a recurc spec")
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.iterations=200")
    add_train_options(p)
    return p.parse_intermixed_args(argv)  # overrides may come after options


def resolve_data(args: argparse.Namespace, d: Dist) -> tuple[str, str, str]:
    """(train glob, val glob, tokenizer): given, or the demo data (built by rank 0 if missing)."""
    if args.data is None:
        if d.main:
            from runtime.demo import build_demo_data
            build_demo_data(DEMO_DIR)
        barrier(d)
        demo = Path(DEMO_DIR)
        return (str(demo / "fineweb_train_*.bin"), args.val or str(demo / "fineweb_val_*.bin"),
                args.tokenizer or str(demo / "tokenizer.model"))
    val = args.val or str(Path(args.data).parent / "fineweb_val_*.bin")
    if args.tokenizer is None:
        raise SpecError("--tokenizer is required with --data (BPB needs the SentencePiece model)",
                        where="<command line>")
    return args.data, val, args.tokenizer


def train_rank(cfg: RunConfig, plan: Plan, d: Dist) -> int:
    """This rank's part of a run: train, validate, export. Shared by `main` and emitted scripts."""
    log = RunLogger(cfg.log_json, rank=d.rank, progress=cfg.progress, stdout_json=cfg.stdout_json)
    try:
        try:
            trainer = Trainer(cfg, plan, d, log)
        except ValueError as exc:  # settings that cannot run here (e.g. tokens_per_step vs ranks)
            print(f"error: {exc}", file=sys.stderr)
            return 2
        trainer.run()
    finally:
        log.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m runtime.train`: any bad input ends in one `error:` line, as under `recurc train`."""
    args = parse_args(argv)
    try:
        return _run(args)
    except SpecError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2
    except OSError as exc:           # an output folder or log that cannot be written
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"train.iterations={args.steps}"] if args.steps else [])
    spec = load_spec(args.spec, overrides)
    plan = make_plan(spec)
    if args.micro_tokens is not None and args.micro_tokens < 1:
        raise SpecError(f"--micro-tokens takes a positive number of tokens, got {args.micro_tokens}",
                        where="<command line>")
    d = init_distributed(args.device)
    try:
        data, val, tokenizer = resolve_data(args, d)
        out = Path(args.out) if args.out else inside("runs", spec.name)   # a name cannot leave runs/
        compile_ = args.compile if args.compile is not None else d.device.type == "cuda"
        out.mkdir(parents=True, exist_ok=True)
        cfg = RunConfig(
            spec_path=args.spec, overrides=overrides, data=data, val=val, tokenizer=tokenizer, out=out,
            resume=args.resume, compile=compile_,
            warmup=args.warmup if args.warmup is not None else compile_,
            log_json=Path(args.log_json or out / "log.jsonl"), log_every=max(1, args.log_every),
            val_every=spec.train.val_every if args.val_every is None else args.val_every,
            ckpt_every=args.ckpt_every, micro_tokens=args.micro_tokens, export=args.export,
            stdout_json=not sys.stdout.isatty(), attention_kernel=args.attention_kernel,
            recompute_far_apart=args.recompute_far_apart,
            progress=RichProgress(plan.train.max_wallclock_seconds)
            if (args.progress if args.progress is not None else sys.stderr.isatty()) else None)
        return train_rank(cfg, plan, d)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
