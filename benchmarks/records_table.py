"""The closing table of issue 14: every spec of specs/records and specs/seeds with its unique and
effective parameters (full size), predicted artifact bytes against its budget, whether a reduced
copy compiles fullgraph on CPU with no recompiles, and how many training steps it ran.

    python benchmarks/records_table.py                 # everything (several minutes on 2 cores)
    python benchmarks/records_table.py --no-compile --no-train   # counts and bytes only (seconds)

tests/test_records.py uses the same helpers (`small_overrides`, `compile_check`, `train_steps`).
Reduced size: the shape shrinks (dim 64, 4/2 heads, MLP 128, vocab 1024 for the demo tokenizer,
sequence 32, low ranks 8-16), the structure does not (order, sharing, components, schedule, quant).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recurc.estimate import estimate  # noqa: E402
from recurc.ir import Plan  # noqa: E402
from recurc.plan import make_plan  # noqa: E402
from recurc.spec import load_spec  # noqa: E402

SPEC_DIRS = (ROOT / "specs" / "records", ROOT / "specs" / "seeds")
DEMO_VOCAB = 1024        # runtime.demo's tokenizer


def spec_paths() -> list[Path]:
    return [p for d in SPEC_DIRS for p in sorted(d.glob("*.yaml"))]


def small_overrides(path: Path) -> list[str]:
    """Overrides that keep a spec's structure at a size a CPU compiles and trains in seconds."""
    m = load_spec(path).model
    out = ["model.dim=64", "model.heads=4", "model.kv_heads=2", f"model.vocab_size={DEMO_VOCAB}",
           "model.seq_len=32", "model.mlp.hidden=128"]
    if m.embed_rank:
        out.append("model.embed_rank=16")
    if m.attention.k_rank:
        out.append("model.attention.k_rank=8")
    return out


def compile_check(plan: Plan) -> None:
    """Every path of the Plan compiled fullgraph (aot_eager: forward and backward traced), a forward
    and backward on each, then again with recompiles forbidden; raises on a graph break or recompile."""
    import torch
    import torch._dynamo as dynamo

    from recurc.build import build
    dynamo.reset()
    model = build(plan)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    vocab, seq = plan.model.vocab_size, plan.model.seq_len
    g = torch.Generator().manual_seed(0)
    batch = lambda: (torch.randint(0, vocab, (2, seq), generator=g),  # noqa: E731
                     torch.randint(0, vocab, (2, seq), generator=g))
    paths = list(dict.fromkeys([ph.path for ph in plan.phases] + [plan.eval_path]))
    for name in paths:
        compiled(*batch(), path=name).backward()
    with torch.compiler.set_stance("fail_on_recompile"):
        for name in paths:
            compiled(*batch(), path=name).backward()


def train_steps(path: Path, out: Path, demo, steps: int = 3) -> int:
    """Train the reduced spec `steps` steps on the demo shards through runtime.train (CPU, eager);
    returns the number of steps the log records, each with a finite loss."""
    import math

    from runtime.log import read_json_log
    from runtime.train import main
    log = out / "log.jsonl"
    rc = main([str(path), *small_overrides(path), "train.tokens_per_step=128", "train.val_tokens=512",
               "train.warmup_steps=0", "train.warmdown_steps=1", "train.max_wallclock_seconds=null",
               "--steps", str(steps), "--device", "cpu", "--no-compile", "--no-export", "--val-every", "0",
               "--data", demo.train_pattern, "--val", demo.val_pattern, "--tokenizer", str(demo.tokenizer_path),
               "--out", str(out), "--log-json", str(log)])
    if rc != 0:
        raise RuntimeError(f"{path.name}: runtime.train exited {rc}")
    losses = [r["loss"] for r in read_json_log(log) if r["event"] == "step"]
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"{path.name}: non-finite loss {losses}")
    return len(losses)


def row(path: Path, do_compile: bool, do_train: bool, demo=None, work: Path | None = None) -> dict:
    plan = make_plan(load_spec(path))
    e = estimate(plan, suggest=False)
    r = {"spec": str(path.relative_to(ROOT / "specs")), "unique": e.unique_params, "effective": e.effective_params,
         "bytes": e.total_bytes, "budget": e.budget, "fits": e.fits, "compile": "-", "steps": "-"}
    if do_compile:
        try:
            compile_check(make_plan(load_spec(path, small_overrides(path))))
            r["compile"] = "ok"
        except Exception as exc:  # noqa: BLE001 - the table reports it
            r["compile"] = f"FAIL {type(exc).__name__}"
    if do_train:
        try:
            r["steps"] = train_steps(path, (work or Path(tempfile.mkdtemp())) / path.stem, demo)
        except Exception as exc:  # noqa: BLE001
            r["steps"] = f"FAIL {exc}"[:60]
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("specs", nargs="*", type=Path, help="these specs only (default: specs/records, specs/seeds)")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.specs] or spec_paths()
    demo = work = None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_train:
            from runtime.demo import build_demo_data
            demo, work = build_demo_data(Path(tmp) / "demo"), Path(tmp)
        # training logs go to stdout too: rows go to stderr as each finishes, the table to stdout at the end
        rows = []
        for p in paths:
            rows.append(row(p, not args.no_compile, not args.no_train, demo, work))
            print(_line(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(HEAD)
    print("-" * len(HEAD))
    for r in rows:
        print(_line(r))
    return 0


HEAD = f"{'spec':<45} {'unique':>12} {'effective':>12} {'predicted B':>12}  {'budget':<8} {'compile':<8} steps"


def _line(r: dict) -> str:
    verdict = "fits" if r["fits"] else "OVER"
    return (f"{r['spec']:<45} {r['unique']:>12,} {r['effective']:>12,} {r['bytes']:>12,}  {verdict:<8} "
            f"{r['compile']:<8} {r['steps']}")


if __name__ == "__main__":
    raise SystemExit(main())
