"""Calibrate and check recurc.sizemodel against real quantize+compress through recurc.quant.

  python benchmarks/calibrate_sizemodel.py --excess      # compressor distance from entropy (knots)
  python benchmarks/calibrate_sizemodel.py --streams     # fp16/fp32 scale/passthrough ratios
  python benchmarks/calibrate_sizemodel.py --overhead    # container overhead (const, per tensor)
  python benchmarks/calibrate_sizemodel.py --fit-baseline  # TRAINED_BETA from 15,815,847
  python benchmarks/calibrate_sizemodel.py --validate    # predicted vs measured, synthetic weights
  python benchmarks/calibrate_sizemodel.py --fit-profile RUN/tensors.json --spec SPEC [--check SPEC:BYTES ...]
        # a trained-weight profile (recurc/profiles.py) from benchmarks/trained_size.py's output
  python benchmarks/calibrate_sizemodel.py --fit-records
        # the `trained` profile fitted to the published records (recurc/calibration.py), the bands
        # of the built-in profiles, and predicted vs actual bytes with and without leave-one-out
  python benchmarks/calibrate_sizemodel.py --checkpoint model.pt [--spec-json quant.json]
        # a torch state dict: measured (quant.py) vs predicted per group, and the beta that fits it

The first three print Python literals to paste into recurc/sizemodel.py.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recurc import entropy, quant, sizemodel  # noqa: E402
from recurc.measure import entropy_bits  # noqa: E402
from recurc.quantspec import ClipRule, Compressor, GroupQuant, QuantSpec  # noqa: E402

COMPRESSORS = ("zlib", "lzma", "zstd", "brotli")
BASELINE_BYTES = 15_815_847


def measure_excess(n: int = 1 << 20) -> None:
    """Excess bits/value of each compressor over the empirical entropy, i.i.d. Gaussian values
    rounded at steps giving H from ~0.3 to ~8 bits (int8 storage, clipped to +-127)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(n)
    table: dict[str, list[tuple[float, float]]] = {c: [] for c in COMPRESSORS}
    for step in (8.0, 3.0, 2.0, 1.5, 1.1, 0.8, 0.55, 0.4, 0.2, 0.1, 0.05, 0.025):
        q = np.clip(np.round(w / step), -127, 127).astype(np.int8)
        h = entropy_bits(q)
        _, cnt = np.unique(q, return_counts=True)
        huff = entropy.huffman_bits(cnt / cnt.sum())
        for c in COMPRESSORS:
            nbytes = len(quant.compress(q.tobytes(), Compressor(name=c)))
            base = huff if c in sizemodel.HUFFMAN_BASED else h
            table[c].append((round(h, 3), round(nbytes * 8 / n - base, 4)))
        print(f"step {step}: H={h:.3f} " + " ".join(f"{c}={table[c][-1][1]}" for c in COMPRESSORS), flush=True)
    print("EXCESS_KNOTS = {")
    print('    "none": ((0.0, 0.0), (8.0, 0.0)),')
    for c in COMPRESSORS:
        print(f'    "{c}": {tuple(sorted(table[c]))},')
    print("}")


def _float_streams(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Trained-like float streams: per-row clip/127 scales (positive, close magnitudes) and
    passthrough values (control-tensor-like: around 1 with spread, and N(0, 0.05))."""
    rows = np.abs(rng.standard_normal((4096, 512))).max(axis=1) * rng.lognormal(-1.5, 0.3, 4096)
    return {"scale": (rows / 127).astype(np.float64),
            "pass": np.concatenate([rng.normal(1.0, 0.3, 32768), rng.normal(0.0, 0.05, 32768)])}


def measure_streams() -> dict:
    rng = np.random.default_rng(1)
    streams = _float_streams(rng)
    out = {}
    for kind, vals in streams.items():
        for dt in ("float16", "float32"):
            raw = vals.astype(dt).tobytes()
            for sh in (False, True):
                b = quant.byte_shuffle(raw, np.dtype(dt).itemsize) if sh else raw
                for c in COMPRESSORS:
                    out[(c, dt, sh, kind)] = round(len(quant.compress(b, Compressor(name=c))) / len(raw), 4)
    print("STREAM_RATIO = {")
    for k, v in out.items():
        print(f"    {k!r}: {v},")
    print("}")
    return out


def measure_overhead() -> None:
    """Compressed container bytes minus compressed bytes of its streams alone, for 8 and 96 tiny
    all-zero tensors with baseline-like names, passthrough (fp16) and quantized (int8 1x4): fits
    a + b*N per kind; reported as (a, b_passthrough, b_quantized)."""
    out = {}
    for container in ("torch", "recurc"):
        for c in COMPRESSORS:
            fits = []
            for quantized in (False, True):
                pts = []
                for n_t in (8, 96):
                    shape = (1, 4) if quantized else (4,)
                    state = {f"blocks.{i // 10}.attn.c_{i % 10}.weight": np.zeros(shape, np.float32) for i in range(n_t)}
                    spec = QuantSpec(container=container, compressor=Compressor(name=c),
                                     passthrough_max_numel=0 if quantized else 65536)
                    qs = quant.quantize_state(state, lambda _n: "attention", spec)
                    stream = bytes((4 + 2) * n_t if quantized else 8 * n_t)
                    pts.append((n_t, len(quant.pack(qs, spec)) - len(quant.compress(stream, spec.compressor))))
                (n1, y1), (n2, y2) = pts
                b = (y2 - y1) / (n2 - n1)
                fits.append((y1 - b * n1, b))
            out[(container, c)] = (round((fits[0][0] + fits[1][0]) / 2, 1), round(fits[0][1], 2), round(fits[1][1], 2))
    print("OVERHEAD = {")
    for k, v in out.items():
        print(f"    {k!r}: {v},")
    print("}")


def fit_baseline_beta() -> float:
    """Bisection on beta so that the baseline (default QuantSpec) predicts BASELINE_BYTES."""
    ts = sizemodel.baseline_tensors()
    spec = QuantSpec()
    lo, hi = 1.0, 8.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        pred = sizemodel.predict(ts, spec, sizemodel.ShapeAssumption(beta=mid)).total
        # lighter tails (larger beta) -> smaller clip/sigma -> finer step -> more bytes
        lo, hi = (mid, hi) if pred < BASELINE_BYTES else (lo, mid)
    beta = 0.5 * (lo + hi)
    pred = sizemodel.predict(ts, spec, sizemodel.ShapeAssumption(beta=beta)).total
    print(f"TRAINED_BETA = {beta:.4f}   (baseline predicts {pred:,.0f} vs {BASELINE_BYTES:,})")
    return beta


def gen_gg(rng: np.random.Generator, shape: tuple[int, ...], beta: float, sigma: float) -> np.ndarray:
    """Generalized-Gaussian samples with std sigma: |x| = a * Gamma(1/beta)^(1/beta)."""
    import math
    a = math.sqrt(math.gamma(1 / beta) / math.gamma(3 / beta))
    g = rng.gamma(1 / beta, 1.0, size=shape) ** (1 / beta)
    return (sigma * a * g * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)


def compare(state: dict[str, np.ndarray], groups: dict[str, str], spec: QuantSpec,
            assume: sizemodel.ShapeAssumption, label: str) -> float:
    """Real pack() vs predict(); prints per group (compressing each group's tensors alone) and total."""
    qs = quant.quantize_state(state, groups, spec)
    real = len(quant.pack(qs, spec))
    descs = [sizemodel.TensorDesc(n, tuple(a.shape), groups[n], a.dtype.name) for n, a in state.items()]
    est = sizemodel.predict(descs, spec, assume)
    err = est.total / real - 1
    print(f"{label:58s} real {real:>11,} pred {est.total:>13,.0f} err {err:+.3%}  band [{est.low:,.0f}, {est.high:,.0f}]")
    for g, ge in est.groups.items():
        names = [n for n in state if groups[n] == g]
        if not names or len(names) == len(state):
            continue
        sub = quant.QuantizedState({n: qs.tensors[n] for n in names})
        greal = len(quant.pack(sub, spec))
        print(f"    {g:12s} real {greal:>11,} pred {ge.compressed:>13,.0f} (+overhead) err {ge.compressed / greal - 1:+.3%}")
    return err


def validate(quick: bool = False) -> None:
    rng = np.random.default_rng(2)
    ts = sizemodel.baseline_tensors(layers=2 if quick else 9)
    int6 = QuantSpec(groups={"embeddings": GroupQuant(bits=8, clip=ClipRule(kind="std", value=20)),
                             "attention": GroupQuant(bits=6, clip=ClipRule(kind="std", value=12.85)),
                             "mlp": GroupQuant(bits=6, clip=ClipRule(kind="std", value=12.85))},
                     passthrough_dtype="fp16", control_dtype="fp16", container="recurc",
                     compressor=Compressor(name="brotli", byte_shuffle=True))
    cases = [("baseline int8 pct zlib, gaussian sigma=0.5", QuantSpec(), 2.0, 0.5),
             ("baseline int8 pct zlib, gaussian sigma=0.02 (floor on)", QuantSpec(), 2.0, 0.02),
             ("baseline int8 pct zlib, beta=1.2 sigma=0.5", QuantSpec(), 1.2, 0.5),
             ("SDClip int6/int8 brotli shuffle recurc, gaussian", int6, 2.0, 0.05),
             ("SDClip int6/int8 brotli shuffle recurc, beta=1.2", int6, 1.2, 0.05),
             ("SDClip int6/int8 torch container lzma", int6.model_copy(update={"container": "torch",
              "compressor": Compressor(name="lzma")}), 2.0, 0.05),
             ("int5 std k=8 zstd recurc", QuantSpec(groups={g: GroupQuant(bits=5, clip=ClipRule(kind="std", value=8))
              for g in ("embeddings", "attention", "mlp")}, container="recurc", compressor=Compressor(name="zstd")), 2.0, 0.05),
             ("ternary brotli recurc", QuantSpec(groups={g: GroupQuant(scheme="ternary")
              for g in ("attention", "mlp")} | {"embeddings": GroupQuant()}, container="recurc",
              compressor=Compressor(name="brotli")), 2.0, 0.05)]
    for label, spec, beta, sigma in cases:
        state = {t.name: (gen_gg(rng, t.shape, beta, sigma) if t.group != "scalars"
                          else rng.normal(1.0, 0.3, t.shape).astype(np.float32)) for t in ts}
        groups = {t.name: t.group for t in ts}
        assume = sizemodel.ShapeAssumption(beta=beta, sigma=tuple((g, sigma) for g in ("embeddings", "attention", "mlp")))
        t0 = time.time()
        compare(state, groups, spec, assume, label)
        print(f"    ({time.time() - t0:.1f} s)", flush=True)


def check_checkpoint(path: str, spec_json: str | None) -> None:
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    state = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    groups = {k: sizemodel.group_of_name(k) for k in state}
    spec = QuantSpec.model_validate(json.loads(Path(spec_json).read_text())) if spec_json else QuantSpec()
    sig = {}
    for g in ("embeddings", "attention", "mlp"):
        vals = [a.std() for k, a in state.items() if groups[k] == g and a.ndim == 2]
        if vals:
            sig[g] = float(np.mean(vals))
    print("per-group mean std:", sig)
    compare(state, groups, spec, sizemodel.ShapeAssumption(sigma=tuple(sig.items())), f"{path} (beta={sizemodel.TRAINED_BETA})")
    for beta in (1.2, 1.6, 2.0, 2.5, 3.0, 4.0):
        compare(state, groups, spec, sizemodel.ShapeAssumption(beta=beta, sigma=tuple(sig.items())), f"  beta={beta}")


def fit_profile_from(path: str, spec_path: str, name: str, check: list[str]) -> None:
    """Fit a profile to one run's tensors.json; print it and how it predicts each run in `check`
    (spec, tensors.json, measured artifact bytes) — a run it was not fitted to is a real test."""
    from recurc.plan import make_plan
    from recurc.spec import load_spec
    plan = make_plan(load_spec(spec_path))
    prof = sizemodel.fit_profile(sizemodel.read_tensor_entropies(path), plan.quant, name, source=path)
    print(prof.to_json())
    for item in check:
        cspec, cbytes = item.split(":")
        cplan = make_plan(load_spec(cspec))
        for p in (prof, sizemodel.PROFILES["challenge-baseline"], sizemodel.PROFILES["gaussian"]):
            size = sizemodel.predict([(q.name, q.shape, q.group) for q in cplan.params], cplan.quant,
                                     sizemodel.ShapeAssumption(profile=p))
            print(f"  {cspec}: measured {int(cbytes):,}  predicted with {p.name}: {size.total:,.0f} "
                  f"({100 * (size.total / int(cbytes) - 1):+.2f} %)")


def fit_records() -> None:
    """Re-fit recurc/profiles.py's TRAINED_* constants and the bands, and print the calibration table."""
    from recurc import calibration as cal
    from recurc.profiles import PROFILES
    fitted = cal.fit_trained(cal.RECORDS)
    print(f"TRAINED_PCT_BETA = {fitted.beta_of('input', 'percentile')}")
    print(f"TRAINED_GPTQ_BITS = {fitted.gptq_bits_of('input')}")
    print(f"TRAINED_DECAY_TAU = {fitted.decay_tau}")
    print(f"TRAINED_FP8_BETA = {fitted.fp8_beta}")
    rows = cal.table()
    print(f"TRAINED_BAND = {cal.band_for(rows, 'record')}   (worst leave-one-out error + {cal.SEED_SPREAD:,} B)")
    print(f"SHORT_BAND = {cal.band_for(rows, 'run')}")
    for name in ("challenge-baseline", "gaussian"):
        # over the records these profiles can speak for: they carry no weight-decay or FP8 figure
        worst = max(abs(cal.predict(r, PROFILES[name]) / r.model_bytes - 1) for r in cal.RECORDS
                    if r.kind == "record" and not any(cal._uses(r)[2:]))
        print(f"{name}: worst error on the records {worst:.4%}; band "
              f"{math.ceil((worst + cal.SEED_SPREAD / cal.BUDGET) * 1e4) / 1e4}")
    pairs = [(a, b) for a in cal.RECORDS for b in cal.RECORDS if a is not b and a.kind == b.kind == "record"
             and cal.plan_of(a).quant.compressor == cal.plan_of(b).quant.compressor
             and cal.plan_of(a).quant.container == cal.plan_of(b).quant.container]
    worst = 0.0
    for a, b in pairs:
        err = cal.anchored(a, b) / a.model_bytes - 1
        worst = max(worst, abs(err))
        print(f"  {a.name} anchored on {b.name}: {cal.anchored(a, b):,.0f} vs {a.model_bytes:,} ({err:+.4%})")
    print(f"ANCHOR_BAND = {math.ceil((worst + 2 * cal.SEED_SPREAD / cal.BUDGET) * 1e4) / 1e4}")
    print(f"\nfitted on one record only (leave-one-out no test): {', '.join(cal.single_record_parameters()) or 'none'}")
    print(f"\n| artifact | actual | predicted (profile) | error | leave-one-out | error | band | covered |")
    print("|---|---:|---:|---:|---:|---:|---:|:-:|")
    tested = covered = 0
    for r in rows:
        loo = "—" if r.loo is None else f"{r.loo:,.0f}"
        le = "—" if r.loo_error is None else f"{r.loo_error:+.3%}"
        cov = "—" if r.loo_error is None else ("yes" if abs(r.loo_error) <= r.band else "no")
        if not r.tested:
            cov += " (untested: a parameter only it constrains)"
        elif r.loo_error is not None:
            tested += 1
            covered += abs(r.loo_error) <= r.band
        print(f"| {r.name} | {r.actual:,} | {r.predicted:,.0f} ({r.profile}) | {r.error:+.3%} | {loo} | {le} | "
              f"±{r.band:.2%} | {cov} |")
    print(f"\ncoverage: {covered}/{tested} tested leave-one-out predictions inside their profile's band")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--excess", action="store_true")
    ap.add_argument("--streams", action="store_true")
    ap.add_argument("--overhead", action="store_true")
    ap.add_argument("--fit-baseline", action="store_true")
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--quick", action="store_true", help="validate on a 2-layer baseline shape")
    ap.add_argument("--fit-records", action="store_true", help="fit the trained profile to recurc/calibration.py")
    ap.add_argument("--checkpoint")
    ap.add_argument("--spec-json")
    ap.add_argument("--fit-profile", metavar="TENSORS_JSON", help="fit a weight profile to trained_size.py output")
    ap.add_argument("--spec", help="the spec of --fit-profile's run")
    ap.add_argument("--name", default="fitted")
    ap.add_argument("--check", nargs="*", default=[], metavar="SPEC:BYTES",
                    help="runs to predict with the fitted profile: spec and measured artifact bytes")
    a = ap.parse_args()
    if a.excess:
        measure_excess()
    if a.streams:
        measure_streams()
    if a.overhead:
        measure_overhead()
    if a.fit_baseline:
        fit_baseline_beta()
    if a.validate:
        validate(a.quick)
    if a.fit_profile:
        fit_profile_from(a.fit_profile, a.spec, a.name, a.check)
    if a.fit_records:
        fit_records()
    if a.checkpoint:
        check_checkpoint(a.checkpoint, a.spec_json)


if __name__ == "__main__":
    main()
