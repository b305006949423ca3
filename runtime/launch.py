"""Launch a multi-process run: `recurc train SPEC --gpus N` → torchrun → runtime.train on N ranks.

The launched environment keeps NCCL_NVLS_ENABLE=0: NVLink multicast (NVLS) is off on shared hosts
(a program using it can take the host's GPUs out of service for others), and many rented hosts
lack the fabric manager it needs anyway.
"""
from __future__ import annotations

import os
import sys
from typing import NoReturn, Sequence


def launch_command(spec: str, gpus: int, args: Sequence[str] = ()) -> list[str]:
    """The torchrun command line for `gpus` ranks (also usable on CPU: ranks then use gloo)."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "runtime.train", spec, *args]


def launch_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["NCCL_NVLS_ENABLE"] = "0"
    # torchrun's own default (one thread per rank), set here so it does not print a banner about it
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def launch(spec: str, gpus: int, args: Sequence[str] = ()) -> NoReturn:
    """Replace this process with torchrun running runtime.train SPEC ARGS on `gpus` ranks."""
    cmd = launch_command(spec, gpus, args)
    os.execvpe(cmd[0], cmd, launch_env())


if __name__ == "__main__":  # python -m runtime.launch N SPEC [train args]
    launch(sys.argv[2], int(sys.argv[1]), sys.argv[3:])
