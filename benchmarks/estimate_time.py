"""Whole-process wall time of `recurc estimate SPEC`, as a user runs it.

    python benchmarks/estimate_time.py [--runs 15] [SPEC ...]

Each case starts a fresh `recurc estimate` process `--runs` times and prints min / median / max.
Cases:
  warm         entropies in recurc's on-disk cache, Python bytecode cached (the usual state
               after the first run)
  cold cache   an empty entropy cache each run: recurc.entropy (numpy) computes them
  no .pyc      PYTHONDONTWRITEBYTECODE=1 with no __pycache__ for recurc: every recurc module is
               compiled from source on each run (how some sandboxes run Python)
The last line checks that the estimate process imported neither torch nor numpy (warm case).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# loop45x2 is over budget: its estimate also searches the cheapest changes that fit
SPECS = ["specs/baseline.yaml", "specs/loop45_sp8192.yaml", "specs/abc_x4.yaml", "specs/loop45x2.yaml"]


def timed(cmd: list[str], env: dict[str, str], runs: int, before=None) -> tuple[float, float, float]:
    times = []
    for _ in range(runs):
        if before:
            before()
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", default=SPECS)
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="recurc-cache-"))
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base["RECURC_CACHE_DIR"] = str(cache)
    cmd = [sys.executable, "-m", "recurc", "estimate"]
    subprocess.run([*cmd, a.specs[0]], env=base, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # writes .pyc

    def clear_cache() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    def drop_pyc() -> None:
        for d in (ROOT / "recurc").rglob("__pycache__"):
            shutil.rmtree(d, ignore_errors=True)

    print(f"{'spec':34s} {'case':12s} {'min':>7s} {'median':>7s} {'max':>7s}  (s, {a.runs} runs)")
    for spec in a.specs:
        subprocess.run([*cmd, spec], env=base, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        cases = [("warm", base, None), ("cold cache", base, clear_cache),
                 ("no .pyc", {**base, "PYTHONDONTWRITEBYTECODE": "1"}, drop_pyc)]
        for label, env, before in cases:
            lo, med, hi = timed([*cmd, spec], env, a.runs, before)
            print(f"{spec:34s} {label:12s} {lo:7.3f} {med:7.3f} {hi:7.3f}", flush=True)
    for spec in a.specs:
        check = ("import sys; sys.argv = ['recurc', 'estimate', %r]; "
                 "import recurc.cli, contextlib, io\n"
                 "with contextlib.redirect_stdout(io.StringIO()): recurc.cli.main()\n"
                 "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))" % spec)
        subprocess.run([*cmd, spec], env=base, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # fills the cache
        out = subprocess.run([sys.executable, "-c", check], env=base, cwd=ROOT, check=True, capture_output=True, text=True)
        print(f"{spec}: torch/numpy imported by a warm estimate: {out.stdout.strip()}")
    clear_cache()


if __name__ == "__main__":
    main()
