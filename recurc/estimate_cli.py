"""Subcommands `estimate` and `measure`.

`estimate` has to finish in well under a second as a whole process, so this module imports
nothing heavy at import time and prints its table without rich.
"""
from __future__ import annotations

import argparse
import json

from .commands import json_arg, plan_of, spec_arg

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
    if e.anchor:
        rows.append(["anchor correction", "", "", "", f"{e.anchor_correction:+,}", ""])
    rows.append(["total", _n(e.unique_params), _n(e.effective_params), _n(e.raw_bytes), _n(e.model_bytes),
                 f"{8 * e.model_bytes / max(e.unique_params, 1):.3f}"])
    out.append(_table(["group", "unique params", "effective", "raw payload B", "predicted B", "bits/param"], rows))
    out.append("")
    out.append(f"FLOPs/token   train {_si(e.flops_per_token_train)} (3 × forward of main)"
               + (f", over the schedule {_si(e.flops_per_token_train_schedule)}"
                  if abs(e.flops_per_token_train_schedule - e.flops_per_token_train) > 1 else "")
               + f"   eval {_si(e.flops_per_token_eval)}")
    out.append(f"model bytes   {_n(e.model_bytes)}   (interval {_n(e.model_bytes_low)} .. {_n(e.model_bytes_high)}, "
               f"±{100 * e.band:.2f} %" + (", anchored" if e.anchor else "") + ")")
    out.append(f"weights       profile {e.weights}: {e.weights_reason}")
    out.append(f"              calibration: {e.weights_source}")
    if e.anchor:
        out.append(f"anchor        {e.anchor} measured {_n(e.anchor_bytes)} B: this prediction is those bytes plus "
                   f"the model's difference ({e.anchor_correction:+,} B against the unanchored one)")
    out.append(f"code bytes    {_n(e.code_bytes)}   ({e.code_source})")
    verdict = "OVER BUDGET" if not e.fits else ("fits, but MAY BE OVER" if not e.fits_high else "fits")
    out.append(f"total         {_n(e.total_bytes)} / {_n(e.budget)}   headroom {e.headroom:+,}   → {verdict}")
    if e.fits and not e.fits_high:
        out.append(f"warning: may be over budget: the high end of the interval "
                   f"({_n(e.model_bytes_high + e.code_bytes)}) is over; export fits the artifact to the budget "
                   "(docs/size-model.md)")
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


def add_estimate(p: argparse.ArgumentParser) -> None:
    spec_arg(p)
    json_arg(p)
    p.add_argument("--no-suggest", action="store_true", help="skip the budget guard's suggestions")
    p.add_argument("--anchor", metavar="SIBLING=BYTES",
                   help="predict from a sibling spec whose compressed model bytes were measured (a log or "
                        "`recurc measure`): its bytes plus the model's difference (default: quant.anchor)")

    def run(args) -> int:
        from .estimate import estimate, parse_anchor
        anchor = parse_anchor(args.anchor) if args.anchor else None
        return _print(estimate(plan_of(args), suggest=not args.no_suggest, anchor=anchor), args.json,
                      format_estimate)
    p.set_defaults(run=run)


def add_measure(p: argparse.ArgumentParser) -> None:
    spec_arg(p, help="spec YAML file the checkpoint was trained from")
    p.add_argument("checkpoint", help="torch state dict (or a dict with a 'model' key), e.g. runs/tiny/checkpoint.pt")
    json_arg(p)
    p.add_argument("--hessians", help="torch file {name: X^T X} for GPTQ groups (default: rounding, as H = I)")
    p.add_argument("-o", "--output", help="also write the compressed model bytes to this file")
    p.add_argument("--save-profile", metavar="FILE.json",
                   help="fit a trained-weight profile to this checkpoint for specs' quant.weights")
    p.add_argument("--device", default="auto",
                   help="where GPTQ runs: cpu, cuda, cuda:N (default auto: a GPU if there is one); "
                        "the export's device gives the export's bytes")

    def run(args) -> int:
        from .measure import format_measure, measure
        m = measure(args.checkpoint, plan_of(args), hessians=args.hessians, output=args.output,
                    save_profile=args.save_profile, device=args.device)
        return _print(m, args.json, format_measure)
    p.set_defaults(run=run)
