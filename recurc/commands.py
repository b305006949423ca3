"""Subcommands `diff`, `render` and `variants` (imported by cli._register_optional)."""
from __future__ import annotations

import argparse
import json
import sys

from .cli import command


@command("diff", "compare two specs semantically (exit 0 when equal, 1 when different, 2 on a spec error)")
def _diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="spec YAML file")
    p.add_argument("b", help="spec YAML file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-estimate", action="store_true", help="skip FLOP and byte estimates")

    def run(args) -> int:
        from .diff import diff, print_diff
        d = diff(args.a, args.b, estimates=not args.no_estimate)
        if args.json:
            print(json.dumps(d.to_dict(), indent=2, default=str))
        else:
            print_diff(d)
        return 0 if d.equal else 1
    p.set_defaults(run=run)


@command("render", "draw the virtual-layer graph of a spec (DOT, Mermaid, PNG or SVG)")
def _render(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--format", "-f", choices=("dot", "mermaid", "png", "svg"), default=None,
                   help="default: from the -o suffix, else dot")
    p.add_argument("-o", "--output", help="output file (written atomically); default stdout for text formats")

    def run(args) -> int:
        from .cli import _plan
        from .render import render_to
        plan = _plan(args)
        return render_to(plan, args.format, args.output)
    p.set_defaults(run=run)


@command("variants", "expand a template's sweep into concrete specs, score, filter, rank and write them")
def _variants(p: argparse.ArgumentParser) -> None:
    p.add_argument("template", help="spec YAML with a `sweep:` section")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides applied to the template")
    p.add_argument("-o", "--out", help="folder to write one YAML spec per kept variant into")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the results as JSON to FILE (or stdout with no FILE)")
    p.add_argument("--top", type=int, default=None, help="keep only the best N after ranking")
    p.add_argument("--rank", default=None, help="override the template's rank key, e.g. -unique_params")
    p.add_argument("--all", action="store_true", help="also list variants that fail the constraints")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores for big sweeps)")
    p.add_argument("--quiet", "-q", action="store_true", help="no table, no progress bar")

    def run(args) -> int:
        from .variants import print_table, variants, write_json, write_specs
        res = variants(args.template, overrides=args.overrides, rank=args.rank, top=args.top,
                       keep_failed=args.all, workers=args.workers, progress=not args.quiet and args.json != "-",
                       with_stats=True)
        rows, stats = res
        if args.out:
            write_specs(rows, args.out)
        if args.json == "-":
            print(json.dumps({"stats": stats, "variants": [v.to_dict() for v in rows]}, indent=2, default=str))
        else:
            if args.json:
                write_json(rows, args.json, stats)
            if not args.quiet:
                print_table(rows, stats)
                if args.out:
                    print(f"wrote {sum(1 for v in rows if v.passed)} specs to {args.out}", file=sys.stderr)
        return 0
    p.set_defaults(run=run)
