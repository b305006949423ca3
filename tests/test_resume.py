"""Kill a CPU run after it wrote a checkpoint; the resumed run continues the same loss curve."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runtime.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from runtime.log import read_json_log
from runtime.train import main
from test_train import FAST, TINY, data_args, demo  # noqa: F401  (demo is a fixture)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12


def _cmd(demo, out: Path, log: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "runtime.train", TINY, *FAST, "train.warmdown_steps=6", "--steps", str(STEPS),
            *data_args(demo), "--out", str(out), "--log-json", str(log), "--log-every", "1", "--ckpt-every", "3",
            "--val-every", "0", "--no-export", "--device", "cpu", "--warmup", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _losses(log: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_json_log(log) if r["event"] == "step"}


def test_atomic_checkpoint_roundtrip(tmp_path):
    p = save_checkpoint(tmp_path / "c.pt", {"step": 3, "model": {"w": torch.arange(4.0)}, "note": "x"})
    state = load_checkpoint(p)
    assert state["step"] == 3 and torch.equal(state["model"]["w"], torch.arange(4.0))
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind
    atomic_write_bytes(tmp_path / "a.bin", b"abc")
    assert (tmp_path / "a.bin").read_bytes() == b"abc"


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_loss_curve(demo, tmp_path):
    # The uninterrupted run runs in this process (saves a torch start-up), on one thread like the
    # subprocesses, so both see the same kernels.
    full_log = tmp_path / "full.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_cmd(demo, tmp_path / "full", full_log)[3:]) == 0
    finally:
        torch.set_num_threads(threads)
    full = _losses(full_log)
    assert sorted(full) == list(range(1, STEPS + 1))

    out, killed_log = tmp_path / "killed", tmp_path / "killed.jsonl"
    proc = subprocess.Popen(_cmd(demo, out, killed_log), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt_step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert 0 < ckpt_step < STEPS

    resumed_log = tmp_path / "resumed.jsonl"
    res = subprocess.run(_cmd(demo, out, resumed_log, "--resume"), cwd=ROOT, env=_env(), capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = read_json_log(resumed_log)
    assert next(r for r in recs if r["event"] == "resume")["step"] == ckpt_step
    resumed = _losses(resumed_log)
    assert sorted(resumed) == list(range(ckpt_step + 1, STEPS + 1))
    for step, loss in resumed.items():  # bit-for-bit: same weights, optimizer state and data order
        assert loss == full[step], (step, loss, full[step])
    final_full = next(r for r in read_json_log(full_log) if r["event"] == "final")
    final_resumed = next(r for r in recs if r["event"] == "final")
    assert final_resumed["val_bpb"] == final_full["val_bpb"]
    assert final_resumed["checksums"] == final_full["checksums"]
