"""Subcommands on specs and Plans: `show`, `build`, `schema`, `diff`, `render`, `variants`.

Each `add_<name>(parser)` declares its options and sets `run`; recurc/cli.py lists them in its
command table. Nothing heavy is imported here: a command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import json
import sys

OVERRIDES_HELP = "key.path=value overrides (e.g. model.dim=576) may follow the spec, before or after the options"


def spec_arg(p: argparse.ArgumentParser, name: str = "spec", help: str = "spec YAML file") -> None:
    """The spec positional. Overrides are not an argparse positional (an optional `nargs="*"`
    positional is listed as *required* in argparse's usage errors); cli.main collects every
    leftover `key=value` word into `args.overrides`."""
    p.add_argument(name, help=help)
    p.set_defaults(overrides=[])
    p.epilog = OVERRIDES_HELP


def json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")


def plan_of(args: argparse.Namespace):
    """The Plan of the command's spec with its overrides."""
    from .plan import make_plan
    from .spec import load_spec
    return make_plan(load_spec(args.spec, args.overrides))


# ---------------------------------------------------------------- show
def add_show(p: argparse.ArgumentParser) -> None:
    spec_arg(p)
    json_arg(p)

    def run(args) -> int:
        from .report import print_show, show_data
        plan = plan_of(args)
        if args.json:
            print(json.dumps(show_data(plan), indent=2))
        else:
            print_show(plan)
        return 0
    p.set_defaults(run=run)


# ---------------------------------------------------------------- build
def add_build(p: argparse.ArgumentParser) -> None:
    spec_arg(p)
    json_arg(p)
    p.add_argument("--device", default="meta", help="meta (default: allocates nothing), cpu or cuda")
    p.add_argument("--repr", action="store_true", help="also print torch's full module repr")

    def run(args) -> int:
        from .report import build_summary, print_build
        from .build import build
        plan = plan_of(args)
        model = build(plan, device=args.device)
        summary = build_summary(plan, model, args.device)
        if args.json:
            print(json.dumps(summary, indent=2))
            return 0
        if args.repr:
            print(model)
        print_build(summary)
        return 0
    p.set_defaults(run=run)


# ---------------------------------------------------------------- schema
def add_schema(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="write the schema to this file (default: stdout)")

    def run(args) -> int:
        from .spec import json_schema
        text = json.dumps(json_schema(), indent=2) + "\n"
        if args.output:
            from .atomic import atomic_write
            atomic_write(args.output, text)
        else:
            sys.stdout.write(text)
        return 0
    p.set_defaults(run=run)


# ---------------------------------------------------------------- diff
def add_diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="spec YAML file")
    p.add_argument("b", help="spec YAML file")
    json_arg(p)
    p.add_argument("--no-estimate", action="store_true", help="skip FLOP and byte estimates")

    def run(args) -> int:
        from .diff import diff, print_diff
        from .report import console
        d = diff(args.a, args.b, estimates=not args.no_estimate)
        if args.json:
            print(json.dumps(d.to_dict(), indent=2, default=str))
        else:
            print_diff(d, console=console())
        return 0 if d.equal else 1
    p.set_defaults(run=run)


# ---------------------------------------------------------------- render
def add_render(p: argparse.ArgumentParser) -> None:
    from .render import FORMATS
    spec_arg(p)
    p.add_argument("-f", "--format", choices=FORMATS, default=None,
                   help="default: from the -o suffix (.dot .gv .mmd .png .svg), else dot")
    p.add_argument("-o", "--output", help="output file (written atomically); default: stdout for dot/mermaid")

    def run(args) -> int:
        from .render import render_to
        return render_to(plan_of(args), args.format, args.output)
    p.set_defaults(run=run)


# ---------------------------------------------------------------- variants
def add_variants(p: argparse.ArgumentParser) -> None:
    spec_arg(p, "spec", "template spec YAML with a `sweep:` section")
    p.add_argument("-o", "--output", "--out", dest="output", metavar="DIR",
                   help="folder for one YAML spec per kept variant, plus variants.json")
    json_arg(p)
    p.add_argument("--top", type=int, default=None, help="keep only the best N after ranking")
    p.add_argument("--rank", default=None,
                   help="override the template's rank keys, e.g. -unique_params,total_bytes")
    p.add_argument("--all", action="store_true", help="also list variants that fail the constraints")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores for big sweeps)")
    p.add_argument("-q", "--quiet", action="store_true", help="no table, no progress bar")
    p.add_argument("--max", type=int, default=None, metavar="N",
                   help="refuse sweeps of more than N variants (default 100,000), counted before any is made")

    def run(args) -> int:
        from pathlib import Path

        from .report import console
        from .variants import print_table, variants, write_json, write_specs
        rows, stats = variants(args.spec, overrides=args.overrides, rank=args.rank, top=args.top,
                               keep_failed=args.all, workers=args.workers,
                               progress=not args.quiet and not args.json and sys.stderr.isatty(),
                               with_stats=True, max_variants=args.max,
                               announce=None if args.quiet else
                               lambda n: print(f"{n:,} variants to make", file=sys.stderr))
        if args.output:
            write_specs(rows, args.output)
            write_json(rows, Path(args.output) / "variants.json", stats)
        if args.json:
            print(json.dumps({"stats": stats, "variants": [v.to_dict() for v in rows]}, indent=2, default=str))
        elif not args.quiet:
            print_table(rows, stats, console=console())
            if args.output:
                print(f"wrote {sum(1 for v in rows if v.passed)} specs and variants.json to {args.output}",
                      file=sys.stderr)
        return 0
    p.set_defaults(run=run)
