"""What a trained checkpoint says about the size model: run on the machine that trained it.

    python benchmarks/trained_size.py RUN_DIR SPEC --data 'DIR/fineweb_train_*.bin' --out OUT
        [--keep 'tok_emb.weight,blocks.0.,blocks.5.'] [overrides...]

RUN_DIR holds the run's checkpoint.pt (runtime.train writes it). Writes to OUT:
  measure.json      (--measure) recurc.measure with the export's GPTQ Hessians and without them (plain
                    rounding): measured vs predicted bytes per group
  tensors.json      per quantized tensor: std, excess kurtosis, the generalized-Gaussian beta with
                    that kurtosis, spread of the row stds, entropy of its quantized values with and
                    without GPTQ, and the size model's entropy for the same rule
  weights_*.pt      fp16 copies of the tensors named by --keep (prefixes) and their Hessians (fp16),
                    in files of at most 15 MB, for calibrating the size model elsewhere
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recurc import quant, sizemodel  # noqa: E402
from recurc.build import build  # noqa: E402
from recurc.measure import entropy_bits, measure  # noqa: E402
from recurc.plan import make_plan  # noqa: E402
from recurc.spec import load_spec  # noqa: E402
from runtime.checkpoint import load_checkpoint  # noqa: E402
from runtime.data import DistributedTokenLoader  # noqa: E402
from runtime.export import ARTIFACT_NAME, CALIBRATION_BATCHES, collect_hessians, gptq_tensors  # noqa: E402

FILE_LIMIT = 15_000_000


def beta_of_kurtosis(k: float) -> float:
    """The generalized-Gaussian shape with this (non-excess) kurtosis, by bisection on
    Γ(5/β)Γ(1/β)/Γ(3/β)² (decreasing in β: 6 at β=1, 3 at β=2, 1.8 at β=∞)."""
    def kurt(b: float) -> float:
        return math.exp(math.lgamma(5 / b) + math.lgamma(1 / b) - 2 * math.lgamma(3 / b))
    lo, hi = 0.3, 20.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if kurt(mid) < k else (mid, hi)
    return 0.5 * (lo + hi)


def tensor_stats(name: str, w: np.ndarray, rtn: quant.QTensor, gptq: quant.QTensor | None,
                 spec_q) -> dict:
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    z = rows / np.maximum(rows.std(axis=1, keepdims=True), 1e-30)
    kurt = float(np.mean(z ** 4))
    tp = quant.plan_tensor(w.shape, "float32", rtn.group, spec_q)
    out = {"name": name, "group": rtn.group, "shape": list(w.shape), "std": float(rows.std()),
           "row_std_cv": float(rows.std(axis=1).std() / max(rows.std(axis=1).mean(), 1e-30)),
           "kurtosis": kurt, "beta_from_kurtosis": beta_of_kurtosis(kurt),
           "max_abs_z": float(np.abs(z).max()), "entropy_rtn": entropy_bits(rtn.q),
           "zero_rows": int((rows.std(axis=1) == 0).sum())}
    if gptq is not None and tp.gq is not None and tp.gq.gptq:
        out["entropy_gptq"] = entropy_bits(gptq.q)
    if tp.kind == "int" and tp.gq is not None:
        n = w.shape[1] if tp.per_row else w.size
        for label, b in (("model", sizemodel.TRAINED_BETA), ("kurtosis", out["beta_from_kurtosis"])):
            out[f"entropy_predicted_{label}_beta"] = sizemodel.value_entropy(
                tp.kind, tp.bits, tp.gq.clip.kind, float(tp.gq.clip.value), int(n), round(b, 3), None)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("spec")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--data", required=True, help="training shards glob (calibration batches)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep", default="", help="comma-separated name prefixes of tensors to save (fp16)")
    ap.add_argument("--micro-tokens", type=int, default=65_536)
    ap.add_argument("--measure", action="store_true", help="also run recurc.measure with and without GPTQ")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(load_spec(a.spec, a.overrides))
    ckpt = load_checkpoint(Path(a.run_dir) / "checkpoint.pt")
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ckpt["model"].items()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build(plan).to(device)
    model.load_state_dict(state)

    want = gptq_tensors(plan)
    hessians: dict[str, np.ndarray] = {}
    if want:
        loader = DistributedTokenLoader(a.data, 0, 1, seed=plan.train.seed)
        seq = plan.model.seq_len
        batches = [loader.next_batch(a.micro_tokens, seq) for _ in range(CALIBRATION_BATCHES)]
        hessians, missing = collect_hessians(model, want, batches, plan.eval_path, device)
        for n in missing:
            hessians[n] = np.eye(state[n].shape[1])

    arrays = {p.name: state[p.name].detach().float().cpu().numpy() for p in plan.params}
    groups = {p.name: p.group for p in plan.params}
    q = plan.quant
    rtn = quant.quantize_state(arrays, groups, q.model_copy(update={"groups": {
        g: gq.model_copy(update={"gptq": False}) for g, gq in q.groups.items()}}))
    # GPTQ's values: the run's own artifact when there is one (its GPTQ ran on the same weights
    # with the same calibration batches), else GPTQ again here
    artifact = Path(a.run_dir) / ARTIFACT_NAME
    if not want:
        gq_state = None
    elif artifact.is_file():
        gq_state = quant.unpack(artifact.read_bytes(), q, groups)
    else:
        gq_state = quant.quantize_state(arrays, groups, q, hessians=hessians)
    if a.measure:   # brotli-11 runs at ~1 MB/s: this costs minutes on a 36 M model
        result = {"gptq": measure(state, plan, hessians=hessians).to_dict() if want else None,
                  "rtn": measure(state, plan).to_dict()}
        (out / "measure.json").write_text(json.dumps(result, indent=1))
        for k, m in result.items():
            if m:
                print(f"{k}: measured {m['model_bytes']:,} predicted {m['predicted_model_bytes']:,} "
                      f"({m['error_pct']:+.2f} %)  by group measured {m['measured_by_group']} "
                      f"predicted {m['predicted_by_group']}", flush=True)
    stats = [tensor_stats(n, arrays[n], t, gq_state.tensors[n] if gq_state else None, q)
             for n, t in rtn.tensors.items() if t.kind != "passthrough"]
    (out / "tensors.json").write_text(json.dumps({"spec": plan.name, "step": ckpt.get("step"),
                                                  "tensors": stats}, indent=1))
    for s in stats:
        print(f"{s['name']:40s} {s['group']:10s} std {s['std']:.4f} kurt {s['kurtosis']:.2f} "
              f"beta {s['beta_from_kurtosis']:.2f} H_rtn {s['entropy_rtn']:.3f} "
              f"H_gptq {s.get('entropy_gptq', float('nan')):.3f} "
              f"H_pred {s.get('entropy_predicted_model_beta', float('nan')):.3f}", flush=True)

    prefixes = [p for p in a.keep.split(",") if p]
    kept = [n for n in arrays if any(n.startswith(p) for p in prefixes)]
    part, size, index = {}, 0, 0
    for n in kept + [None]:
        extra = 0 if n is None else arrays[n].size * 2 + (hessians[n].size * 2 if n in hessians else 0)
        if part and (n is None or size + extra > FILE_LIMIT):
            torch.save(part, out / f"weights_{index}.pt")
            index, part, size = index + 1, {}, 0
        if n is None:
            break
        part[n] = torch.from_numpy(arrays[n]).half()
        if n in hessians:
            part[n + ":hessian"] = torch.from_numpy(hessians[n]).half()   # 2048² fp32 would be 16.8 MB
        size += extra
    print(f"kept {len(kept)} tensors in {index} files", flush=True)


if __name__ == "__main__":
    main()
