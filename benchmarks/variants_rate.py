"""Variants per second, scoring included: a 10,944-variant sweep over loop windows, widths, sharing and bit
widths of an 11-layer SP8192 stack, with a progress bar, then (honest worst case) a sweep in which every
variant has its own Plan structure, so no Plan skeleton is shared.

    python benchmarks/variants_rate.py [--workers N] [--no-progress]

Scoring uses recurc.estimate.estimate when it exists (else Plan counts, and says so).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recurc.variants import count_score, default_scorer, variants  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE = str(ROOT / "specs" / "loop45_sp8192.yaml")


def template(sweep: dict) -> dict:
    import copy

    from recurc.spec import _resolve
    data, _ = _resolve(Path(BASE), ())
    data = copy.deepcopy(data)
    data.pop("schedule", None)
    return {**data, "sweep": sweep}


def run(name: str, sweep: dict, workers: int | None, progress: bool, scorer) -> float:
    t0 = time.perf_counter()
    vs, stats = variants(template(sweep), score=scorer, workers=workers, progress=progress, with_stats=True)
    dt = time.perf_counter() - t0
    rate = stats["generated"] / dt
    print(f"{name}: {stats['generated']:,} variants in {dt:.2f} s = {rate:,.0f} variants/s "
          f"({stats['passed']:,} pass, {stats['invalid']} invalid, {stats['duplicates']} duplicates)")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=None, help="default: all cores for big sweeps")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--scorer", choices=("default", "counts"), default="default",
                    help="default: recurc.estimate.estimate; counts: Plan counts only (no bytes)")
    ap.add_argument("--quick", action="store_true", help="skip the worst-case sweep")
    args = ap.parse_args()
    scorer = default_scorer() if args.scorer == "default" else count_score
    print(f"scorer: {scorer.__module__}.{scorer.__name__}; cores: {os.cpu_count()}; "
          f"workers: {args.workers or 'auto'}; load average: {os.getloadavg()[0]:.1f}")
    constraints = {"max_total_bytes": "budget"} if scorer.__name__ == "estimate" else {}
    mixed = {"loop_windows": {"layers": 11, "width": [1, 4], "repeats": [2, 5]},
             "model.dim": [448, 512, 576, 640], "sharing": ["block", "attention"],
             "quant.groups.mlp.bits": [4, 5, 6], "quant.groups.attention.bits": [5, 6, 7],
             "constraints": constraints, "rank": "-unique_params"}
    rate = run("sweep (10,944 variants)", mixed, args.workers, not args.no_progress, scorer)
    if args.quick:
        print(f"RATE {rate:,.0f} variants/s")
        return
    distinct = {"loop_windows": {"layers": [11, 14], "width": [1, 4], "repeats": [2, 5]},
                "model.dim": [448, 512, 576], "sharing": ["block", "attention"],
                "constraints": constraints, "rank": "-unique_params"}
    worst = run("every variant its own Plan", distinct, args.workers, not args.no_progress, scorer)
    print(f"RATE {rate:,.0f} variants/s (worst case {worst:,.0f} variants/s)")


if __name__ == "__main__":
    main()
