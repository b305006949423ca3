"""Seconds of the export of one spec on one device: Hessians, scales + GPTQ, serialize + compress,
and `recurc measure` on the same device and Hessians (its bytes must be the export's).

    python benchmarks/export_time.py SPEC OUT [key.path=value ...] [--device cuda] [--batches 4]

The weights are the spec's initialisation with every large matrix redrawn N(0, 1/cols) (trained-like
scale; GPTQ's cost does not depend on the values, the compressor's a little); calibration batches
are random tokens of the training micro-batch's size (65,536 tokens each, as the export uses).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from recurc import quant
from recurc.measure import measure
from recurc.plan import make_plan
from recurc.spec import load_spec
from runtime.export import HESSIANS_NAME, export_model, plan_groups, state_arrays
from runtime.train import build_model


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("out", type=Path)
    ap.add_argument("overrides", nargs="*", help="key.path=value")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--micro-tokens", type=int, default=65_536)
    a, rest = ap.parse_known_args()
    a.overrides += rest
    device = torch.device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(load_spec(a.spec, a.overrides))
    torch.manual_seed(0)
    model = build_model(plan, device)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2 and p.numel() > plan.quant.passthrough_max_numel:
                p.normal_(0.0, p.shape[1] ** -0.5)
    seq = plan.model.seq_len
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randint(0, plan.model.vocab_size, (a.micro_tokens // seq, seq), generator=g),) * 2
             for _ in range(a.batches)]
    t0 = _sync(device)
    rep = export_model(model, plan, a.out / "artifact.bin", calibration=calib, device=device,
                       hessians_path=a.out / HESSIANS_NAME)
    t_export = _sync(device) - t0
    assert rep is not None
    # the pieces again, separately: GPTQ warm (the first call above paid CUDA/cuSOLVER start-up)
    from runtime.export import collect_hessians, gptq_tensors
    hs, _ = collect_hessians(model, gptq_tensors(plan), calib, plan.eval_path, device)
    arrays = state_arrays(model, plan)
    t1 = _sync(device)
    qs = quant.quantize_state(arrays, plan_groups(plan), plan.quant, hessians=hs, device=device)
    t_quant = _sync(device) - t1
    t4 = time.perf_counter()
    hfile = a.out / HESSIANS_NAME if rep["gptq_tensors"] else None
    m = measure(model.state_dict(), plan, hessians=hfile, output=a.out / "measured.bin",
                device=a.device)
    t_measure = time.perf_counter() - t4
    exported = (a.out / "artifact.bin").read_bytes()
    res = {"spec": plan.name, "params": plan.unique_params, "device": torch.cuda.get_device_name(device)
           if device.type == "cuda" else "cpu", "gptq_tensors": rep["gptq_tensors"],
           "export_s": round(t_export, 2), "export_report": {k: rep.get(k) for k in
                                                             ("hessian_s", "quantize_s", "pack_s", "fit_s")},
           "quantize_warm_s": round(t_quant, 2), "compressor": f"{plan.quant.compressor.name}-"
           f"{plan.quant.compressor.effective_level}", "raw_bytes": sum(quant.raw_payload_bytes(qs).values()),
           "model_bytes": rep["model_bytes"],
           "measure_s": round(t_measure, 2), "measure_bytes": m.model_bytes,
           "measure_equals_export": (a.out / "measured.bin").read_bytes() == exported}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
