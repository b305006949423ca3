"""GPTQ in torch (recurc/gptq.py): the algorithm against a float64 numpy transcription of it,
chunks, export bytes == `recurc measure` bytes, and the same artifact from 2 gloo ranks as from one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recurc.errors import SpecError
from recurc.gptq import (GPTQ_CHUNK, GPTQJob, gptq_chunks, gptq_codes, gptq_device,
                         gptq_sweep)
from recurc.measure import measure
from recurc.plan import make_plan
from recurc.spec import load_spec
from runtime.export import HESSIANS_NAME, balance, export_model
from runtime.train import build_model

TINY = str(Path(__file__).resolve().parents[1] / "specs" / "tiny.yaml")
GPTQ_INT6 = "{scheme: int, bits: 6, clip: {kind: std, value: 12.85}, gptq: true}"
QUANT = ["model.seq_len=64", "quant.passthrough_max_numel=4096", f"quant.groups.attention={GPTQ_INT6}",
         f"quant.groups.mlp={GPTQ_INT6}", "quant.compressor={name: brotli, level: 5, byte_shuffle: true}"]


def numpy_gptq(w: np.ndarray, scale: np.ndarray, qmax: int, hessian: np.ndarray) -> np.ndarray:
    """The numpy GPTQ recurc shipped before the torch one (column by column, float64): the oracle."""
    W = w.astype(np.float64).copy()
    H = np.array(hessian, dtype=np.float64, copy=True)
    cols = W.shape[1]
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(cols)] += 0.01 * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)
    Linv = np.linalg.solve(L, np.eye(cols))
    U = np.linalg.cholesky(Linv.T @ Linv).T
    s = scale.astype(np.float64)[:, None]
    Q = np.zeros(W.shape, dtype=np.int8)
    for i1 in range(0, cols, 128):
        i2 = min(i1 + 128, cols)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = W1[:, i:i + 1]
            qi = np.clip(np.round(col / s), -qmax, qmax)
            Q[:, i1 + i] = qi[:, 0].astype(np.int8)
            err = (col - qi * s) / U1[i, i]
            W1[:, i:] -= err @ U1[i:i + 1, i:]
            E1[:, i:i + 1] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return Q


def _job(rng: np.random.Generator, rows: int, cols: int, qmax: int = 31, name: str = "w") -> GPTQJob:
    w = (0.05 * rng.standard_normal((rows, cols))).astype(np.float32)
    x = rng.standard_normal((2048, cols)) @ (np.eye(cols) + 0.3 * rng.standard_normal((cols, cols)))
    h = x.T @ x / 2048
    h[:, 3] = h[3, :] = 0.0          # a dead input
    scale = (0.8 * np.abs(w).max(axis=1) / qmax).astype(np.float32)   # some values clamp at ±qmax
    return GPTQJob(name, w, scale, qmax, h)


@pytest.mark.parametrize("rows,cols", [(48, 96), (130, 300)])   # 300: three blocks, the last short
def test_torch_gptq_matches_the_numpy_algorithm(rows, cols):
    job = _job(np.random.default_rng(rows), rows, cols)
    ref = numpy_gptq(job.w, job.scale, job.qmax, job.hessian)
    got = gptq_codes([job])["w"]
    assert got.dtype == np.int8 and got.shape == (rows, cols)
    diff = got.astype(np.int16) - ref
    # float64 both ways: a last-bit difference can move a value sitting on a rounding tie, no more
    assert np.abs(diff).max() <= 1 and (diff != 0).mean() < 1e-3
    assert (got[:, 3] == 0).all() and np.abs(got).max() <= job.qmax


def test_gptq_beats_rounding_on_the_hessian_weighted_error():
    job = _job(np.random.default_rng(7), 64, 128)
    s = job.scale[:, None].astype(np.float64)
    h = np.array(job.hessian)
    live = np.diag(h) > 0

    def err(q: np.ndarray) -> float:
        d = (job.w - q * s)[:, live]
        return float(np.einsum("ri,ij,rj->", d, h[np.ix_(live, live)], d))
    rounded = np.clip(np.round(job.w / s), -job.qmax, job.qmax)
    assert err(gptq_codes([job])["w"]) < 0.8 * err(rounded)


def test_chunks_group_by_shape_and_batching_keeps_the_codes():
    rng = np.random.default_rng(3)
    jobs = [_job(rng, 32, 64, name=f"a{i}") for i in range(GPTQ_CHUNK + 2)] + [_job(rng, 16, 64, name="b")]
    jobs.insert(1, _job(rng, 32, 64, qmax=7, name="int4"))
    chunks = gptq_chunks(jobs)
    assert [len(c) for c in chunks] == [GPTQ_CHUNK, 2, 1, 1]
    assert chunks[1] == [GPTQ_CHUNK + 1, GPTQ_CHUNK + 2] and chunks[2] == [1]
    batched = gptq_sweep([jobs[i] for i in chunks[0]]).numpy()
    for k, i in enumerate(chunks[0][:3]):
        alone = gptq_sweep([jobs[i]]).numpy()[0]
        assert (batched[k] != alone).mean() < 1e-3


def test_balance_spreads_the_largest_first():
    assert balance([1.0, 5.0, 3.0, 3.0], 2) == [0, 0, 1, 1]   # 5+1 and 3+3
    assert balance([2.0, 2.0], 1) == [0, 0]
    assert sorted(balance([1.0] * 8, 8)) == list(range(8))


def test_bad_devices_are_one_error():
    assert gptq_device("cpu") == torch.device("cpu")
    with pytest.raises(SpecError, match="unknown device"):
        gptq_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="no GPU"):
            gptq_device("cuda")


def test_singular_hessian_is_one_error():
    job = _job(np.random.default_rng(1), 8, 16)
    job.hessian = -np.eye(16)
    with pytest.raises(SpecError, match="not positive definite"):
        gptq_codes([job])


# ---------------------------------------------------------------- export
def _trained_like(plan) -> torch.nn.Module:
    """The tiny model with every weight random (its zero-initialised projections would make GPTQ
    trivial)."""
    torch.manual_seed(0)
    model = build_model(plan, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return model


def _calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [(torch.randint(0, 1024, (4, 64), generator=g), torch.randint(0, 1024, (4, 64), generator=g))
            for _ in range(2)]


def test_export_bytes_are_the_bytes_of_measure(tmp_path):
    plan = make_plan(load_spec(TINY, QUANT))
    model = _trained_like(plan)
    rep = export_model(model, plan, tmp_path / "artifact.bin", calibration=_calibration(),
                       device=torch.device("cpu"), hessians_path=tmp_path / HESSIANS_NAME)
    assert rep is not None and rep["gptq_tensors"] == 24 and rep["ranks"] == 1
    exported = (tmp_path / "artifact.bin").read_bytes()
    m = measure(model.state_dict(), plan, hessians=tmp_path / HESSIANS_NAME, output=tmp_path / "m.bin",
                device="cpu")
    assert m.model_bytes == len(exported) and (tmp_path / "m.bin").read_bytes() == exported
    rounded = measure(model.state_dict(), plan, device="cpu")   # without Hessians: other values
    assert rounded.model_bytes != len(exported)


def _export_rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        plan = make_plan(load_spec(TINY, QUANT))
        rep = export_model(_trained_like(plan), plan, Path(out), device=torch.device("cpu"),
                           calibration=_calibration() if rank == 0 else None)
        assert (rep is None) == (rank != 0) and (rep is None or rep["ranks"] == world)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_export_the_bytes_of_one(tmp_path):
    import torch.multiprocessing as mp
    torch.set_num_threads(1)
    plan = make_plan(load_spec(TINY, QUANT))
    export_model(_trained_like(plan), plan, tmp_path / "one.bin", calibration=_calibration(),
                 device=torch.device("cpu"))
    mp.spawn(_export_rank, args=(2, f"file://{tmp_path / 'init'}", str(tmp_path / "two.bin")), nprocs=2, join=True)
    assert (tmp_path / "two.bin").read_bytes() == (tmp_path / "one.bin").read_bytes()
