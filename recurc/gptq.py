"""GPTQ (Frantar et al. 2022) in torch: the one implementation, used by the export (on the
training GPU) and by `recurc measure` (on whatever device it is given), through
`quant.quantize_state`.

The algorithm, for W (rows, cols) with fixed per-row scales s and H = E[xᵀx] (cols, cols):
dead inputs (H_jj = 0) get H_jj = 1 and W[:, j] = 0; 1 % of mean(diag H) is added to the
diagonal; U is the upper Cholesky factor of H⁻¹. Columns are quantized left to right, each
column's rounding error divided by U_jj is spread over the columns not yet quantized (U's row j),
lazily per block of GPTQ_BLOCK columns: inside a block at once, past it once per block. No
act-order. Values are clamped to ±qmax, so clipping is part of the error the sweep corrects.

Arithmetic is float64 on any device: it is not the cost (the column sweep is a few thousand small
launches, whatever the dtype), and it keeps the result free of TF32 settings.

Matrices of one shape and qmax are swept together as one batch, in chunks of at most GPTQ_CHUNK.
A chunk is the unit of work: its members, and so its arithmetic, depend only on the list of jobs,
never on the device count, so a chunk gives the same codes on whichever rank of a run computes it
(runtime/export.py spreads chunks over ranks), and the same as `recurc measure` on that device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from recurc.errors import SpecError

GPTQ_DAMP = 0.01          # fraction of mean(diag H) added to the diagonal
GPTQ_BLOCK = 128          # columns per lazy-update block
GPTQ_CHUNK = 16           # most matrices in one batched sweep (bounds its memory: 16 x 2048 x 2048 fp64 = 512 MiB)


@dataclass
class GPTQJob:
    """One matrix to GPTQ: float32 weights (rows, cols), the float32 row scales values are rounded
    with, the largest level, and H (cols, cols; numpy or torch, any float dtype)."""
    name: str
    w: np.ndarray
    scale: np.ndarray
    qmax: int
    hessian: Any


def gptq_chunks(jobs: Sequence[GPTQJob]) -> list[list[int]]:
    """Job indices grouped by (shape, qmax), groups in order of first appearance, each split into
    runs of at most GPTQ_CHUNK in job order."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, j in enumerate(jobs):
        groups.setdefault((*j.w.shape, j.qmax), []).append(i)
    return [idx[k:k + GPTQ_CHUNK] for idx in groups.values() for k in range(0, len(idx), GPTQ_CHUNK)]


def gptq_chunk_cost(jobs: Sequence[GPTQJob], chunk: Sequence[int]) -> float:
    """Relative cost of a chunk, to balance chunks over ranks: its column sweep (launch-bound:
    ~cols launches) plus its arithmetic (~len x rows x cols²)."""
    rows, cols = jobs[chunk[0]].w.shape
    return cols * 1e6 + len(chunk) * rows * cols * cols / 1e3


@torch.no_grad()
def gptq_sweep(jobs: Sequence[GPTQJob], device: torch.device | str = "cpu") -> torch.Tensor:
    """GPTQ codes of a chunk of same-shape, same-qmax jobs: int8 (len, rows, cols) on `device`."""
    dev = torch.device(device)
    f64 = torch.float64
    qmax = jobs[0].qmax
    W = torch.stack([torch.from_numpy(np.ascontiguousarray(j.w)) for j in jobs]).to(dev, f64)
    H = torch.stack([torch.as_tensor(j.hessian).to(dev, f64) for j in jobs])
    s = torch.stack([torch.from_numpy(np.ascontiguousarray(j.scale)) for j in jobs]).to(dev, f64)   # (b, rows)
    b, rows, cols = W.shape
    if not bool(torch.isfinite(H).all()):
        raise SpecError(f"the Hessian of one of {', '.join(j.name for j in jobs)} has NaN or infinite values")
    diag = H.diagonal(dim1=-2, dim2=-1)
    dead = diag == 0
    diag.masked_fill_(dead, 1.0)
    W.masked_fill_(dead[:, None, :], 0.0)
    diag.add_(GPTQ_DAMP * diag.mean(dim=-1, keepdim=True))
    L, info = torch.linalg.cholesky_ex(H)
    if bool((info != 0).any()):
        bad = [jobs[i].name for i in torch.nonzero(info).flatten().tolist()]
        raise SpecError(f"GPTQ: the Hessian of {bad[0]} is not positive definite even with {GPTQ_DAMP:.0%} dampening",
                        hint="collect it over more calibration tokens, or set gptq: false for its group")
    U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)   # H^-1 = Uᵀ U
    del H, L
    Q = torch.empty((b, rows, cols), dtype=torch.int8, device=dev)
    for i1 in range(0, cols, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, cols)
        W1 = W[:, :, i1:i2].clone()
        E1 = torch.empty_like(W1)
        U1 = U[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = W1[:, :, i]
            q = torch.clamp(torch.round(col / s), -qmax, qmax)
            Q[:, :, i1 + i] = q.to(torch.int8)
            err = (col - q * s) / U1[:, i, i, None]
            E1[:, :, i] = err
            if i + 1 < i2 - i1:   # the rest of the block; column i itself is done
                W1[:, :, i + 1:].sub_(err[:, :, None] * U1[:, i, None, i + 1:])
        if i2 < cols:
            W[:, :, i2:].sub_(torch.bmm(E1, U[:, i1:i2, i2:]))
    return Q


def gptq_codes(jobs: Sequence[GPTQJob], device: torch.device | str | None = None) -> dict[str, np.ndarray]:
    """GPTQ codes (int8 numpy, name → (rows, cols)) of every job, chunk by chunk on `device`
    (default the CPU)."""
    out: dict[str, np.ndarray] = {}
    for chunk in gptq_chunks(jobs):
        codes = gptq_sweep([jobs[i] for i in chunk], device or "cpu").cpu().numpy()
        out.update({jobs[i].name: codes[k] for k, i in enumerate(chunk)})
    return out


def gptq_device(name: str | None) -> torch.device:
    """The device a name asks for ("auto" or None: the first GPU if there is one, else the CPU);
    a bad or absent one is one SpecError."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise SpecError(f"unknown device {name!r}", hint="cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {name!r} asked for, but torch sees no GPU here", hint="use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise SpecError(f"GPTQ runs on cpu or cuda, not {dev.type}", hint="cpu, cuda or cuda:N")
    return dev
