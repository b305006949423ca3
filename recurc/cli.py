"""The `recurc` command: one table of subcommands, one parser, one error path.

Every command that takes a spec takes `key.path=value` overrides after it (before or after the
options). Any SpecError (a bad spec, override, option or missing input) is printed for people
(file:line:col, caret, hint) and the exit code is 2. Command modules import nothing heavy, so
`recurc estimate` starts fast; each command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from . import __version__, commands, emit_cli, estimate_cli, runtime_cli
from .errors import SpecError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]    # declares the options and sets `run`


COMMANDS: tuple[Command, ...] = (
    Command("show", "print the canonical order, the virtual layers and the parameter table", commands.add_show),
    Command("estimate", "predict parameters, FLOPs per token and artifact bytes (no torch, no training)",
            estimate_cli.add_estimate),
    Command("diff", "compare two specs semantically (exit 0 equal, 1 different, 2 on an error)", commands.add_diff),
    Command("render", "draw the virtual-layer graph (dot, mermaid, png, svg)", commands.add_render),
    Command("variants", "expand a template's sweep into specs; score, filter, rank and write them",
            commands.add_variants),
    Command("build", "build the torch module (meta device by default) and print its summary", commands.add_build),
    Command("train", "train a spec (one process, or torchrun with --gpus N), export and report BPB and bytes",
            runtime_cli.add_train),
    Command("measure", "exact artifact bytes of a checkpoint through the export path, vs the prediction",
            estimate_cli.add_measure),
    Command("emit", "write the spec's self-contained training script (train_gpt.py)", emit_cli.add_emit),
    Command("data", "build data: `recurc data demo` writes a tokenizer and shards, no download",
            runtime_cli.add_data),
    Command("schema", "print the JSON Schema of a spec (for editors)", commands.add_schema),
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in recurc's one-line `error:` form plus a hint."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message}\nhint: `{self.prog} --help` lists the options", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recurc", description="a spec compiler for depth-recurrent transformer language models",
                     epilog="`recurc COMMAND --help` gives a command's options")
    parser.add_argument("--version", action="version", version=f"recurc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for c in COMMANDS:
        c.setup(sub.add_parser(c.name, help=c.help, description=c.help))
    return parser


def _overrides(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Words argparse did not take: `key.path=value` overrides where the command has a spec."""
    bad = [a for a in extra if "=" not in a or a.startswith("-")]
    if bad or (extra and not hasattr(args, "overrides")):
        note = "" if hasattr(args, "overrides") else f" (`recurc {args.command}` takes no overrides)"
        print(f"error: unrecognized arguments: {' '.join(bad or extra)}{note}\n"
              f"hint: `recurc {args.command} --help` lists the options", file=sys.stderr)
        raise SystemExit(2)
    if extra:
        args.overrides = [*args.overrides, *extra]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _overrides(parser, args, extra)
    try:
        return args.run(args)
    except SpecError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # `recurc show ... | head`
        return 0
    except OSError as exc:           # any file a command touches: one line, never a traceback
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m recurc.cli (python -m recurc is the same command)
    sys.exit(main())
