"""`recurc emit SPEC [overrides] -o train_gpt.py [--pack raw|minified|lzma]`."""
from __future__ import annotations

import argparse
import json
import sys

from .commands import json_arg, plan_of, spec_arg


def add_emit(p: argparse.ArgumentParser) -> None:
    spec_arg(p)
    p.add_argument("-o", "--output", default="train_gpt.py", help="output file, '-' for stdout (default train_gpt.py)")
    p.add_argument("--pack", choices=("raw", "minified", "lzma"), default=None,
                   help="packing (default: the spec's code.emit, else raw)")
    json_arg(p)

    def run(args) -> int:
        from .atomic import atomic_write
        from .emit import PACKINGS, emit
        plan = plan_of(args)
        packing = args.pack or plan.code.emit or "raw"
        texts = {k: emit(plan, k) for k in PACKINGS}
        sizes = {k: len(t.encode("utf-8")) for k, t in texts.items()}
        if args.output == "-":
            sys.stdout.write(texts[packing])
            out = sys.stderr
        else:
            atomic_write(args.output, texts[packing])
            out = sys.stdout
        if args.json:
            print(json.dumps({"output": args.output, "packing": packing, "bytes": sizes}, indent=2), file=out)
            return 0
        if args.output != "-":
            print(f"wrote {args.output} ({packing}, {sizes[packing]:,} bytes)", file=out)
        print("  ".join(f"{k} {v:,} B" for k, v in sizes.items()), file=out)
        return 0
    p.set_defaults(run=run)
