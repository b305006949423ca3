"""Export: the artifact on disk is the packed bytes, and reloading it gives nearly the same BPB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recurc.plan import make_plan
from recurc.spec import load_spec
from runtime.export import collect_hessians, gptq_tensors, predicted_bytes, read_artifact, state_arrays
from runtime.log import read_json_log
from runtime.train import build_model, main
from test_train import FAST, TINY, data_args, demo  # noqa: F401  (demo is a fixture)

GPTQ_INT6 = "{scheme: int, bits: 6, clip: {kind: std, value: 12.85}, gptq: true}"


def _export_record(log: Path) -> dict:
    return next(r for r in read_json_log(log) if r["event"] == "export")


def test_export_roundtrip_int8_zlib(demo, tmp_path):
    log = tmp_path / "log.jsonl"
    assert main([TINY, *FAST, "--steps", "8", *data_args(demo), "--out", str(tmp_path), "--log-json", str(log),
                 "--val-every", "0"]) == 0
    rec = _export_record(log)
    art = Path(rec["artifact"])
    assert art.stat().st_size == rec["model_bytes"] == rec["file_bytes"]
    assert rec["total_bytes"] == rec["model_bytes"] + rec["code_bytes"]
    assert abs(rec["post_bpb"] - rec["pre_bpb"]) < 0.02, rec
    # a prediction is reported; after 8 steps it is far off by design (it models trained weights,
    # and zero-initialised projections still compress to almost nothing)
    assert rec["predicted_model_bytes"] > 0 and "prediction_error_pct" in rec
    # the file decodes to every Plan tensor with its shape
    plan = make_plan(load_spec(TINY, FAST))
    weights = read_artifact(art, plan)
    assert {p.name: p.shape for p in plan.params} == {k: tuple(v.shape) for k, v in weights.items()}


def test_export_with_gptq_int6_brotli(demo, tmp_path):
    log = tmp_path / "log.jsonl"
    quant = ["quant.passthrough_max_numel=4096", f"quant.groups.attention={GPTQ_INT6}", f"quant.groups.mlp={GPTQ_INT6}",
             "quant.compressor={name: brotli, level: 5, byte_shuffle: true}"]
    assert main([TINY, *FAST, *quant, "--steps", "6", *data_args(demo), "--out", str(tmp_path),
                 "--log-json", str(log), "--val-every", "0"]) == 0
    rec = _export_record(log)
    assert rec["gptq_tensors"] == 4 * 6 and not rec["notes"]
    assert Path(rec["artifact"]).stat().st_size == rec["model_bytes"]
    assert abs(rec["post_bpb"] - rec["pre_bpb"]) < 0.05, rec


def test_hessians_accumulate_over_shared_passes():
    plan = make_plan(load_spec(TINY, [*FAST, f"quant.groups.attention={GPTQ_INT6}"]))
    model = build_model(plan, torch.device("cpu"))
    names = gptq_tensors(plan)
    x = torch.randint(0, 1024, (2, 64))
    hess, missing = collect_hessians(model, names, [(x, x)], "main", torch.device("cpu"))
    assert not missing and set(hess) == set(names)
    h = hess["blocks.1.attn.c_q.weight"]
    assert h.shape == (128, 128) and np.allclose(h, h.T) and np.all(np.linalg.eigvalsh(h) > -1e-4)
    assert set(state_arrays(model, plan)) == {p.name for p in plan.params}
    assert predicted_bytes(plan)[0] is not None


def test_tied_embedding_gets_a_hessian_from_the_head_input():
    gptq_int8 = "{scheme: int, bits: 8, clip: {kind: std, value: 20}, gptq: true}"
    plan = make_plan(load_spec(TINY, [*FAST, f"quant.groups.embeddings={gptq_int8}"]))
    model = build_model(plan, torch.device("cpu"))
    x = torch.randint(0, 1024, (2, 64))
    hess, missing = collect_hessians(model, ["tok_emb.weight"], [(x, x)], "main", torch.device("cpu"))
    assert not missing and hess["tok_emb.weight"].shape == (128, 128)
