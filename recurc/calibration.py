"""The size model's calibration set: published fully trained artifacts and our own runs, in one table.

Each entry names a spec in specs/records/ (a comment there names the record's folder), the
parameter count and compressed model bytes its log printed, and its training (steps × tokens per
step). A record added to RECORDS, with its spec, joins the fit of the `trained` profile, the
leave-one-out table and the tests with no other change:

    python benchmarks/calibrate_sizemodel.py --fit-records

What is fitted (recurc/profiles.py says why these and no more):
  records ("record"): the `trained` profile's percentile shape on the percentile-clip records and
                      its GPTQ bits on the GPTQ records, by least squares on relative error;
  our runs ("run"):   a per-role profile from each run's per-tensor statistics (sizemodel.fit_profile).
Leave-one-out refits without the entry and predicts it. Only this module and the benchmark import
it: `recurc estimate` reads the fitted constants from recurc/profiles.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Literal

from . import sizemodel
from .profiles import WeightProfile, trained_profile
from .quantspec import plan_tensor

ROOT = Path(__file__).resolve().parents[1]
SEED_SPREAD = 10_000        # bytes: artifacts of one record differ by 2-10 KB between seeds (CALIBRATION.md)
BUDGET = 16_000_000


@dataclass(frozen=True)
class Record:
    name: str
    spec: str                          # path relative to the repository root
    params: int                        # as the log printed it
    model_bytes: int                   # compressed model bytes, as logged (or exported by us)
    steps: int
    tokens_per_step: int
    source: str                        # record folder, or our results file
    kind: Literal["record", "run"]     # published 10-minute 8×H100 record, or a run of ours
    tensors: str | None = None         # runs: per-tensor statistics (benchmarks/trained_size.py)
    approx: str = ""                   # why the spec's parameter count differs from the log

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step


RECORDS: tuple[Record, ...] = (
    Record("NaiveBaseline", "specs/records/naive_baseline.yaml", 17_059_912, 15_815_847, 13_780, 524_288,
           "2026-03-17_NaiveBaseline (FACTS.md)", "record"),
    Record("MixedQuant_Int6Int8", "specs/records/mixedquant_int6int8.yaml", 21_778_504, 15_296_720, 12_395, 524_288,
           "2026-03-19_MixedQuant_Int6Int8_SlidingWindow", "record"),
    Record("Vocab4096_MLPMult4_WD085", "specs/records/vocab4096_mlpmult4_wd085.yaml", 34_401_371, 15_847_061,
           5_967, 786_432, "2026-04-01_Vocab4096_MLPMult4_WD085", "record"),
    Record("Loop45x2", "specs/records/loop45x2_sp8192.yaml", 35_943_512, 15_969_408, 4_992, 786_432,
           "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2", "record"),
    Record("MultiPhaseGlobalSGD", "specs/records/multiphase_globalsgd.yaml", 35_944_602, 15_912_231, 4_967, 786_432,
           "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT", "record"),
    # model bytes: the log's exact total 15,993,853 less the 70,853 code bytes (it prints "15.92MB");
    # parameters: the stored 67,394,384 (the logged 73,685,840 count an 8192x768 lm_head the record
    # allocates, never uses and drops at export; tests/test_records.py checks both)
    Record("74M_Ternary", "specs/records/ternary74m_unet_fp8.yaml", 67_394_384, 15_923_000, 6_530, 524_288,
           "2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon", "record"),
    Record("run loop45_sp8192", "specs/records/run_loop45_sp8192_1140steps.yaml", 35_943_512, 15_419_630, 1_140, 196_608,
           "benchmarks/results/loop45_sp8192_1140steps_log.jsonl", "run",
           tensors="benchmarks/results/loop45_sp8192_1140steps_tensors.json"),
    Record("run loop35_parallel", "specs/records/run_loop35_parallel_sp8192_665steps.yaml", 35_944_536, 15_578_092,
           665, 196_608, "benchmarks/results/loop35_parallel_sp8192_665steps_log.jsonl", "run",
           tensors="benchmarks/results/loop35_parallel_sp8192_665steps_tensors.json"),
)


def by_name(name: str) -> Record:
    for r in RECORDS:
        if r.name == name:
            return r
    raise KeyError(name)


# ---------------------------------------------------------------- plans and predictions
@lru_cache(maxsize=None)
def plan_of(rec: Record):
    from .plan import make_plan
    from .spec import load_spec
    return make_plan(load_spec(ROOT / rec.spec))


def predict(rec: Record, profile: WeightProfile) -> float:
    """Predicted compressed model bytes of a record's spec under a profile."""
    from .estimate import muon_recipe
    plan = plan_of(rec)
    return sizemodel.predict([(p.name, p.shape, p.group) for p in plan.params], plan.quant,
                             sizemodel.ShapeAssumption(profile=profile, muon=muon_recipe(plan))).total


def _uses(rec: Record) -> tuple[bool, bool, bool, bool]:
    """Which parameters of the `trained` profile a record constrains: (percentile-type clips read
    the tails: percentile, search, absmax; GPTQ; a scale floor under weight decay: percentile or
    search clips on Muon matrices trained with weight decay; plain FP8 codes)."""
    from .estimate import muon_recipe
    plan = plan_of(rec)
    pct = gptq = decay = fp8 = False
    for p in plan.params:
        st = plan_tensor(p.shape, "float32", p.group, plan.quant, p.name)
        if st.kind == "int" and st.gq is not None:
            pct |= st.gq.clip.kind != "std"
            gptq |= bool(st.gq.gptq)
            decay |= (st.gq.clip.kind in ("percentile", "search") and p.group in ("attention", "mlp")
                      and muon_recipe(plan) is not None)
        fp8 |= st.kind == "fp8" and not st.per_row
    return pct, gptq, decay, fp8


# ---------------------------------------------------------------- the trained profile
def _golden(f: Callable[[float], float], lo: float, hi: float, tol: float) -> float:
    """Minimum of a unimodal f on [lo, hi] (golden-section search)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return 0.5 * (a + b)


def fit_trained(records: Iterable[Record], band: float = 0.0) -> WeightProfile:
    """The `trained` profile fitted to `records` (kind "record"): the percentile shape on those with
    percentile-type clips, GPTQ's bits on those with GPTQ, the update correlation time τ on those
    whose clip floor binds under weight decay, the FP8 shape on those with plain FP8; least squares
    on relative error, coordinate descent (they barely interact). A parameter no record constrains
    keeps its uninformed value (β 2, 0 bits, τ unknown: the floor taken as inactive, FP8 β 2):
    leave-one-out must not borrow it from the left-out record."""
    recs = [r for r in records if r.kind == "record"]
    uses = {r.name: _uses(r) for r in recs}
    pct, gbits, tau, fp8 = 2.0, 0.0, None, None

    def loss(which: int, **kw) -> float:
        args = {"pct_beta": pct, "gptq_bits": gbits, "decay_tau": tau, "fp8_beta": fp8} | kw
        prof = trained_profile(args["pct_beta"], args["gptq_bits"], decay_tau=args["decay_tau"], fp8_beta=args["fp8_beta"])
        return sum((predict(r, prof) / r.model_bytes - 1) ** 2 for r in recs if uses[r.name][which])

    for _ in range(2):
        # values rounded (β to 1e-3, τ to 3 digits) so repeated fits reuse the entropy cache
        if any(u[2] for u in uses.values()):
            tau = float(f"{math.exp(_golden(lambda x: loss(2, decay_tau=float(f'{math.exp(x):.3g}')), 0.0, math.log(1e4), 1e-3)):.3g}")
        if any(u[0] for u in uses.values()):
            pct = round(_golden(lambda b: loss(0, pct_beta=round(b, 3)), 1.0, 4.0, 2e-3), 3)
        if any(u[1] for u in uses.values()):
            gbits = round(_golden(lambda x: loss(1, gptq_bits=x), -0.5, 0.5, 1e-4), 4)
        if any(u[3] for u in uses.values()):
            fp8 = round(_golden(lambda b: loss(3, fp8_beta=round(b, 3)), 0.3, 4.0, 2e-3), 3)
    return trained_profile(pct, gbits, band, decay_tau=tau, fp8_beta=fp8)


# ---------------------------------------------------------------- our runs
def fit_run(rec: Record) -> WeightProfile:
    """A run's per-role profile from its per-tensor statistics (what recurc-sp8192-short is)."""
    assert rec.tensors is not None
    return sizemodel.fit_profile(sizemodel.read_tensor_entropies(ROOT / rec.tensors), plan_of(rec).quant,
                                 f"fitted to {rec.name}", source=rec.tensors)


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    actual: int
    predicted: float          # from the spec alone (its `quant.weights: auto` profile)
    profile: str
    loo: float | None         # fitted without this entry
    band: float               # relative half-width of the profile in use
    # the entries left constrain every parameter this one uses: its leave-one-out is a test of the
    # model (else a parameter falls back to its uninformed value, and the row says so)
    tested: bool = True

    @property
    def error(self) -> float:
        return self.predicted / self.actual - 1

    @property
    def loo_error(self) -> float | None:
        return None if self.loo is None else self.loo / self.actual - 1


def spec_profile(rec: Record) -> WeightProfile:
    """The profile the record's own spec resolves to (recurc.estimate's rule)."""
    from .estimate import resolve_profile
    return resolve_profile(plan_of(rec))[0]


def table(records: Iterable[Record] = RECORDS) -> list[Row]:
    recs = list(records)
    rows = []
    for rec in recs:
        prof = spec_profile(rec)
        tested = True
        if rec.kind == "record":
            loo_prof = fit_trained([r for r in recs if r is not rec])
            loo = predict(rec, loo_prof)
            rest = [_uses(r) for r in recs if r is not rec and r.kind == "record"]
            tested = all(any(u[i] for u in rest) for i, used in enumerate(_uses(rec)) if used)
        else:
            others = [r for r in recs if r.kind == "run" and r is not rec and r.tensors]
            loo = predict(rec, fit_run(others[0])) if others else None
        rows.append(Row(rec.name, rec.kind, rec.model_bytes, predict(rec, prof), prof.name, loo, prof.band, tested))
    return rows


def single_record_parameters(records: Iterable[Record] = RECORDS) -> tuple[str, ...]:
    """The `trained` profile's parameters that one record alone constrains (their leave-one-out
    is no test, and the band does not cover a spec that leans on them)."""
    names = ("percentile shape", "GPTQ bits", "weight-decay correlation time", "FP8 shape")
    uses = [_uses(r) for r in records if r.kind == "record"]
    return tuple(n for i, n in enumerate(names) if sum(u[i] for u in uses) == 1)


def band_for(rows: Iterable[Row], kind: str) -> float:
    """A profile's band: its worst leave-one-out error plus the seeds' spread, rounded up to 0.01 %,
    over the rows whose leave-one-out is a test (`Row.tested`)."""
    errs = [abs(r.loo_error) for r in rows if r.kind == kind and r.loo_error is not None and r.tested]
    return math.ceil((max(errs) + SEED_SPREAD / BUDGET) * 1e4) / 1e4 if errs else 0.0


def anchored(variant: Record, sibling: Record, profile: WeightProfile | None = None) -> float:
    """The variant predicted from the sibling's actual bytes and the model's difference."""
    prof = profile or spec_profile(variant)
    return sibling.model_bytes + predict(variant, prof) - predict(sibling, prof)
