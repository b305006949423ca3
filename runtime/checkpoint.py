"""Training checkpoints: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (nothing that needs
unpickling code), so loading one cannot execute anything:

    version, spec (canonical JSON of the Plan), step, elapsed (training seconds),
    model (state dict), optimizers (list of state dicts), ema (state dict or None),
    loader (DistributedTokenLoader.state_dict()), rng (torch CPU/CUDA and Python states)

It is written to a temporary file in the same directory, fsync'ed, then moved over the old one
with os.replace: a run killed at any moment leaves either the previous checkpoint or the new
one, never a torn file.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from recurc.atomic import atomic_write
from recurc.errors import SpecError
from recurc.safeio import load_torch

CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` through a temporary sibling and os.replace."""
    return atomic_write(path, data)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """torch.save `state` to `path` atomically; a failed write (a full disk) is one SpecError and
    leaves the previous checkpoint, if any, in place."""
    def write(f) -> None:
        try:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
        except RuntimeError as exc:   # torch's zip writer reports a failed write as a RuntimeError
            first = (str(exc).strip().splitlines() or ["write failed"])[0][:160]
            raise OSError(f"the checkpoint could not be written completely (a full disk?): {first}") from None
    return atomic_write(path, write)


# what a checkpoint must hold, and of which type, before any of it is restored
FIELDS: dict[str, type | tuple[type, ...]] = {
    "spec": str, "step": int, "elapsed": (int, float), "model": dict, "optimizers": list,
    "ema": (dict, type(None)), "loader": dict, "rng": dict}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at `path`, unpickled with weights_only=True (tensors and plain data only).
    A file that is not a recurc checkpoint of this version is a SpecError naming it."""
    state = load_torch(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise SpecError(f"{path} is not a recurc checkpoint of version {CHECKPOINT_VERSION}",
                        hint="resume from the checkpoint.pt a `recurc train` run wrote, or start afresh")
    return state


def check_resumable(state: dict[str, Any], path: str | os.PathLike) -> None:
    """A training checkpoint holds every field a resume restores, of the right type."""
    for key, kind in FIELDS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise SpecError(f"{path} is a damaged recurc checkpoint: `{key}` is missing or of the wrong type",
                            hint="start afresh (remove it, or train without --resume)")
    if state["step"] < 0 or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise SpecError(f"{path} is a damaged recurc checkpoint: bad step or model tensors")


def restore_error(path: str | os.PathLike, exc: BaseException) -> SpecError:
    """The error for a checkpoint that loaded but does not fit the run (shapes, optimizer groups,
    loader or RNG state of another model or version)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return SpecError(f"cannot resume from {path}: it does not fit this run ({first})",
                     hint="resume needs the checkpoint of the same spec; train without --resume to start afresh")


def rng_state() -> dict[str, Any]:
    """RNG states as weights_only-loadable data. Training itself draws no random numbers (no
    dropout), but user code or a later feature might; restoring them keeps resume exact."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(_flatten_py_state(random.getstate())),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if state.get("python"):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def _flatten_py_state(s: tuple) -> tuple:
    version, internal, gauss = s
    return version, list(internal), gauss


def find_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    path = Path(out_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None
