"""The same training code under torchrun: 2 CPU processes with gloo finish and agree."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.launch import launch_command, launch_env
from runtime.log import read_json_log
from test_train import FAST, TINY, data_args, demo  # noqa: F401  (demo is a fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_launch_command_and_env():
    cmd = launch_command("specs/tiny.yaml", 8, ["--steps", "3"])
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "-m"]
    assert cmd[6:] == ["runtime.train", "specs/tiny.yaml", "--steps", "3"]
    assert launch_env({})["NCCL_NVLS_ENABLE"] == "0"


@pytest.mark.slow
def test_two_process_gloo_run(demo, tmp_path):
    log = tmp_path / "log.jsonl"
    # loops switch on half way: the first steps run the flat order, so DDP meets unused tensors
    cmd = launch_command(TINY, 2, [*FAST, "schedule.loops_at=0.5", "--steps", "6", *data_args(demo),
                                   "--out", str(tmp_path), "--log-json", str(log), "--log-every", "1",
                                   "--device", "cpu"])
    env = {**launch_env(), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    recs = read_json_log(log)
    run = next(r for r in recs if r["event"] == "run")
    assert run["world_size"] == 2 and run["accum"] * run["micro_tokens"] * 2 == run["tokens_per_step"]
    paths = [r["path"] for r in recs if r["event"] == "step"]
    assert paths == ["before"] * 3 + ["main"] * 3
    final = next(r for r in recs if r["event"] == "final")
    assert final["ranks_agree"] and len(final["checksums"]) == 4
    export = next(r for r in recs if r["event"] == "export")
    assert Path(export["artifact"]).stat().st_size == export["model_bytes"]
    assert abs(export["post_bpb"] - export["pre_bpb"]) < 0.05
