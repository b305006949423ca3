"""Subcommands that hand over to runtime/: `recurc train` and `recurc data demo`.

runtime/ depends on recurc, never the reverse, so these import it only when they run."""
from __future__ import annotations

import argparse
import json

from .cli import command
from .errors import SpecError


@command("train", "train a spec (one process, or torchrun with --gpus N); see python -m runtime.train -h")
def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("--gpus", type=int, default=1, help="processes to launch with torchrun (one per GPU)")
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="overrides and options passed to runtime.train (--data, --tokenizer, --steps, ...)")

    def run(args) -> int:
        gpus, rest = _take_gpus(list(args.rest), args.gpus)
        if gpus > 1:
            from runtime.launch import launch
            return launch(args.spec, gpus, rest) or 0
        from runtime.train import main as train_main
        return train_main([args.spec, *rest])
    p.set_defaults(run=run)


def _take_gpus(rest: list[str], default: int) -> tuple[int, list[str]]:
    """`--gpus N` may come after the spec, among runtime.train's own options: take it out."""
    gpus, out, i = default, [], 0
    while i < len(rest):
        if rest[i] == "--gpus" and i + 1 < len(rest):
            value, i = rest[i + 1], i + 2
        elif rest[i].startswith("--gpus="):
            value, i = rest[i].split("=", 1)[1], i + 1
        else:
            out.append(rest[i])
            i += 1
            continue
        if not value.isdigit() or int(value) < 1:
            raise SpecError(f"--gpus takes a positive number of processes, got {value!r}", where="<command line>")
        gpus = int(value)
    return gpus, out


@command("data", "build data: `recurc data demo` writes a tokenizer and shards from text on this machine")
def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["demo"])
    p.add_argument("--out", default="data/demo")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--corpus", nargs="*", default=None,
                   help="globs of local text files to use instead of Python's pydoc topics")
    p.add_argument("--max-bytes", type=int, default=100_000_000)
    p.add_argument("--force", action="store_true")

    def run(args) -> int:
        from runtime.demo import build_demo_data
        d = build_demo_data(args.out, args.vocab_size, force=args.force, corpus=args.corpus,
                            max_bytes=args.max_bytes)
        print(json.dumps({"tokenizer": str(d.tokenizer_path), "train": d.train_pattern, "val": d.val_pattern,
                          "train_tokens": d.train_tokens, "val_tokens": d.val_tokens}, indent=1))
        return 0
    p.set_defaults(run=run)
