"""Subcommands that hand over to runtime/: `recurc train` and `recurc data demo`.

runtime/ depends on recurc, never the reverse: this module (the CLI layer) is the only place in
recurc/ that imports runtime/, and only when a command runs. The training options are declared
here, once, so `recurc train --help` is complete without importing torch; `python -m
runtime.train` declares the same options through `add_train_options`.

Before any process starts, `preflight` checks what a run needs (the spec, GPUs, data, tokenizer,
a writable output folder) and a missing piece ends in one `error:` line with a hint, not in N
ranks' tracebacks.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
from pathlib import Path

from .commands import plan_of, spec_arg
from .errors import SpecError
from .safeio import inside

DEMO_DIR = "data/demo"            # runtime.train's default data when --data is not given
WHERE = "<command line>"
MAX_CPU_RANKS = 8                 # CPU ranks (gloo) allowed beyond the core count


def add_train_options(p: argparse.ArgumentParser) -> None:
    """runtime.train's options (shared with `python -m runtime.train`)."""
    p.add_argument("--data", help=f"glob of training shards, e.g. 'data/datasets/fineweb10B_sp1024/fineweb_train_*.bin' "
                                  f"(default: the demo data in {DEMO_DIR}, built when missing)")
    p.add_argument("--val", help="glob of validation shards (default: fineweb_val_*.bin beside --data)")
    p.add_argument("--tokenizer", help="SentencePiece model for BPB, e.g. data/tokenizers/fineweb_1024_bpe.model (required with --data)")
    p.add_argument("-o", "--output", "--out", dest="out", metavar="DIR",
                   help="run folder for checkpoint, log and artifact (default runs/<spec name>)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt if it exists")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on CUDA only)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="run the spec's warmup_steps (discarded) first (default: when compiling; "
                        "without compilation they would only cost time)")
    p.add_argument("--steps", type=int, help="train.iterations (the schedule scales with it)")
    p.add_argument("--log-json", help="JSON-lines log (default DIR/log.jsonl)")
    p.add_argument("--log-every", type=int, default=10, help="log every N steps (default 10)")
    p.add_argument("--val-every", type=int, help="validate every N steps (default train.val_every)")
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps (and always at the end)")
    p.add_argument("--micro-tokens", type=int, help="max tokens per rank per micro-batch")
    p.add_argument("--export", action=argparse.BooleanOptionalAction, default=True,
                   help="quantize + compress the trained model and measure its round-trip BPB (default on)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with tokens/s and ETA (default: when stderr is a terminal; "
                        "otherwise stdout gets one JSON line per event)")
    p.add_argument("--device", help="cpu or cuda (default cuda if available)")
    p.add_argument("--attention-kernel", choices=("auto", "flash", "cudnn", "efficient"), default="auto",
                   help="scaled_dot_product_attention's kernels on CUDA (default auto: torch's own "
                        "choice; flash: the challenge script's)")
    p.add_argument("--recompute-far-apart", action=argparse.BooleanOptionalAction, default=False,
                   help="let the compiled backward recompute the residual stream rather than save it "
                        "(less activation memory, more time; default off: torch's partitioner as it comes)")


# ---------------------------------------------------------------- train
def add_train(p: argparse.ArgumentParser) -> None:
    spec_arg(p)
    p.add_argument("--gpus", type=int, default=1,
                   help="ranks to launch with torchrun, one per GPU (with --device cpu: CPU ranks over gloo)")
    add_train_options(p)

    def run(args) -> int:
        argv = _runtime_argv(args)
        preflight(args)
        if args.gpus > 1:
            from runtime.launch import launch
            return launch(args.spec, args.gpus, argv) or 0
        from runtime.train import main as train_main
        return train_main([args.spec, *argv])
    p.set_defaults(run=run)


def _runtime_argv(args: argparse.Namespace) -> list[str]:
    """The parsed options as runtime.train's command line (overrides first)."""
    out = list(args.overrides)
    for opt, value in (("--data", args.data), ("--val", args.val), ("--tokenizer", args.tokenizer),
                       ("--out", args.out), ("--steps", args.steps), ("--log-json", args.log_json),
                       ("--val-every", args.val_every), ("--micro-tokens", args.micro_tokens),
                       ("--device", args.device), ("--attention-kernel", args.attention_kernel)):
        if value is not None:
            out += [opt, str(value)]
    out += ["--log-every", str(args.log_every), "--ckpt-every", str(args.ckpt_every)]
    for opt, value in (("compile", args.compile), ("warmup", args.warmup), ("export", args.export),
                       ("progress", args.progress), ("recompute-far-apart", args.recompute_far_apart)):
        if value is not None:
            out.append(f"--{opt}" if value else f"--no-{opt}")
    if args.resume:
        out.append("--resume")
    return out


def preflight(args: argparse.Namespace) -> None:
    """Everything a run needs, checked in this process before any rank starts (SpecError)."""
    plan = plan_of(args)          # the spec and overrides
    if args.gpus < 1:
        raise SpecError(f"--gpus takes a positive number of processes, got {args.gpus}", where=WHERE)
    most = max(MAX_CPU_RANKS, os.cpu_count() or 1)
    if args.device == "cpu" and args.gpus > most:     # each CPU rank is a process: never thousands
        raise SpecError(f"--gpus {args.gpus} with --device cpu: more CPU ranks than the limit of {most}",
                        where=WHERE, hint=f"use at most --gpus {most} on CPU (the limit is the larger of "
                                          f"{MAX_CPU_RANKS} and the number of cores)")
    if args.device not in (None, "cpu", "cuda") and not str(args.device).startswith("cuda:"):
        raise SpecError(f"--device is cpu or cuda, got {args.device!r}", where=WHERE)
    if args.device != "cpu" and (args.gpus > 1 or args.device is not None):
        present = _cuda_devices()
        if present < args.gpus:
            raise SpecError(f"{args.gpus} GPU{'s' if args.gpus > 1 else ''} requested, {present} present",
                            where=WHERE, hint="drop --gpus to train in one process here, or add --device cpu "
                                              "to run the ranks on CPU (gloo)")
    if args.data is not None:
        _need_files(args.data, "--data", "training shards")
        val = args.val or str(Path(args.data).parent / "fineweb_val_*.bin")
        _need_files(val, "--val", "validation shards")
        if args.tokenizer is None:
            raise SpecError("--data needs --tokenizer (BPB is measured with the SentencePiece model)",
                            where=WHERE, hint="e.g. --tokenizer data/tokenizers/fineweb_1024_bpe.model")
    elif args.val is not None:
        _need_files(args.val, "--val", "validation shards")
    if args.tokenizer is not None and not Path(args.tokenizer).is_file():
        raise SpecError(f"--tokenizer {args.tokenizer}: no such file", where=WHERE,
                        hint="the SentencePiece .model that the shards were tokenized with")
    # the run folder runtime.train uses: a spec's name is one sanitized component under runs/
    _need_writable(Path(args.out) if args.out else inside("runs", plan.name))


def _cuda_devices() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _need_files(pattern: str, option: str, what: str) -> None:
    if not glob.glob(pattern):
        raise SpecError(f"{option} {pattern}: no {what} match", where=WHERE,
                        hint="quote the glob so the shell passes it to recurc; the challenge's shards are "
                             "named fineweb_train_000000.bin ... (see the README's 'Your first record run')")


def _need_writable(folder: Path) -> None:
    """Create the run folder and prove a file can be written into it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except (OSError, ValueError) as exc:     # ValueError: a NUL byte in the name
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        shown = repr(str(folder)) if "\0" in str(folder) else str(folder)
        raise SpecError(f"output folder {shown} is not writable: {why}", where=WHERE,
                        hint="choose another folder with -o DIR") from None


# ---------------------------------------------------------------- data
def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["demo"],
                   help="demo: a SentencePiece BPE tokenizer and train/val shards in the challenge's format, "
                        "from Python's own documentation (or --corpus files); no download")
    p.add_argument("-o", "--output", "--out", dest="output", default=DEMO_DIR, metavar="DIR",
                   help=f"folder for tokenizer.model and fineweb_{{train,val}}_000000.bin (default {DEMO_DIR}, "
                        "where `recurc train` looks when --data is not given)")
    p.add_argument("--vocab-size", type=int, default=1024, help="tokenizer pieces (default 1024, as sp1024)")
    p.add_argument("--corpus", nargs="+", default=None, metavar="GLOB",
                   help="globs of local text files to use instead of Python's pydoc topics")
    p.add_argument("--max-bytes", type=int, default=100_000_000,
                   help="stop reading --corpus files after this much text (default 100,000,000)")
    p.add_argument("--force", action="store_true", help="rebuild even when a matching build is present")

    def run(args) -> int:
        from runtime.demo import build_demo_data
        try:
            d = build_demo_data(args.output, args.vocab_size, force=args.force, corpus=args.corpus,
                                max_bytes=args.max_bytes)
        except ValueError as exc:       # no corpus files, a vocabulary SentencePiece cannot train
            raise SpecError(str(exc), where=WHERE) from None
        print(json.dumps({"tokenizer": str(d.tokenizer_path), "train": d.train_pattern, "val": d.val_pattern,
                          "train_tokens": d.train_tokens, "val_tokens": d.val_tokens}, indent=1))
        return 0
    p.set_defaults(run=run)
