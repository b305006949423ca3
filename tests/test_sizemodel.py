"""recurc.sizemodel: the baseline figure, agreement with real quant.py output, no torch, speed."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from recurc import quant, sizemodel
from recurc.quantspec import LQER, ClipRule, Compressor, GroupQuant, Override, QuantPatch, QuantSpec

BASELINE_BYTES = 15_815_847   # FACTS.md: naive baseline, int8 + zlib-9


def test_baseline_prediction_within_1pct():
    est = sizemodel.predict(sizemodel.baseline_tensors(), QuantSpec())
    assert est.raw_bytes == 17_178_912
    assert abs(est.total / BASELINE_BYTES - 1) < 0.01
    assert est.low <= BASELINE_BYTES <= est.high


def test_tuple_input_and_groups():
    ts = [(t.name, t.shape, t.group) for t in sizemodel.baseline_tensors()]
    est = sizemodel.predict(ts, QuantSpec())
    assert est.groups["per_pass"].raw_bytes == 0
    assert est.groups["scalars"].raw_bytes == 4 * (9 * 2056 + 2048)
    assert est.groups["embeddings"].raw_bytes == 1024 * 512 + 1024 * 2


SDCLIP = {"embeddings": GroupQuant(bits=8, clip=ClipRule(kind="std", value=20)),
          "attention": GroupQuant(bits=6, clip=ClipRule(kind="std", value=12.85)),
          "mlp": GroupQuant(bits=6, clip=ClipRule(kind="std", value=12.85))}
CASES = [  # (label, spec, weight std, tolerance)
    ("int8 pct zlib torch", QuantSpec(), 0.5, 0.01),
    ("int8 pct zlib torch, scale floor on", QuantSpec(), 0.02, 0.015),
    ("sdclip int6/int8 brotli shuffle recurc", QuantSpec(groups=SDCLIP, container="recurc", control_dtype="fp16",
                                                          compressor=Compressor(name="brotli", byte_shuffle=True)), 0.05, 0.01),
    ("sdclip int6/int8 zstd recurc", QuantSpec(groups=SDCLIP, container="recurc", compressor=Compressor(name="zstd")), 0.05, 0.01),
    ("int6 clip search brotli recurc", QuantSpec(groups={g: GroupQuant(bits=6, clip=ClipRule(kind="search"))
                                                          for g in SDCLIP}, container="recurc",
                                                  compressor=Compressor(name="brotli")), 0.05, 0.015),
    ("int8 absmax zlib torch", QuantSpec(groups={g: GroupQuant(bits=8, clip=ClipRule(kind="absmax")) for g in SDCLIP}),
     0.5, 0.015),
    ("int5 std lzma recurc", QuantSpec(groups={g: GroupQuant(bits=5, clip=ClipRule(kind="std", value=8))
                                               for g in SDCLIP}, container="recurc", compressor=Compressor(name="lzma")), 0.05, 0.03),
]


@pytest.mark.parametrize("label,spec,sigma,tol", CASES)
def test_agrees_with_real_compression(label, spec, sigma, tol):
    rng = np.random.default_rng(0)
    ts = [t for t in sizemodel.baseline_tensors(vocab=512, layers=2) if t.group != "mlp"]
    state = {t.name: (rng.normal(0, sigma, t.shape) if t.group != "scalars" else rng.normal(1, .3, t.shape)).astype(np.float32)
             for t in ts}
    groups = {t.name: t.group for t in ts}
    real = len(quant.pack(quant.quantize_state(state, groups, spec), spec))
    assume = sizemodel.ShapeAssumption(beta=2.0, sigma=tuple((g, sigma) for g in ("embeddings", "attention")))
    est = sizemodel.predict(ts, spec, assume)
    assert abs(est.total / real - 1) < tol, (label, real, est.total)


def test_zstd_in_the_torch_container_is_the_known_gap():
    """The gap docs/size-model.md measures: for the same weights zstd-22 codes the recurc container
    as modelled, and the torch container (its pickle and zip records ahead of and between the
    value streams) far above it; the deviation depends on the data (measured -1.2 % .. +9.8 %)."""
    rng = np.random.default_rng(0)
    ts = [t for t in sizemodel.baseline_tensors(vocab=512, layers=2) if t.group != "mlp"]
    state = {t.name: (rng.normal(0, .05, t.shape) if t.group != "scalars" else rng.normal(1, .3, t.shape)).astype(np.float32)
             for t in ts}
    groups = {t.name: t.group for t in ts}
    err = {}
    for container in ("recurc", "torch"):
        spec = QuantSpec(groups=SDCLIP, container=container, compressor=Compressor(name="zstd"))
        real = len(quant.pack(quant.quantize_state(state, groups, spec), spec))
        err[container] = real / sizemodel.predict(ts, spec, sizemodel.ShapeAssumption(beta=2.0)).total - 1
    assert abs(err["recurc"]) < 0.005
    assert 0.05 < err["torch"] < 0.12, err


def _gates(n: int) -> list:
    return [sizemodel.TensorDesc(f"blocks.{i}.attn.gate.weight", (8, 512), "attention") for i in range(n)]


SCHEMES = [  # (label, extra tensors, spec, weight std, tolerance): FEATURES.md's schemes vs a real export
    ("LQER rank 4 top 3 on SDClip int6", [], QuantSpec(groups=SDCLIP, container="recurc", compressor=Compressor(name="brotli"),
                                                       lqer=LQER(rank=4, top_k=3)), 0.05, 0.005),
    ("ternary groups of 128 base-3, fp8 embedding, lzma torch", [], QuantSpec(
        groups={"embeddings": GroupQuant(scheme="fp8"), "attention": GroupQuant(scheme="ternary", group_size=128, packing="base3"),
                "mlp": GroupQuant(scheme="ternary", group_size=128, packing="base3")},
        control_dtype="fp16", compressor=Compressor(name="lzma")), 0.05, 0.015),
    ("fp8 e4m3 plain, lzma recurc", [], QuantSpec(groups={g: GroupQuant(scheme="fp8") for g in SDCLIP}, container="recurc",
                                                  compressor=Compressor(name="lzma")), 0.05, 0.005),
    ("fp8 e4m3 rows scaled to 448, brotli recurc", [], QuantSpec(groups={g: GroupQuant(scheme="fp8", fp8_scale="row") for g in SDCLIP},
                                                                 container="recurc", compressor=Compressor(name="brotli")), 0.05, 0.005),
    ("gate rows int8 absmax forced by name", _gates(2), QuantSpec(
        groups=SDCLIP, container="recurc", compressor=Compressor(name="brotli"),
        overrides=[Override(match="*.gate.weight", force=True, set=QuantPatch(bits=8, clip=ClipRule(kind="absmax")))]), 0.05, 0.005),
    ("clip search per matrix under the 1/qmax floor, brotli recurc", [], QuantSpec(
        groups={g: GroupQuant(bits=6, clip=ClipRule(kind="search", per="matrix")) for g in SDCLIP}, container="recurc",
        compressor=Compressor(name="brotli")), 0.03, 0.015),
]


@pytest.mark.slow
@pytest.mark.parametrize("label,extra,spec,sigma,tol", SCHEMES, ids=[c[0] for c in SCHEMES])
def test_schemes_agree_with_real_export(label, extra, spec, sigma, tol):
    """Every quantization of FEATURES.md predicted from shapes vs quant.py's real artifact (Gaussian weights)."""
    rng = np.random.default_rng(0)
    ts = sizemodel.baseline_tensors(vocab=512, layers=2) + extra
    state = {t.name: (rng.normal(0, sigma, t.shape) if t.group != "scalars" else rng.normal(1, .3, t.shape)).astype(np.float32)
             for t in ts}
    groups = {t.name: t.group for t in ts}
    real = len(quant.pack(quant.quantize_state(state, groups, spec), spec))
    est = sizemodel.predict(ts, spec, sizemodel.ShapeAssumption(beta=2.0, sigma=tuple((g, sigma) for g in ("embeddings", "attention", "mlp"))))
    assert abs(est.total / real - 1) < tol, (label, real, est.total)


def test_name_overrides_reach_the_estimate():
    """plan_tensor sees each tensor's name in the size model as in the export: a forced gate is
    quantized (int8 rows + scales), not passed through as fp16."""
    ts = sizemodel.baseline_tensors(vocab=512, layers=2) + _gates(2)
    plain = QuantSpec(groups=SDCLIP)
    forced = plain.model_copy(update={"overrides": (Override(match="*.gate.weight", force=True,
                                                             set=QuantPatch(bits=8, clip=ClipRule(kind="absmax"))),)})
    a, b = sizemodel.predict(ts, plain), sizemodel.predict(ts, forced)
    assert b.n_quantized == a.n_quantized + 2 and b.n_passthrough == a.n_passthrough - 2
    assert b.groups["attention"].raw_bytes - a.groups["attention"].raw_bytes == 2 * (8 * 512 + 8 * 2 - 8 * 512 * 2)


def test_sdclip_entropy_matches_formula():
    """FACTS.md: under SDClip the entropy is ~ b - log2(k) + 0.5*log2(pi*e/2) for Gaussian weights."""
    for bits, k in ((6, 12.85), (8, 20.0)):   # coarser steps (int5 k=8) leave the high-resolution regime
        h, _ = sizemodel.value_entropy("int", bits, "std", k, 512, 2.0, None)
        assert abs(h - (bits - np.log2(k) + 0.5 * np.log2(np.pi * np.e / 2))) < 0.05   # high-resolution formula; exact discretization differs by ~0.035 at int6


def test_fast():
    ts = sizemodel.baseline_tensors()
    sizemodel.predict(ts, QuantSpec())
    t0 = time.process_time()  # CPU time: a loaded machine stretches wall time, not work
    for _ in range(200):
        sizemodel.predict(ts, QuantSpec())
    assert (time.process_time() - t0) / 200 < 5e-3


def test_does_not_import_torch():
    code = "import recurc.sizemodel, sys; from recurc.quantspec import QuantSpec; recurc.sizemodel.predict(recurc.sizemodel.baseline_tensors(), QuantSpec()); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entropy_cache_gives_the_same_prediction_and_spares_numpy(tmp_path):
    """A cold cache computes with recurc.entropy (numpy) and writes the cache; a warm one gives the
    identical prediction in a process that never imports numpy."""
    code = ("import sys, json; from recurc import sizemodel; "
            "e = sizemodel.predict(sizemodel.baseline_tensors(), __import__('recurc.quantspec').quantspec.QuantSpec()); "
            "print(json.dumps([e.total, e.low, e.high, 'numpy' in sys.modules]))")
    env = {**__import__("os").environ, "RECURC_CACHE_DIR": str(tmp_path)}
    cold = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout)
    assert cold[3] is True and len(list(tmp_path.glob("entropy-*.json"))) == 1
    warm = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout)
    assert warm[:3] == cold[:3] and warm[3] is False


def test_unreadable_cache_is_only_a_cost(tmp_path):
    env = {**__import__("os").environ, "RECURC_CACHE_DIR": str(tmp_path)}
    code = "from recurc import sizemodel; print(sizemodel.predict(sizemodel.baseline_tensors(), __import__('recurc.quantspec').quantspec.QuantSpec()).total)"
    first = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    for f in tmp_path.glob("entropy-*.json"):
        f.write_text("{not json")
    again = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    assert again == first


@pytest.mark.parametrize("spec", ["baseline.yaml", "loop45x2.yaml"])   # loop45x2 is over budget: suggestions too
def test_warm_estimate_command_imports_neither_numpy_nor_torch(tmp_path, spec):
    path = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "specs" / spec)
    code = (f"import sys, contextlib, io; sys.argv = ['recurc', 'estimate', {path!r}]\n"
            "import recurc.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()): recurc.cli.main()\n"
            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    env = {**__import__("os").environ, "RECURC_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)   # fills the cache
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
