"""Training-step time and peak memory: compiled recurc specs vs the hand-written reference.

Runs everything in one process on one GPU, side by side, and prints ratios. Each model trains
with the same optimizer (fused AdamW over all parameters), bf16 autocast and torch.compile
(inductor), with gradient accumulation to reach --tokens-per-step.

    python benchmarks/step_time.py                       # baseline vs reference + every spec
    python benchmarks/step_time.py --specs specs/loop45x2.yaml --steps 10
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recurc.build import build  # noqa: E402
from recurc.plan import make_plan  # noqa: E402
from recurc.spec import load_spec  # noqa: E402
from reference import RefConfig, Reference  # noqa: E402


class Runner:
    """One model + optimizer; `step()` runs one full accumulated training step."""

    def __init__(self, name: str, model: torch.nn.Module, vocab: int, seq: int, micro: int, accum: int,
                 path: str | None = None) -> None:
        self.name, self.seq, self.micro, self.accum, self.vocab = name, seq, micro, accum, vocab
        self.model = model.cuda()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        compiled = torch.compile(self.model)
        self.fn = (lambda x, y: compiled(x, y, path=path)) if path else compiled
        g = torch.Generator(device="cuda").manual_seed(0)
        tokens = [torch.randint(0, vocab, (micro, seq + 1), device="cuda", generator=g) for _ in range(accum)]
        self.batches = [(t[:, :-1].contiguous(), t[:, 1:].contiguous()) for t in tokens]
        self.compile_s = 0.0

    def step(self) -> None:
        for x, y in self.batches:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = self.fn(x, y) / self.accum
            loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def warm(self, n: int) -> None:
        torch.cuda.synchronize()
        t = time.perf_counter()
        self.step()
        torch.cuda.synchronize()
        self.compile_s = time.perf_counter() - t
        for _ in range(n - 1):
            self.step()
        torch.cuda.synchronize()

    def time_steps(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.step()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end))
        return out

    def peak_memory(self) -> int:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()


def measure_pair(a: Runner, b: Runner, rounds: int, steps: int) -> dict[str, dict]:
    """Alternate timing blocks so clock and thermal drift hit both models alike."""
    times: dict[str, list[float]] = {a.name: [], b.name: []}
    for _ in range(rounds):
        for r in (a, b):
            times[r.name] += r.time_steps(steps)
    return {r.name: {"step_ms": statistics.median(times[r.name]), "peak_bytes": r.peak_memory(),
                     "compile_s": r.compile_s} for r in (a, b)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens-per-step", type=int, default=524_288)
    ap.add_argument("--micro-batch", type=int, default=64, help="sequences per micro-batch")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--specs", nargs="*", default=None, help="recurrence specs to time (default: all in specs/)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    base_spec = load_spec(ROOT / "specs/baseline.yaml")
    seq = base_spec.model.seq_len
    accum = args.tokens_per_step // (args.micro_batch * seq)
    print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"{args.tokens_per_step:,} tokens/step = {accum} x {args.micro_batch} x {seq}")

    torch.manual_seed(0)
    ref = Runner("reference", Reference(RefConfig()), 1024, seq, args.micro_batch, accum)
    ours = Runner("recurc baseline", build(make_plan(base_spec)), 1024, seq, args.micro_batch, accum)
    ours.model.load_state_dict(ref.model.state_dict())
    for r in (ref, ours):
        r.warm(args.warmup)
    pair = measure_pair(ref, ours, args.rounds, args.steps)
    results = {"baseline": pair}
    r_ms, o_ms = pair["reference"]["step_ms"], pair["recurc baseline"]["step_ms"]
    r_mem, o_mem = pair["reference"]["peak_bytes"], pair["recurc baseline"]["peak_bytes"]
    print(f"\n{'model':<28}{'step ms':>10}{'tok/s':>14}{'peak GiB':>10}{'compile s':>11}")
    for name, d in pair.items():
        print(f"{name:<28}{d['step_ms']:>10.1f}{args.tokens_per_step / d['step_ms'] * 1e3:>14,.0f}"
              f"{d['peak_bytes'] / 2**30:>10.2f}{d['compile_s']:>11.1f}")
    print(f"ratio recurc/reference: step time {o_ms / r_ms:.3f}, peak memory {o_mem / r_mem:.3f}")
    del ref, ours
    torch.cuda.empty_cache()

    spec_files = args.specs if args.specs is not None else sorted(str(p) for p in (ROOT / "specs").glob("*.yaml"))
    rows = []
    for f in spec_files:
        spec = load_spec(f)
        if spec.name in ("baseline", "tiny"):
            continue
        sseq = spec.model.seq_len
        micro = max(1, args.micro_batch * seq // sseq)
        acc = max(1, args.tokens_per_step // (micro * sseq))
        torch._dynamo.reset()
        model = build(make_plan(spec))
        paths = list(dict.fromkeys([ph.path for ph in model.plan.phases] + [model.plan.eval_path]))
        compile_total = 0.0
        main = None
        for path in paths:
            r = Runner(spec.name, model, spec.model.vocab_size, sseq, micro, acc, path=path)
            r.warm(2 if path == "main" else 1)
            compile_total += r.compile_s
            if path == "main":
                main = r
        times = main.time_steps(args.steps * args.rounds)
        row = {"spec": spec.name, "paths": len(paths), "compile_s": compile_total,
               "step_ms": statistics.median(times), "peak_bytes": main.peak_memory(),
               "tokens_per_step": acc * micro * sseq}
        rows.append(row)
        print(f"  {spec.name}: {len(paths)} path(s), compile {compile_total:.1f} s, step {row['step_ms']:.1f} ms, "
              f"{row['tokens_per_step'] / row['step_ms'] * 1e3:,.0f} tok/s, peak {row['peak_bytes'] / 2**30:.2f} GiB",
              flush=True)
        del model, main, r
        torch.cuda.empty_cache()
    if rows:
        print(f"\n{'spec':<28}{'paths':>6}{'compile s':>11}{'step ms':>10}{'tok/s':>14}{'vs baseline':>12}{'peak GiB':>10}")
        for row in rows:
            tps = row["tokens_per_step"] / row["step_ms"] * 1e3
            print(f"{row['spec']:<28}{row['paths']:>6}{row['compile_s']:>11.1f}{row['step_ms']:>10.1f}{tps:>14,.0f}"
                  f"{row['step_ms'] / o_ms * args.tokens_per_step / row['tokens_per_step']:>12.2f}"
                  f"{row['peak_bytes'] / 2**30:>10.2f}")
    results["specs"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
