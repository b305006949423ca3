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


@dataclass(frozen=True)
class WeightProfile:
    name: str
    beta: tuple[tuple[str, float], ...]            # role → generalized-Gaussian shape
    gptq_bits: tuple[tuple[str, float], ...]       # role → bits/value that GPTQ adds
    source: str = ""

    @classmethod
    def make(cls, name: str, beta: dict[str, float], gptq_bits: dict[str, float], source: str = "") -> "WeightProfile":
        missing = [r for r in ROLES if r not in beta or r not in gptq_bits]
        if missing:
            raise ValueError(f"profile {name!r} lacks role(s) {', '.join(missing)} (roles: {', '.join(ROLES)})")
        for r in ROLES:
            # below 0.3 the entropy model's integration grid cannot resolve the peak at zero
            if not 0.3 <= float(beta[r]) <= 8.0:
                raise ValueError(f"profile {name!r}: beta of {r} must lie in 0.3..8, got {beta[r]}")
        return cls(name, tuple((r, float(beta[r])) for r in ROLES),
                   tuple((r, float(gptq_bits[r])) for r in ROLES), source)

    @classmethod
    def uniform(cls, beta: float) -> "WeightProfile":
        """One shape for every role and no GPTQ bits (synthetic checks)."""
        return cls.make(f"beta={beta:g}", {r: beta for r in ROLES}, {r: 0.0 for r in ROLES})

    def beta_of(self, role: str) -> float:
        return dict(self.beta)[role]

    def gptq_bits_of(self, role: str) -> float:
        return dict(self.gptq_bits)[role]

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "source": self.source, "beta": dict(self.beta),
                           "gptq_bits": dict(self.gptq_bits)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "WeightProfile":
        d = json.loads(text)
        if not isinstance(d, dict) or not {"name", "beta", "gptq_bits"} <= set(d):
            raise ValueError("a weight profile is a JSON object with name, beta and gptq_bits")
        return cls.make(str(d["name"]), dict(d["beta"]), dict(d["gptq_bits"]), str(d.get("source", "")))


# GPTQ's extra bits/value over rounding the same weights, measured on the 1,140-step loop45_sp8192
# checkpoint (its own GPTQ export vs rounding; the 665-step loop35_parallel run gave .003/.026/.009/.040).
MEASURED_GPTQ_BITS = {"embedding": 0.004, "input": 0.0219, "attn_out": 0.0085, "mlp_out": 0.064}

# Shape of the challenge's trained baseline, one β for every role: fitted so that the baseline's
# shapes and default quantization predict its published 15,815,847 bytes (FACTS.md; 13,780 steps
# on 8×H100). benchmarks/calibrate_sizemodel.py --fit-baseline re-fits it.
TRAINED_BETA = 1.9068

PROFILES: dict[str, WeightProfile] = {p.name: p for p in (
    WeightProfile.make(
        "challenge-baseline", {r: TRAINED_BETA for r in ROLES}, MEASURED_GPTQ_BITS,
        "one shape fitted to the naive baseline's published compressed bytes (FACTS.md)"),
    WeightProfile.make(
        "gaussian", {r: 2.0 for r in ROLES}, MEASURED_GPTQ_BITS,
        "Gaussian weights: the most bits any weights of the same variance take under SDClip"),
    WeightProfile.make(   # calibrate_sizemodel.py --fit-profile benchmarks/results/loop45_sp8192_1140steps_tensors.json
        "recurc-sp8192-short",
        {"embedding": 2.0, "input": 1.2, "attn_out": 2.0, "mlp_out": 0.591},
        MEASURED_GPTQ_BITS,
        "loop45_sp8192 trained by recurc on 2×H100 for 1,140 steps (224 M tokens of Python source), "
        "SDClip int6 + GPTQ; per-role shapes from its tensors"),
)}
DEFAULT_PROFILE = "challenge-baseline"


def load_profile(ref: str) -> WeightProfile:
    """A built-in profile by name, or a JSON profile file (spec.py makes a spec's relative path
    absolute; an override's is relative to the working directory)."""
    if ref in PROFILES:
        return PROFILES[ref]
    if not ref.endswith(".json"):
        raise ValueError(f"unknown weight profile {ref!r}: built-in ones are {', '.join(PROFILES)}, "
                         "or give a .json file written by `recurc measure --save-profile`")
    path = Path(ref)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read weight profile {path}: {exc.strerror or exc}") from None
    try:
        return WeightProfile.from_json(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a weight profile: {exc}") from None
