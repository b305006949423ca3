"""Trained-weight profiles: what the size model assumes about weights it has not seen.

The compressed size of quantized weights depends on the shape of their distribution (for SDClip,
bits/value = b − log2(k) + h(shape), where h is largest for the Gaussian), and trained weights are
not all alike. Measured on our own trained checkpoints (benchmarks/results/*_tensors.json), the
shape depends on what a matrix does:

    role        matrices                          excess kurtosis after ~1k Muon steps
    embedding   token embedding / untied head     ~0 (Gaussian)
    input       q, k, v, MLP in, anything else    1.3 – 3.3, heavier with depth
    attn_out    attention output projection       ~0.2 (near Gaussian)
    mlp_out     MLP output projection             7 – 11 (few large weights, many small)

A profile gives, per role, the generalized-Gaussian shape β whose quantized entropy equals the
measured one (β = 2 is Gaussian, smaller is heavier-tailed) and the bits/value GPTQ adds over plain
rounding. `recurc measure CHECKPOINT --spec SPEC --save-profile FILE` fits one from a checkpoint;
a spec names the profile its estimate uses with `quant.weights` (a built-in name or such a file).

No numpy or torch here: the spec layer imports this module.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

ROLES = ("embedding", "input", "attn_out", "mlp_out")


def weight_role(name: str, group: str) -> str:
    """The role of a stored tensor, from its group and the Plan's parameter name."""
    if group == "embeddings":
        return "embedding"
    if name.endswith("mlp.proj.weight"):
        return "mlp_out"
    if name.endswith("attn.proj.weight"):
        return "attn_out"
    return "input"


# Relative half-width of the interval of a profile whose errors were not measured (a JSON profile of
# your own: fitted to one checkpoint, it predicted a second of the same kind within 1 %, tests/test_profiles.py).
DEFAULT_BAND = 0.01


@dataclass(frozen=True)
class WeightProfile:
    name: str
    beta: tuple[tuple[str, float], ...]            # role → generalized-Gaussian shape (std rule, ternary)
    gptq_bits: tuple[tuple[str, float], ...]       # role → bits/value that GPTQ adds
    source: str = ""                               # what it was fitted to (estimate prints it)
    # role → the shape percentile clips see; a percentile clip is a row's order statistic, so it
    # reads the tails where the std rule reads the bulk, and trained weights need not have one β
    # for both. Empty: `beta`.
    beta_pct: tuple[tuple[str, float], ...] = ()
    band: float = DEFAULT_BAND                     # relative half-width of the interval (measured)
    # correlation time (steps) of the Muon updates that sets the std of weight-decayed matrices
    # (sizemodel.decay_sigma), which the scale floor of percentile and search clips reads; None: unknown
    decay_tau: float | None = None
    # the shape plain FP8 codes see (e4m3 codes are log-spaced, so they read the spread of log|w|,
    # tails included); None: `beta`
    fp8_beta: float | None = None

    @classmethod
    def make(cls, name: str, beta: dict[str, float], gptq_bits: dict[str, float], source: str = "",
             beta_pct: dict[str, float] | None = None, band: float = DEFAULT_BAND,
             decay_tau: float | None = None, fp8_beta: float | None = None) -> "WeightProfile":
        missing = [r for r in ROLES if r not in beta or r not in gptq_bits or (beta_pct is not None and r not in beta_pct)]
        if missing:
            raise ValueError(f"profile {name!r} lacks role(s) {', '.join(missing)} (roles: {', '.join(ROLES)})")
        for r in ROLES:
            for b in (beta[r], *(() if beta_pct is None else (beta_pct[r],))):
                # below 0.3 the entropy model's integration grid cannot resolve the peak at zero
                if not 0.3 <= float(b) <= 8.0:
                    raise ValueError(f"profile {name!r}: beta of {r} must lie in 0.3..8, got {b}")
        if not 0.0 <= float(band) < 0.5:
            raise ValueError(f"profile {name!r}: band must lie in [0, 0.5), got {band}")
        if decay_tau is not None and not 0.0 < float(decay_tau) <= 1e6:
            raise ValueError(f"profile {name!r}: decay_tau must lie in (0, 1e6] steps, got {decay_tau}")
        if fp8_beta is not None and not 0.3 <= float(fp8_beta) <= 8.0:
            raise ValueError(f"profile {name!r}: fp8_beta must lie in 0.3..8, got {fp8_beta}")
        return cls(name, tuple((r, float(beta[r])) for r in ROLES), tuple((r, float(gptq_bits[r])) for r in ROLES),
                   source, () if beta_pct is None else tuple((r, float(beta_pct[r])) for r in ROLES), float(band),
                   None if decay_tau is None else float(decay_tau), None if fp8_beta is None else float(fp8_beta))

    @classmethod
    def uniform(cls, beta: float) -> "WeightProfile":
        """One shape for every role and no GPTQ bits (synthetic checks)."""
        return cls.make(f"beta={beta:g}", {r: beta for r in ROLES}, {r: 0.0 for r in ROLES})

    def beta_of(self, role: str, rule: str = "std") -> float:
        """The shape of a role's weights as a rule ("std", "percentile" or "fp8") sees them."""
        if rule == "fp8" and self.fp8_beta is not None:
            return self.fp8_beta
        return dict(self.beta_pct or self.beta)[role] if rule == "percentile" else dict(self.beta)[role]

    def gptq_bits_of(self, role: str) -> float:
        return dict(self.gptq_bits)[role]

    def to_json(self) -> str:
        d: dict = {"name": self.name, "source": self.source, "beta": dict(self.beta), "gptq_bits": dict(self.gptq_bits)}
        if self.beta_pct:
            d["beta_pct"] = dict(self.beta_pct)
        if self.band != DEFAULT_BAND:
            d["band"] = self.band
        if self.decay_tau is not None:
            d["decay_tau"] = self.decay_tau
        if self.fp8_beta is not None:
            d["fp8_beta"] = self.fp8_beta
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "WeightProfile":
        d = json.loads(text, parse_constant=_no_constant)   # no NaN/Infinity
        if not isinstance(d, dict) or not {"name", "beta", "gptq_bits"} <= set(d):
            raise ValueError("a weight profile is a JSON object with name, beta and gptq_bits")
        _check_profile_data(d)
        return cls.make(str(d["name"]), dict(d["beta"]), dict(d["gptq_bits"]), str(d.get("source", "")),
                        dict(d["beta_pct"]) if "beta_pct" in d else None, float(d.get("band", DEFAULT_BAND)),
                        None if d.get("decay_tau") is None else float(d["decay_tau"]),
                        None if d.get("fp8_beta") is None else float(d["fp8_beta"]))


# GPTQ's extra bits/value over rounding the same weights, measured on the 1,140-step loop45_sp8192
# checkpoint (its own GPTQ export vs rounding; the 665-step loop35_parallel run gave .003/.026/.009/.040).
MEASURED_GPTQ_BITS = {"embedding": 0.004, "input": 0.0219, "attn_out": 0.0085, "mlp_out": 0.064}

# Shape of the challenge's trained baseline, one β for every role: fitted so that the baseline's
# shapes and default quantization predict its published 15,815,847 bytes (FACTS.md; 13,780 steps
# on 8×H100). benchmarks/calibrate_sizemodel.py --fit-baseline re-fits it.
TRAINED_BETA = 1.9068

# The fully trained profile, fitted to the published 10-minute 8×H100 records (recurc/calibration.py
# lists them; `python benchmarks/calibrate_sizemodel.py --fit-records` re-fits and prints these):
# - under the std rule (SDClip) the weights are taken as Gaussian: of the shapes tried, only
#   near-Gaussian ones reproduce the measured byte difference between two SDClip records that
#   differ in clips and bits (docs/size-model.md), so the shape is fixed and not fitted;
# - GPTQ's bits/value over rounded Gaussian values are fitted on the GPTQ records (they come out
#   at ~0: fully trained SDClip+GPTQ artifacts take what rounded Gaussian values would);
# - the percentile clips' shape (their row maxima) is fitted on the percentile-clip records;
# - the band is the worst leave-one-out error over the records plus the 10 KB seeds differ by.
TRAINED_PCT_BETA = 1.917
# - the update correlation time that sets the std of weight-decayed Muon matrices (sizemodel.
#   decay_sigma), which a clip's scale floor 1/qmax reads, fitted on the records whose floor binds
#   (percentile or search clips with weight decay: Vocab4096_MLPMult4_WD085 alone so far);
TRAINED_DECAY_TAU: float | None = 21.4
# - the shape plain FP8 codes read, fitted on the FP8 records (74M_Ternary alone so far);
TRAINED_FP8_BETA: float | None = 1.127
TRAINED_GPTQ_BITS = -0.0046
TRAINED_BAND = 0.0018
# Relative half-widths of the other built-in profiles, from their errors on the records and runs
# (calibrate_sizemodel.py --fit-records prints them): the short profile's is its cross-prediction
# error between our two short runs (fitted on one, predicting the other: +1.19 % / -1.03 %).
SHORT_BAND = 0.0125
BASELINE_BAND = 0.0108
GAUSSIAN_BAND = 0.0112
# An anchored prediction's band: the worst error of one record predicted from another of its
# family (same container and compressor) plus both seeds' spread (calibrate_sizemodel.py --fit-records).
ANCHOR_BAND = 0.0023
# Tokens seen from which a spec's weights count as fully trained (`quant.weights: auto`): the
# records saw 3.4-7.2 G tokens, our short runs 0.13-0.22 G; nothing was measured in between, and
# this splits the two on a log scale.
TRAINED_TOKENS = 1.0e9
AUTO = "auto"


def trained_profile(pct_beta: float, gptq_bits: float, band: float = DEFAULT_BAND, source: str = "",
                    decay_tau: float | None = None, fp8_beta: float | None = None) -> WeightProfile:
    """The fully trained family: Gaussian under SDClip, one shape for percentile clips, one GPTQ
    figure for every role, one update correlation time for weight-decayed matrices (what a handful
    of whole-artifact byte counts can pin down)."""
    return WeightProfile.make("trained", {r: 2.0 for r in ROLES}, {r: gptq_bits for r in ROLES},
                              source or "fitted to the published 10-minute 8×H100 records (specs/records)",
                              {r: pct_beta for r in ROLES}, band, decay_tau, fp8_beta)


PROFILES: dict[str, WeightProfile] = {p.name: p for p in (
    trained_profile(TRAINED_PCT_BETA, TRAINED_GPTQ_BITS, TRAINED_BAND,
                    "fitted to the published 10-minute 8×H100 records in specs/records "
                    "(CALIBRATION.md; recurc/calibration.py)", TRAINED_DECAY_TAU, TRAINED_FP8_BETA),
    WeightProfile.make(   # calibrate_sizemodel.py --fit-profile benchmarks/results/loop45_sp8192_1140steps_tensors.json
        "recurc-sp8192-short",
        {"embedding": 2.0, "input": 1.2, "attn_out": 2.0, "mlp_out": 0.591},
        MEASURED_GPTQ_BITS,
        "loop45_sp8192 trained by recurc on 2×H100 for 1,140 steps (224 M tokens of Python source), "
        "SDClip int6 + GPTQ; per-role shapes from its tensors", band=SHORT_BAND),
    WeightProfile.make(
        "challenge-baseline", {r: TRAINED_BETA for r in ROLES}, MEASURED_GPTQ_BITS,
        "one shape fitted to the naive baseline's published compressed bytes (FACTS.md)", band=BASELINE_BAND),
    WeightProfile.make(
        "gaussian", {r: 2.0 for r in ROLES}, MEASURED_GPTQ_BITS,
        "Gaussian weights: the most bits any weights of the same variance take under SDClip", band=GAUSSIAN_BAND),
)}
DEFAULT_PROFILE = "trained"
SHORT_PROFILE = "recurc-sp8192-short"


def profile_for_tokens(tokens_seen: float) -> WeightProfile:
    """`quant.weights: auto`: the profile of a training budget."""
    return PROFILES[DEFAULT_PROFILE if tokens_seen >= TRAINED_TOKENS else SHORT_PROFILE]


def load_profile(ref: str) -> WeightProfile:
    """A built-in profile by name, or a JSON profile file (spec.py makes a spec's relative path
    absolute; an override's is relative to the working directory)."""
    if ref == AUTO:   # without a training budget to read: what a competitor ships
        return PROFILES[DEFAULT_PROFILE]
    if ref in PROFILES:
        return PROFILES[ref]
    if not ref.endswith(".json"):
        raise ValueError(f"unknown weight profile {ref!r}: use auto, a built-in one ({', '.join(PROFILES)}), "
                         "or give a .json file written by `recurc measure --save-profile`")
    from .errors import SpecError
    from .safeio import read_text
    path = Path(ref)
    try:    # a regular file of bounded size only: never a FIFO or /dev/zero
        text = read_text(path, MAX_PROFILE_BYTES, "weight profile")
    except SpecError as exc:
        raise ValueError(exc.message) from None
    try:
        return WeightProfile.from_json(text)
    except (ValueError, TypeError, RecursionError) as exc:   # RecursionError: JSON nested 100k deep
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ValueError(f"{path}: not a weight profile: {why}") from None


MAX_PROFILE_BYTES = 1_000_000
MAX_PROFILE_NAME = 256
MAX_GPTQ_BITS = 8.0      # |GPTQ bits/value| a profile may hold (measured ones are below 0.1)


def _check_profile_data(d: dict) -> None:
    """A profile file's values are finite numbers (never text, a truth value or 1e999, which JSON
    reads as infinity) for exactly the known roles, and its name is a short text."""
    if not isinstance(d["name"], str) or len(d["name"]) > MAX_PROFILE_NAME:
        raise ValueError(f"a profile's name is a text of at most {MAX_PROFILE_NAME} characters")
    for key in ("beta", "gptq_bits", "beta_pct"):
        if key not in d:
            continue
        table = d[key]
        if not isinstance(table, dict):
            raise ValueError(f"{key} is an object of role → number")
        unknown = sorted(set(table) - set(ROLES))
        if unknown:
            raise ValueError(f"{key}: unknown role {unknown[0][:40]!r} (roles: {', '.join(ROLES)})")
        for role, v in table.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{key}.{role} must be a finite number, got {str(v)[:40]!r}")
            if key == "gptq_bits" and abs(v) > MAX_GPTQ_BITS:
                raise ValueError(f"gptq_bits.{role} must lie in -{MAX_GPTQ_BITS:g}..{MAX_GPTQ_BITS:g}, got {v:g}")
    band = d.get("band", DEFAULT_BAND)
    if isinstance(band, bool) or not isinstance(band, (int, float)):
        raise ValueError(f"band must be a number, got {str(band)[:40]!r}")


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a profile may hold")


def split_anchor(text: str) -> tuple[str, int]:
    """`SIBLING=BYTES` (a spec's `quant.anchor`, `recurc estimate --anchor`) → (path, bytes). BYTES:
    the sibling's measured compressed model bytes (a log's "Serialized model" line, `recurc
    measure`), digits with optional `_` or `,`."""
    path, sep, num = text.rpartition("=")
    digits = num.replace("_", "").replace(",", "").strip()
    # at most 15 digits: a byte count, never one that overflows the float arithmetic downstream
    if not sep or not path.strip() or not digits.isdigit() or len(digits) > 15 or int(digits) <= 0:
        raise ValueError(f"anchor {text!r} is not SIBLING=BYTES (a spec path and its measured model bytes)")
    return path.strip(), int(digits)
