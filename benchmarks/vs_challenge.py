"""Helpers of benchmarks/vs_challenge.sh: build the shared corpus, timestamp a run's output, and
compare the challenge script's runs with recurc's.

    python benchmarks/vs_challenge.py corpus DIR --max-bytes N --val-tokens N GLOB...
    CMD | python benchmarks/vs_challenge.py stamp LOG     # copy stdout, each line with its time
    python benchmarks/vs_challenge.py report DIR [--spec SPEC]

A run's log is named `<kind>_<tag>.txt` (kind: ref or recurc), its lines `seconds-since-launch\\tline`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from runtime.data import write_shard
from runtime.demo import BOS_ID, TOKENIZER_NAME, corpus_documents, split_documents, train_tokenizer

H200_DENSE_BF16 = 989e12  # datasheet dense bf16 FLOP/s (H100/H200 SXM), the MFU denominator


# ------------------------------------------------------------------------------------ corpus
def build_corpus(out: Path, patterns: list[str], max_bytes: int, val_tokens: int, vocab: int) -> None:
    """Tokenizer, train shards of 20,000 documents each and one val shard (1 % of the documents,
    capped), encoded on every core."""
    import sentencepiece as spm
    t0 = time.perf_counter()
    docs = corpus_documents(patterns, max_bytes)
    train_docs, val_docs = split_documents(docs, 0.01)
    proto = train_tokenizer(train_docs, vocab, threads=os.cpu_count() or 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / TOKENIZER_NAME).write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)

    def encode(ds: list[str]) -> np.ndarray:
        ids = sp.encode(ds, num_threads=os.cpu_count() or 1)
        lens = np.fromiter((len(i) + 1 for i in ids), dtype=np.int64, count=len(ids))
        arr = np.empty(int(lens.sum()), dtype=np.uint16)
        pos = 0
        for i in ids:
            arr[pos] = BOS_ID
            arr[pos + 1:pos + 1 + len(i)] = i
            pos += len(i) + 1
        return arr

    val = encode(val_docs)[: val_tokens + 1]
    write_shard(out / "fineweb_val_000000.bin", val)
    n = 0
    for start in range(0, len(train_docs), 20_000):
        arr = encode(train_docs[start:start + 20_000])
        write_shard(out / f"fineweb_train_{start // 20_000:06d}.bin", arr)
        n += arr.size
    print(f"corpus: {len(docs):,} documents, train {n:,} tokens, val {val.size:,} tokens, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


# ------------------------------------------------------------------------------------ logs
def stamp(log: Path) -> None:
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as f:
        for line in sys.stdin:
            sys.stdout.write(line)
            f.write(f"{time.time() - t0:.2f}\t{line}")
            f.flush()


REF_STEP = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.]+) train_time:(\d+)ms")
REF_VAL = re.compile(r"^step:(\d+)/\d+ val_loss:([\d.]+) val_bpb:([\d.]+)")
REF_MEM = re.compile(r"^peak memory allocated: (\d+) MiB")
OUR_STEP = re.compile(r"^step (\d+)/\d+ loss ([\d.]+)")
OUR_VAL = re.compile(r"^val (\d+)/\d+ val_loss ([\d.]+)")
OUR_MEM = re.compile(r"peak_mem_mib ([\d,]+)")
OUR_ELAPSED = re.compile(r"elapsed ([\d.]+)s")


def parse(path: Path) -> dict:
    """losses by step, cumulative train seconds by step, val loss, peak MiB, first-step seconds."""
    ref = path.name.startswith("ref_")
    r: dict = {"loss": {}, "time": {}, "val": None, "mem": None, "first": None}
    for raw in path.read_text(encoding="utf-8").splitlines():
        t, _, line = raw.partition("\t")
        if ref:
            if m := REF_STEP.match(line):
                s = int(m[1]); r["loss"][s] = float(m[2]); r["time"][s] = int(m[3]) / 1000
            elif m := REF_VAL.match(line):
                r["val"] = (int(m[1]), float(m[2]))
            elif m := REF_MEM.match(line):
                r["mem"] = int(m[1])
        elif line.startswith("{"):  # recurc's JSON lines (stdout not a terminal)
            rec = json.loads(line)
            if rec.get("event") == "step":
                r["loss"][rec["step"]] = rec["loss"]; r["time"][rec["step"]] = rec["elapsed"]
                r.setdefault("path", {})[rec["step"]] = rec.get("path", "main")
                if "peak_mem_mib" in rec:
                    r["mem"] = rec["peak_mem_mib"]
            elif rec.get("event") in ("warmup", "trained") and "peak_mem_mib" in rec:
                r["mem_" + rec["event"]] = rec["peak_mem_mib"]
            elif rec.get("event") == "val":
                r["val"] = (rec["step"], rec["val_loss"])
            elif rec.get("event") == "final" and "peak_mem_mib" in rec:
                r["mem"] = rec["peak_mem_mib"]
        else:
            if m := OUR_STEP.match(line):
                s = int(m[1]); r["loss"][s] = float(m[2])
                if e := OUR_ELAPSED.search(line):
                    r["time"][s] = float(e[1])
            elif m := OUR_VAL.match(line):
                r["val"] = (int(m[1]), float(m[2]))
            if m := OUR_MEM.search(line):
                r["mem"] = int(m[1].replace(",", ""))
                if line.startswith(("warmup", "trained")):  # which phase sets the peak
                    r["mem_" + line.split()[0]] = r["mem"]
        if r["first"] is None and r["loss"]:
            r["first"] = float(t)
    return r


def ms_per_step_by_path(r: dict, lo: int) -> dict[str, float]:
    """Mean step time of each path a run took (flat before loops switch on, looped after), over
    consecutive logged steps on one path from step lo on."""
    paths = r.get("path", {})
    steps = sorted(s for s in r["time"] if s >= lo)
    sums: dict[str, list[float]] = {}
    for a, b in zip(steps, steps[1:]):
        if paths.get(a) == paths.get(b):
            acc = sums.setdefault(paths[b], [0.0, 0])
            acc[0] += r["time"][b] - r["time"][a]
            acc[1] += b - a
    return {p: 1000 * t / n for p, (t, n) in sums.items() if n}


def seed_of(tag: str) -> str | None:
    """The seed in a run's tag (`ref_2s1337`, `recurc_1s42_baseline`)."""
    m = re.match(r"^[a-z]+_\d+s(\d+)", tag)
    return m[1] if m else None


def ms_per_step(r: dict, lo: int) -> float | None:
    """Mean step time between step lo and the last logged step (compile and warm-up excluded)."""
    steps = sorted(s for s in r["time"] if s >= lo)
    if len(steps) < 2:
        return None
    return 1000 * (r["time"][steps[-1]] - r["time"][steps[0]]) / (steps[-1] - steps[0])


def report(d: Path, spec: str | None, tokens_per_step: int) -> None:
    runs = {p.stem: parse(p) for p in sorted(d.glob("*_*.txt"))}
    if not runs:
        raise SystemExit(f"error: no run logs in {d}")
    names = list(runs)
    steps = sorted(set().union(*(r["loss"] for r in runs.values())))
    shown = [s for s in steps if s <= 3 or s % 25 == 0 or s == steps[-1]]
    print("train loss at step")
    print(f"{'step':>6} " + " ".join(f"{n:>14}" for n in names))
    for s in shown:
        print(f"{s:>6} " + " ".join(f"{runs[n]['loss'].get(s, float('nan')):>14.4f}" for n in names))
    lo = 25 if len(steps) > 2 else 1
    flops = None
    if spec:
        from recurc.estimate import forward_flops
        from recurc.plan import make_plan
        from recurc.spec import load_spec
        flops = 3.0 * forward_flops(make_plan(load_spec(spec)), "main")
    print(f"\n{'run':>14} {'val loss':>9} {'@step':>6} {'ms/step':>8} {'tok/s':>11} {'peak MiB':>9} {'1st step s':>10}"
          + (f" {'MFU':>6}" if flops else ""))
    for n, r in runs.items():
        ms = ms_per_step(r, lo)
        tok = tokens_per_step / ms * 1000 if ms else None
        val = r["val"] or (None, float("nan"))
        mfu = f" {100 * tok * flops / H200_DENSE_BF16:>5.1f}%" if flops and tok else ""
        print(f"{n:>14} {val[1]:>9.4f} {val[0] or 0:>6} {ms or float('nan'):>8.1f} {tok or 0:>11,.0f} "
              f"{r['mem'] or 0:>9,} {r['first'] or float('nan'):>10.1f}{mfu}")
    refs = [n for n in names if n.startswith("ref_")]
    ours = [n for n in names if n.startswith("recurc_")]
    for n in ours:
        r = runs[n]
        by_path = ms_per_step_by_path(r, lo)
        if len(by_path) > 1:
            print(f"{n} ms/step by path: " + ", ".join(f"{p} {ms:.1f}" for p, ms in by_path.items()))
        if "mem_warmup" in r or "mem_trained" in r:
            print(f"{n} peak MiB: after warm-up {r.get('mem_warmup', 0):,}, after training "
                  f"{r.get('mem_trained', 0):,}, after the final validation {r['mem'] or 0:,}")
    vals = {kind: [runs[n]["val"][1] for n in group if runs[n]["val"]] for kind, group in (("ref", refs), ("recurc", ours))}
    if len(vals["ref"]) >= 2 or len(vals["recurc"]) >= 2:
        for kind, v in vals.items():
            if v:
                print(f"{kind} final val loss over {len(v)} runs: mean {sum(v) / len(v):.4f}, "
                      f"spread {max(v) - min(v):.4f}")
        if vals["ref"] and vals["recurc"]:
            print(f"Δ mean val (recurc - challenge): "
                  f"{sum(vals['recurc']) / len(vals['recurc']) - sum(vals['ref']) / len(vals['ref']):+.4f}")
    if len(refs) >= 2:
        a, b = runs[refs[0]]["loss"], runs[refs[1]]["loss"]
        common = sorted(set(a) & set(b))
        noise = max(abs(a[s] - b[s]) for s in common) if common else float("nan")
        print(f"\nchallenge run-to-run |Δ train loss| max over logged steps ({refs[0]} vs {refs[1]}): {noise:.4f}")
    if refs and ours:
        for n in ours:      # against the challenge's run of the same seed where there is one
            same = [m for m in refs if seed_of(m) == seed_of(n)]
            base_name = (same or refs)[0]
            base, r = runs[base_name], runs[n]
            common = sorted(set(base["loss"]) & set(r["loss"]))
            diff = max(abs(base["loss"][s] - r["loss"][s]) for s in common) if common else float("nan")
            mean = (sum(r["loss"][s] - base["loss"][s] for s in common) / len(common)) if common else float("nan")
            ms_b, ms_r = ms_per_step(base, lo), ms_per_step(r, lo)
            print(f"{n} vs {base_name}: max |Δ train loss| {diff:.4f}, mean Δ {mean:+.4f}, "
                  f"Δ val {(r['val'] or (0, float('nan')))[1] - (base['val'] or (0, float('nan')))[1]:+.4f}, "
                  f"tokens/s ratio {(ms_b / ms_r) if ms_b and ms_r else float('nan'):.3f}, "
                  f"memory ratio {(r['mem'] or 0) / max(base['mem'] or 1, 1):.3f}, "
                  f"first step ratio {(r['first'] or 0) / max(base['first'] or 1, 1e-9):.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("out", type=Path)
    c.add_argument("globs", nargs="+")
    c.add_argument("--max-bytes", type=int, default=1_000_000_000)
    c.add_argument("--val-tokens", type=int, default=2_097_152)
    c.add_argument("--vocab", type=int, default=1024)
    s = sub.add_parser("stamp")
    s.add_argument("log", type=Path)
    r = sub.add_parser("report")
    r.add_argument("dir", type=Path)
    r.add_argument("--spec")
    r.add_argument("--tokens-per-step", type=int, default=524_288)
    a = ap.parse_args(argv)
    if a.cmd == "corpus":
        build_corpus(a.out, a.globs, a.max_bytes, a.val_tokens, a.vocab)
    elif a.cmd == "stamp":
        stamp(a.log)
    else:
        report(a.dir, a.spec, a.tokens_per_step)


if __name__ == "__main__":
    main()
