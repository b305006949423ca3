"""Activation memory of one micro-batch: recurc's baseline vs the challenge's GPT, side by side.

    python benchmarks/memory_probe.py /path/to/train_gpt.py [--seqs 64] [--spec specs/baseline.yaml]
        [--ddp] [--functorch KEY=VALUE ...]

Imports the challenge's script as a module (nothing of it is copied here), builds its GPT as its
main() does (bf16, then linear layers and control tensors back to fp32) and recurc's model as
runtime.train does, compiles both (inductor, fullgraph) and runs one forward/backward under the
training autocast on `seqs` sequences. Prints, for each: the bytes the compiled graph saves for
the backward (per token, grouped by dtype and shape), and on CUDA the peak allocated over the
forward/backward above the weights and gradients. A run's peak is reached inside one
micro-batch's backward, so a difference in a run's peak memory shows here unless it comes from
state outside the model (optimizer, copies), which runtime.train's per-phase peaks then locate.

--ddp wraps each compiled model as the challenge's script does under torchrun, also on one
process (`DDP(torch.compile(model))` on a one-rank group): dynamo then splits the graph at DDP's
gradient buckets and compiles each piece on its own. --functorch sets an AOT-autograd /
partitioner option (torch._functorch.config) for both models, e.g. ban_recompute_used_far_apart=False
max_dist_from_bw=4 (what runtime.train --recompute-far-apart sets: the backward recomputes the
residual stream) or
activation_memory_budget=0.9 (lower recomputes more; 1.0, torch's default, saves what the
min-cut saves).
"""
from __future__ import annotations

import argparse
import ast
import collections
import importlib.util
import tempfile

import torch
import torch._functorch.config
from torch import nn

from recurc.plan import make_plan
from recurc.spec import load_spec
from runtime.train import build_model


def challenge_model(path: str, plan, device: torch.device) -> nn.Module:
    spec = importlib.util.spec_from_file_location("challenge_train_gpt", path)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    m, h = plan.model, ref.Hyperparameters
    model = ref.GPT(vocab_size=m.vocab_size, num_layers=len(plan.layers), model_dim=m.dim, num_heads=m.heads,
                    num_kv_heads=m.kv_heads, mlp_mult=2, tie_embeddings=True,
                    tied_embed_init_std=h.tied_embed_init_std, logit_softcap=h.logit_softcap,
                    rope_base=h.rope_base, qk_gain_init=h.qk_gain_init).to(device).bfloat16()
    for module in model.modules():
        if isinstance(module, ref.CastedLinear):
            module.float()
    ref.restore_low_dim_params_to_fp32(model)
    return model


def autocast(device: torch.device):
    """The training autocast: bf16 on CUDA, and bf16 on CPU too so that the CPU probe sees the
    dtypes of a GPU run."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def saved_tensors(loss: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor the autograd graph behind `loss` holds for the backward (deduplicated by
    storage): the compiled graph's saved activations, which is what a micro-batch costs."""
    seen, out, stack, visited = set(), [], [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        for t in getattr(node, "saved_tensors", ()) or ():
            if isinstance(t, torch.Tensor):
                key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                if key not in seen:
                    seen.add(key)
                    out.append(t)
        stack.extend(f for f, _ in node.next_functions)
    return out


def live_at_peak(snapshot: dict) -> collections.Counter:
    """Replay the allocator trace of one forward/backward: the blocks live at its peak, counted
    by size (bytes -> count). Which sizes one model holds more of names the tensors at fault."""
    live: dict[int, int] = {}
    cur = peak = 0
    at_peak: dict[int, int] = {}
    for trace in snapshot["device_traces"]:
        for e in trace:
            if e["action"] == "alloc":
                live[e["addr"]] = e["size"]
                cur += e["size"]
                if cur > peak:
                    peak, at_peak = cur, dict(live)
            elif e["action"] == "free_completed" and e["addr"] in live:
                cur -= live.pop(e["addr"])
    return collections.Counter(at_peak.values())


def _peak_above(base: int) -> float:
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def compiled_as_run(model: nn.Module, device: torch.device, ddp: bool) -> nn.Module:
    """torch.compile(model), and with `ddp` wrapped as the challenge wraps it under torchrun."""
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    if not ddp:
        return compiled
    return nn.parallel.DistributedDataParallel(compiled, device_ids=[device.index or 0] if device.type == "cuda" else None,
                                               broadcast_buffers=False)


def probe(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
          device: torch.device, ddp: bool = False) -> tuple[float, collections.Counter]:
    """One model: (CUDA) the peak of its first, compiling forward/backward and of a later one,
    above what was allocated before it; the saved tensors of a forward; the blocks live at the
    later step's peak. Returns (the later step's peak in MiB, or on CPU the saved MiB; groups)."""
    cuda = device.type == "cuda"
    compiled = compiled_as_run(model, device, ddp)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    with autocast(device):      # the first call compiles: a run's warm-up pays this peak once
        compiled(x, y).backward()
    first = _peak_above(base) if cuda else 0.0
    if cuda:                    # a later step, as in training: nothing but autograd holds the graph
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
        with autocast(device):
            compiled(x, y).backward()
        later = _peak_above(base)
        blocks = live_at_peak(torch.cuda.memory._snapshot())
        torch.cuda.memory._record_memory_history(enabled=None)
    with autocast(device):
        loss = compiled(x, y)
    saved = saved_tensors(loss)
    total = sum(t.untyped_storage().nbytes() for t in saved)
    groups: collections.Counter = collections.Counter()
    for t in saved:
        groups[(str(t.dtype).removeprefix("torch."), tuple(t.shape))] += t.untyped_storage().nbytes()
    del saved
    loss.backward()
    tokens = x.numel()
    print(f"\n{name}: {total / 2**20:,.1f} MiB saved for the backward = {total / tokens:,.0f} B/token")
    for (dtype, shape), n in groups.most_common(6):
        print(f"  {n / tokens:8,.0f} B/token  {dtype:9} {shape}")
    if not cuda:
        return total / 2**20, groups
    print(f"  weights and grads {base / 2**20:,.1f} MiB; peak above them: first (compiling) step "
          f"{first:,.1f} MiB, a later step {later:,.1f} MiB")
    print("  blocks allocated in the later step and live at its peak, largest sizes first:")
    for size, n in sorted(blocks.items(), reverse=True)[:8]:
        print(f"    {n:4} x {size / 2**20:9.2f} MiB")
    groups.update({("live at peak", (size,)): size * n for size, n in blocks.items()})
    groups[("first-step peak MiB", ())] = round(first)
    return later, groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", help="the challenge's train_gpt.py")
    ap.add_argument("--spec", default="specs/baseline.yaml")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--ddp", action="store_true", help="DDP(torch.compile(model)) on a one-rank group, as under torchrun")
    ap.add_argument("--functorch", action="append", default=[], metavar="KEY=VALUE",
                    help="a torch._functorch.config option for both models (repeatable), "
                         "e.g. ban_recompute_used_far_apart=False")
    args = ap.parse_args()
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    for item in args.functorch:
        key, _, value = item.partition("=")
        if not hasattr(torch._functorch.config, key):
            ap.error(f"--functorch {item}: torch._functorch.config has no option {key!r}")
        setattr(torch._functorch.config, key, ast.literal_eval(value))
    if args.ddp:
        import torch.distributed as dist
        if device.type == "cuda":
            torch.cuda.set_device(device)
        store = tempfile.NamedTemporaryFile(prefix="memory_probe_store_")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{store.name}",
                                rank=0, world_size=1)
    print(f"wrapper: {'DDP(torch.compile(model)), one rank' if args.ddp else 'torch.compile(model)'}; "
          f"torch._functorch.config: {', '.join(args.functorch) or 'defaults'}")
    plan = make_plan(load_spec(args.spec))
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, plan.model.vocab_size, (args.seqs, plan.model.seq_len + 1), generator=g).to(device)
    x, y = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()
    torch.manual_seed(0)
    ref, ref_groups = probe("challenge GPT", challenge_model(args.reference, plan, device), x, y, device, args.ddp)
    torch.manual_seed(0)
    model = build_model(plan, device)
    model.tok_emb.to(torch.bfloat16)      # as build_model does on CUDA (here for the CPU probe too)
    ours, our_groups = probe(f"recurc {plan.name}", model, x, y, device, args.ddp)
    print("\nsaved tensors (by dtype, shape) and blocks live at the peak (by size) that differ (bytes per token, recurc - challenge):")
    for key in sorted(set(ref_groups) | set(our_groups), key=str):
        delta = our_groups[key] - ref_groups[key]
        if delta and key[0] != "first-step peak MiB":
            print(f"  {delta / x.numel():+9,.0f}  {key[0]:9} {key[1]}")
    print(f"first (compiling) step's peak: recurc {our_groups[('first-step peak MiB', ())]:,} MiB, "
          f"challenge {ref_groups[('first-step peak MiB', ())]:,} MiB")
    print(f"\nrecurc / challenge: {ours / ref:.3f} ({ours - ref:+,.1f} MiB per micro-batch of {x.numel():,} tokens)")
    if args.ddp:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
