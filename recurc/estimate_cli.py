"""Subcommands `estimate` and `measure` (imported by cli._register_optional).

`estimate` has to finish in well under a second as a whole process, so this module imports
nothing heavy at import time and prints its table without rich.
"""
from __future__ import annotations

import argparse
import json
import sys

from .cli import command

GROUP_ORDER = ("embeddings", "attention", "mlp", "per_pass", "scalars")


def _n(x: float) -> str:
    return f"{int(round(x)):,}"


def _si(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:,.1f}{unit}"
    return f"{x:,.0f}"


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = set(range(1, len(headers))) if right is None else right
    w = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    def line(r: list[str]) -> str:
        return "  ".join(str(c).rjust(w[i]) if i in right else str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip()
    return "\n".join([line(headers), "  ".join("─" * x for x in w), *(line(r) for r in rows)])


def format_estimate(e) -> str:
    out = [f"{e.name}: {e.compressor}, budget {_n(e.budget)} bytes", ""]
    rows = []
    for g in GROUP_ORDER:
        if not (e.unique_by_group.get(g) or e.raw_bytes_by_group.get(g)):
            continue
        raw, comp = e.raw_bytes_by_group[g], e.bytes_by_group[g]
        rows.append([g, _n(e.unique_by_group[g]), _n(e.effective_by_group[g]), _n(raw), _n(comp),
                     f"{8 * comp / max(e.unique_by_group[g], 1):.3f}"])
    rows.append(["container", "", "", "", _n(e.container_bytes), ""])
    rows.append(["total", _n(e.unique_params), _n(e.effective_params), _n(e.raw_bytes), _n(e.model_bytes),
                 f"{8 * e.model_bytes / max(e.unique_params, 1):.3f}"])
    out.append(_table(["group", "unique params", "effective", "raw payload B", "predicted B", "bits/param"], rows))
    out.append("")
    out.append(f"FLOPs/token   train {_si(e.flops_per_token_train)} (3 × forward of main)"
               + (f", over the schedule {_si(e.flops_per_token_train_schedule)}"
                  if abs(e.flops_per_token_train_schedule - e.flops_per_token_train) > 1 else "")
               + f"   eval {_si(e.flops_per_token_eval)}")
    out.append(f"model bytes   {_n(e.model_bytes)}   (interval {_n(e.model_bytes_low)} .. {_n(e.model_bytes_high)}: "
               f"weights profile {e.weights}, band over the built-in profiles)")
    out.append(f"code bytes    {_n(e.code_bytes)}   ({e.code_source})")
    verdict = "fits" if e.fits else "OVER BUDGET"
    out.append(f"total         {_n(e.total_bytes)} / {_n(e.budget)}   headroom {e.headroom:+,}   → {verdict}")
    if e.fits and not e.fits_high:
        out.append(f"warning: the high end of the interval ({_n(e.model_bytes_high + e.code_bytes)}) is over budget")
    for note in e.notes:
        out.append(f"note: {note}")
    if not e.fits:
        out.append("")
        if e.suggestions:
            out.append(f"over by {-e.headroom:,} bytes; cheapest changes that fit (predicted):")
            srows = [[s.change, _n(s.total_bytes), f"{s.headroom:+,}", " ".join(s.overrides)] for s in e.suggestions]
            out.append(_table(["change", "total B", "headroom", "overrides"], srows, right={1, 2}))
        else:
            out.append(f"over by {-e.headroom:,} bytes; no single change tried fits")
    return "\n".join(out)


def _print(result, as_json: bool, table) -> int:
    """A result as JSON (`--json`) or as its table; the command's exit status."""
    print(json.dumps(result.to_dict(), indent=2) if as_json else table(result))
    return 0


@command("estimate", "predict parameters, FLOPs per token and artifact bytes of a spec (no torch, no training)")
def _estimate(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. model.dim=576")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-suggest", action="store_true", help="skip the budget guard's suggestions")

    def run(args) -> int:
        from .cli import _plan
        from .estimate import estimate
        return _print(estimate(_plan(args), suggest=not args.no_suggest), args.json, format_estimate)
    p.set_defaults(run=run)


@command("measure", "exact artifact bytes of a checkpoint through the export path, vs the prediction")
def _measure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="torch state dict (or a dict with a 'model' key)")
    p.add_argument("--spec", required=True, help="spec YAML file the checkpoint was trained from")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides of the spec")
    p.add_argument("--hessians", help="torch file {name: X^T X} for GPTQ groups (default: rounding, as H = I)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-o", "--output", help="also write the compressed model bytes to this file")
    p.add_argument("--save-profile", metavar="FILE.json",
                   help="fit a trained-weight profile to this checkpoint for specs' quant.weights")

    def run(args) -> int:
        from .cli import _plan
        from .measure import format_measure, measure
        m = measure(args.checkpoint, _plan(args), hessians=args.hessians, output=args.output,
                    save_profile=args.save_profile)
        return _print(m, args.json, format_measure)
    p.set_defaults(run=run)
