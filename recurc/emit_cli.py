"""`recurc emit SPEC [overrides] -o train_gpt.py [--pack raw|minified|lzma]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import _plan, _spec_args, command


@command("emit", "write the spec's self-contained training script (train_gpt.py) and print its bytes")
def _emit(p: argparse.ArgumentParser) -> None:
    _spec_args(p)
    p.add_argument("-o", "--output", default="train_gpt.py", help="output file ('-' for stdout)")
    p.add_argument("--pack", choices=("raw", "minified", "lzma"), default=None,
                   help="packing (default: the spec's code.emit, else raw)")

    def run(args) -> int:
        from .emit import PACKINGS, emit
        plan = _plan(args)
        packing = args.pack or plan.spec.code.emit or "raw"
        sizes = {k: len(emit(plan, k).encode("utf-8")) for k in PACKINGS}
        text = emit(plan, packing)
        if args.output == "-":
            sys.stdout.write(text)
            out = sys.stderr
        else:
            Path(args.output).write_text(text, encoding="utf-8")
            out = sys.stdout
            print(f"wrote {args.output} ({packing}, {sizes[packing]:,} bytes)", file=out)
        print("  ".join(f"{k} {v:,} B" for k, v in sizes.items()), file=out)
        return 0
    p.set_defaults(run=run)
