"""The `recurc` command. Every subcommand takes a spec and `key.path=value` overrides; any
SpecError is printed for people (file:line:col, caret, hint) and the exit code is 2."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .errors import SpecError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help: str):
    def wrap(fn):
        COMMANDS[name] = (help, fn)
        return fn
    return wrap


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. model.dim=576")


def _plan(args):
    from .plan import make_plan
    from .spec import load_spec
    return make_plan(load_spec(args.spec, args.overrides))


@command("show", "print the canonical order, the virtual layers and the parameter table")
def _show(p: argparse.ArgumentParser) -> None:
    _spec_args(p)
    p.add_argument("--json", action="store_true")

    def run(args) -> int:
        from .report import print_show, show_data
        plan = _plan(args)
        if args.json:
            print(json.dumps(show_data(plan), indent=2))
        else:
            print_show(plan)
        return 0
    p.set_defaults(run=run)


@command("build", "build the torch module of a spec (meta device: no memory) and print its summary")
def _build(p: argparse.ArgumentParser) -> None:
    _spec_args(p)
    p.add_argument("--device", default="meta", help="meta (default), cpu or cuda")

    def run(args) -> int:
        from .build import build
        plan = _plan(args)
        model = build(plan, device=args.device)
        print(model)
        total = sum(t.numel() for t in model.parameters())
        print(f"\n{len(model.state_dict())} tensors, {total:,} parameters (Plan: {plan.unique_params:,}); "
              + ", ".join(f"path {name}: {len(runs)} virtual layers" for name, runs in model.runs.items()))
        return 0
    p.set_defaults(run=run)


@command("schema", "print the JSON Schema of a spec (for editors)")
def _schema(p: argparse.ArgumentParser) -> None:
    def run(args) -> int:
        from .spec import json_schema
        print(json.dumps(json_schema(), indent=2))
        return 0
    p.set_defaults(run=run)


def _register_optional() -> None:
    """Subcommands that live in their own modules register themselves on import."""
    import importlib
    for mod in ("recurc.commands", "recurc.runtime_cli",
                "recurc.estimate_cli",
                "recurc.emit_cli",
                ):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def build_parser() -> argparse.ArgumentParser:
    _register_optional()
    parser = argparse.ArgumentParser(prog="recurc", description="a spec compiler for depth-recurrent transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, setup) in COMMANDS.items():
        setup(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `recurc build SPEC --device cpu model.dim=576`: overrides may also follow the options
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args)
    except SpecError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    # Run through the importable module so subcommands registered by recurc.commands & co.
    # land in the same COMMANDS table (`python -m recurc.cli` would otherwise hold two copies).
    from recurc.cli import main as _main
    sys.exit(_main())
