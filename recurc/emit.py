"""Emit one self-contained `train_gpt.py` for a spec, and count its bytes exactly.

The script is code plus data, never a rewrite of source text:

* code: the torch-side core files the runtime runs (recurc/ir.py, recurc/nn/, recurc/build.py,
  recurc/quant.py, runtime/*.py, and the torch side of each component the Plan uses), cut into
  definitions with `ast` and tree-shaken: only what the entry point reaches is kept, each
  definition verbatim, project imports removed (`quant.pack` becomes `pack`);
* data: the Plan as one literal (`PLAN = Plan.from_json({...})`), written by a serializer, so no
  spec text can become code; `TORCH_COMPONENTS`, the component classes the Plan names;
* `main`: the run-time knobs as environment variables in the challenge's style (DATA_PATH,
  TOKENIZER_PATH, SEED, ITERATIONS, MAX_WALLCLOCK_SECONDS, RUN_ID / OUT_DIR, and DEVICE, COMPILE,
  MICRO_TOKENS, VAL_LOSS_EVERY, TRAIN_LOG_EVERY, RESUME), then `runtime.train.train_rank` — what
  `recurc train` runs.

Packing: "raw" (formatted, commented), "minified" (ast.unparse without docstrings and function
annotations), "lzma" (the minified text, LZMA-compressed, base85, exec'd by a one-line loader).

`emitted_code_bytes(plan)` is the exact size of the file `recurc emit` writes for the spec's
`code.emit` packing. This module never imports torch: it reads source files as text.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import json
import lzma
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plan import Plan

ROOT = Path(__file__).resolve().parents[1]
PACKINGS = ("raw", "minified", "lzma")

# Core source modules, in the order their sections appear in the script. Component modules the
# Plan uses are added after them (recurc/components names each one's torch side).
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("recurc.errors", "recurc/errors.py", "errors"),
    ("recurc.atomic", "recurc/atomic.py", "atomic file writes"),
    ("recurc.safeio", "recurc/safeio.py", "bounded reads of regular files"),
    ("recurc.inflate", "recurc/inflate.py", "bounded decompression"),
    ("recurc.ir", "recurc/ir.py", "the Plan's records"),
    ("recurc.quantspec", "recurc/quantspec.py", "quantization rules"),
    ("recurc.nn.layers", "recurc/nn/layers.py", "layers"),
    ("recurc.build", "recurc/build.py", "the model: execution paths walked as static tuples"),
    ("runtime.data", "runtime/data.py", "token shards and the data loader"),
    ("runtime.bpb", "runtime/bpb.py", "bits per byte"),
    ("runtime.evaluate", "runtime/evaluate.py", "validation"),
    ("runtime.optim", "runtime/optim.py", "optimizers: Muon for matrices, Adam for the rest"),
    ("recurc.gptq", "recurc/gptq.py", "GPTQ in torch"),
    ("recurc.quant", "recurc/quant.py", "quantization, serialization, compression"),
    ("runtime.checkpoint", "runtime/checkpoint.py", "checkpoints"),
    ("runtime.log", "runtime/log.py", "logging"),
    ("recurc.fit_budget", "recurc/fit_budget.py", "fitting the artifact to the budget"),
    ("runtime.export", "runtime/export.py", "export: the artifact"),
    ("runtime.train", "runtime/train.py", "training"),
)
PROJECT_PREFIXES = ("recurc", "runtime")
# Definitions the script provides itself: its data, its entry point, and the two functions whose
# package versions reach outside the core (the component registry, the size model).
TEMPLATE_NAMES = {"SPEC_NAME", "SPEC_DESCRIPTION", "Hyperparameters", "PLAN", "PLAN_HASH", "TORCH_COMPONENTS",
                  "torch_component", "predicted_bytes", "main"}


# ============================================================================ source index
@dataclass
class Definition:
    name: str
    module: str
    section: str
    order: int              # position in the script: (module index, line)
    text: str               # source text, dedented to column 0
    kind: str               # "def" | "class" | "assign"


@dataclass
class ModuleIndex:
    name: str
    # alias -> the non-project import statements that bind it: `torch` may need both
    # `import torch` and `import torch._functorch.config`
    imports: dict[str, tuple[str, ...]]
    project: dict[str, tuple[str, str | None]]   # alias -> (project module, object name or None)
    defs: dict[str, Definition]


_INDEX_CACHE: dict[tuple, dict[str, ModuleIndex]] = {}
Source = tuple[str, str, str]        # (module, file, section title)


def _sources(plan: Plan) -> tuple[Source, ...]:
    """The core files, then the file of each component's torch side the Plan uses (in name order)."""
    from importlib.util import find_spec
    core = {m for m, _, _ in SOURCES}
    extra: dict[str, Source] = {}
    for name, module, _ in _component_refs(plan):
        if module not in core and module not in extra:
            spec = find_spec(module)
            if spec is None or not spec.origin:
                raise ValueError(f"component {name}: cannot find the source of module {module}")
            extra[module] = (module, spec.origin, f"component {name}")
    return SOURCES + tuple(extra[m] for m in sorted(extra))


def _path(file: str) -> Path:
    return Path(file) if os.path.isabs(file) else ROOT / file


def _source_key(sources: tuple[Source, ...] = SOURCES) -> tuple:
    return tuple((p, _path(p).stat().st_mtime_ns) for _, p, _ in sources)


def _index(sources: tuple[Source, ...] = SOURCES) -> dict[str, ModuleIndex]:
    key = _source_key(sources)
    if key not in _INDEX_CACHE:
        if len(_INDEX_CACHE) > 8:
            _INDEX_CACHE.clear()
        modules = {m for m, _, _ in sources}
        _INDEX_CACHE[key] = {mod: _index_module(i, mod, path, section, modules)
                             for i, (mod, path, section) in enumerate(sources)}
    return _INDEX_CACHE[key]


def _is_project(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PROJECT_PREFIXES


def _index_module(i: int, mod: str, path: str, section: str, modules: set[str]) -> ModuleIndex:
    src = _path(path).read_text(encoding="utf-8")
    lines = src.splitlines(keepends=True)
    tree = ast.parse(src)
    imports: dict[str, tuple[str, ...]] = {}
    project: dict[str, tuple[str, str | None]] = {}
    defs: dict[str, Definition] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                alias = a.asname or a.name.split(".")[0]
                if _is_project(a.name):
                    project[alias] = (a.name, None)
                else:
                    stmt = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
                    imports[alias] = imports.get(alias, ()) + (stmt,)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            module = node.module or ""
            if node.level:     # relative: resolve against this module's package
                base = mod.split(".")[: -node.level]
                module = ".".join(base + ([module] if module else []))
            for a in node.names:
                alias = a.asname or a.name
                if _is_project(module):
                    sub = f"{module}.{a.name}"
                    project[alias] = (sub, None) if sub in modules else (module, a.name)
                else:
                    stmt = f"from {node.module} import {a.name}" + (f" as {a.asname}" if a.asname else "")
                    imports[alias] = imports.get(alias, ()) + (stmt,)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef, ast.Assign, ast.AnnAssign)):
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                kind = "assign"
            elif isinstance(node, ast.AnnAssign):
                names = [node.target.id] if isinstance(node.target, ast.Name) and node.value is not None else []
                kind = "assign"
            else:
                names = [node.name]
                kind = "class" if isinstance(node, ast.ClassDef) else "def"
            if not names:
                continue
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            # keep the comment lines right above a definition
            while start > 1 and lines[start - 2].lstrip().startswith("#") and not lines[start - 2].startswith("# ="):
                start -= 1
            text = "".join(lines[start - 1:node.end_lineno])
            for n in names:
                defs[n] = Definition(n, mod, section, i * 100000 + start, text, kind)
        elif (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            continue
    return ModuleIndex(mod, imports, project, defs)


# ============================================================================ references
def _loads(tree: ast.AST) -> set[str]:
    """Names a definition reads at run time (function annotations excluded: they are never
    evaluated; class field annotations included)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                visit(d)
            a = node.args
            for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
                visit(d)
            for s in node.body:
                visit(s)
            return
        if isinstance(node, ast.ClassDef):
            # a class's field annotations are read at run time: dataclasses' type hints drive
            # Plan.from_json
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    visit(stmt.annotation)
        if isinstance(node, ast.AnnAssign):
            visit(node.target)
            if node.value is not None:
                visit(node.value)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            out.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(tree)
    return out


def _strip_project_refs(text: str, idx: ModuleIndex) -> tuple[str, set[tuple[str, str]]]:
    """Remove project imports inside functions and `module.` prefixes of project modules;
    returns the text and the (name, module) project definitions it needs."""
    tree = ast.parse(text)
    needs: set[tuple[str, str]] = set()
    edits: list[tuple[ast.AST, str]] = []
    drop_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or _is_project(node.module)):
            module = node.module or ""
            if node.level:
                module = ".".join(idx.name.split(".")[: -node.level] + ([module] if module else []))
            needs.update((a.name, module) for a in node.names)
            drop_lines.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in idx.project and idx.project[node.value.id][1] is None:
            needs.add((node.attr, idx.project[node.value.id][0]))
            edits.append((node, node.attr))
    for node, new in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        text = _replace_span(text, node, new)
    if drop_lines:
        text = "".join(l for i, l in enumerate(text.splitlines(keepends=True), 1) if i not in drop_lines)
    return text, needs


def _offset(text_lines: list[str], lineno: int, col: int) -> int:
    return sum(len(l) for l in text_lines[: lineno - 1]) + len(text_lines[lineno - 1].encode()[:col].decode())


def _replace_span(text: str, node: ast.AST, new: str) -> str:
    lines = text.splitlines(keepends=True)
    a = _offset(lines, node.lineno, node.col_offset)
    b = _offset(lines, node.end_lineno, node.end_col_offset)
    return text[:a] + new + text[b:]


# ============================================================================ the Plan as data
def _lit(v: Any, indent: int = 0, width: int = 110) -> str:
    """A Python literal for plain data (what `repr` writes for each scalar), wrapped to `width`.
    The only way spec text reaches the script."""
    if isinstance(v, (dict, list, tuple)):
        items = [f"{_lit(k)}: {_lit(x)}" for k, x in v.items()] if isinstance(v, dict) else [_lit(x) for x in v]
        o, c = ("{", "}") if isinstance(v, dict) else ("[", "]") if isinstance(v, list) else ("(", ")")
        flat = o + ", ".join(items) + ("," if isinstance(v, tuple) and len(v) == 1 else "") + c
        if len(flat) + indent <= width or not items:
            return flat
        pad = " " * (indent + 4)
        if isinstance(v, dict):
            items = [f"{_lit(k)}: {_lit(x, indent + 4, width)}" for k, x in v.items()]
        else:
            items = [_lit(x, indent + 4, width) for x in v]
        return o + "\n" + "".join(f"{pad}{it},\n" for it in items) + " " * indent + c
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"cannot write the non-finite float {v!r} into the script")
    if v is None or isinstance(v, (bool, int, float, str)):
        return repr(v)
    raise TypeError(f"no literal for {type(v).__name__}")


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(json.dumps(plan.canonical(), sort_keys=True).encode()).hexdigest()[:16]


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("recurc")
    except Exception:  # noqa: BLE001 - not installed: a source checkout
        return "0+unknown"


def _compiled_plan(plan: Plan) -> str:
    """The script's data section: the run-time knobs and the Plan as one literal."""
    t, m = plan.train, plan.model
    cap = t.max_wallclock_seconds if t.max_wallclock_seconds is not None else 0
    data = plan.to_json()
    data["source"] = {}          # provenance for re-planning; the script never re-plans
    return (
        "class Hyperparameters:\n"
        '    """Run-time knobs (environment variables, in the challenge\'s style); the rest is the Plan."""\n'
        f'    data_path = os.environ.get("DATA_PATH", {_lit(f"./data/datasets/fineweb10B_sp{m.vocab_size}")})\n'
        f'    tokenizer_path = os.environ.get("TOKENIZER_PATH", '
        f'{_lit(f"./data/tokenizers/fineweb_{m.vocab_size}_bpe.model")})\n'
        f'    run_id = os.environ.get("RUN_ID", {_lit(plan.name)})\n'
        '    out_dir = os.environ.get("OUT_DIR", os.path.join("runs", run_id))\n'
        '    device = os.environ.get("DEVICE") or None\n'
        '    compile = bool(int(os.environ.get("COMPILE", int(torch.cuda.is_available()))))\n'
        '    resume = bool(int(os.environ.get("RESUME", 0)))\n'
        '    micro_tokens = int(os.environ.get("MICRO_TOKENS", 0)) or None\n'
        '    log_every = int(os.environ.get("TRAIN_LOG_EVERY", 10))\n'
        f'    val_every = int(os.environ.get("VAL_LOSS_EVERY", {_lit(t.val_every)}))\n'
        f'    seed = int(os.environ.get("SEED", {_lit(t.seed)}))\n'
        f'    iterations = int(os.environ.get("ITERATIONS", {_lit(t.iterations)}))\n'
        f'    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", {_lit(float(cap))})) or None'
        "  # 0: no cap\n\n\n"
        "# The Plan (recurc/ir.py records as data): every tensor with its owner, role, storage and init,\n"
        "# every block, every execution path unrolled, the components, quantization and training settings.\n"
        f"PLAN = Plan.from_json({_lit(data)})\n"
        f'PLAN_HASH = "{plan_hash(plan)}"\n'
    )


def _component_refs(plan: Plan) -> list[tuple[str, str, str]]:
    """(component, module, class) of the torch side of every component the Plan uses."""
    from .components import lookup
    names = sorted({b.activation for b in plan.blocks} | {u.name for u in plan.components})
    out = []
    for n in names:
        if not lookup(n).torch:     # no torch side (a schedule component: its data is in the Plan)
            continue
        module, _, attr = lookup(n).torch.partition(":")
        if not attr.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
            raise ValueError(f"component {n}: its torch reference {lookup(n).torch!r} is not module:Class")
        out.append((n, module, attr))
    return out


def _component_table(plan: Plan) -> str:
    body = ", ".join(f"{_lit(n)}: {attr}" for n, _, attr in _component_refs(plan))
    return f"TORCH_COMPONENTS = {{{body}}}\n"


_TEMPLATE_MAIN = '''\
def torch_component(name: str):
    """The torch side of a component: this script carries exactly those its Plan uses."""
    return TORCH_COMPONENTS[name]


def main() -> int:
    args = Hyperparameters()
    # the knobs the challenge varies per run, and this file's own size as the artifact's code bytes
    plan = dataclasses.replace(
        PLAN, train=dataclasses.replace(PLAN.train, seed=args.seed, iterations=args.iterations,
                                        max_wallclock_seconds=args.max_wallclock_seconds),
        code=dataclasses.replace(PLAN.code, bytes=os.path.getsize(__file__)))
    d = init_distributed(args.device)
    try:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cfg = RunConfig(
            spec_path=__file__, overrides=[], data=os.path.join(args.data_path, "fineweb_train_*.bin"),
            val=os.path.join(args.data_path, "fineweb_val_*.bin"), tokenizer=args.tokenizer_path, out=out,
            resume=args.resume, compile=args.compile, warmup=args.compile, log_json=out / "log.jsonl",
            log_every=max(1, args.log_every), val_every=args.val_every, ckpt_every=0,
            micro_tokens=args.micro_tokens, export=True, progress=None)
        return train_rank(cfg, plan, d)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
'''

# imports the template itself uses
_TEMPLATE_IMPORTS = {"import os", "import sys", "import torch", "import torch.distributed as dist",
                     "from pathlib import Path", "import dataclasses"}


# ============================================================================ emission
@dataclass
class Emitted:
    raw: str
    names: list[str]          # the definitions the script holds, in order

    def packed(self, packing: str) -> str:
        return pack(self.raw, packing)


def _collect(plan: Plan, sources: tuple[Source, ...]) -> tuple[list[Definition], set[str]]:
    """The definitions reachable from the template and the component table, verbatim apart from
    project imports, and the imports they need."""
    index = _index(sources)
    by_name: dict[str, ModuleIndex] = {}
    for mi in index.values():
        for n in mi.defs:
            by_name.setdefault(n, mi)
    roots = _loads(ast.parse(_TEMPLATE_MAIN)) | {"RecurrentLM", "Plan"}
    # walked in a fixed (sorted) order: what it collects is order-free (imports are unioned), and
    # a fixed order keeps it so reproducibly, whatever the process's string-hash seed
    todo: list[tuple[str, str | None]] = [(r, None) for r in sorted(roots) if r not in TEMPLATE_NAMES]
    todo += [(attr, module) for _, module, attr in _component_refs(plan)]
    chosen: dict[tuple[str, str], Definition] = {}
    imports: set[str] = set()
    while todo:
        name, module = todo.pop()
        if name in TEMPLATE_NAMES:
            continue
        mi = index.get(module) if module in index and name in index[module].defs else by_name.get(name)
        if mi is None:
            continue      # a builtin, or a name of a template / import (resolved below)
        if (name, mi.name) in chosen:
            continue
        d = mi.defs[name]
        text, needs = _strip_project_refs(d.text, mi)
        chosen[(name, mi.name)] = Definition(name, d.module, d.section, d.order, text, d.kind)
        for r in sorted(_loads(ast.parse(text))):
            if r in mi.imports:
                imports.update(mi.imports[r])
            elif r in mi.project:
                pmod, obj = mi.project[r]
                if obj is not None:
                    todo.append((obj, pmod))
            elif r in mi.defs:
                todo.append((r, mi.name))
            elif r in by_name:
                todo.append((r, None))
        todo += sorted(needs)
    # one Definition may define several names (a, b = ...), and a name must be defined once
    seen: set[int] = set()
    defs: list[Definition] = []
    names: dict[str, str] = {}
    for d in sorted(chosen.values(), key=lambda d: d.order):
        if d.name in names and names[d.name] != d.module:
            raise ValueError(f"emit: {d.name} is defined in both {names[d.name]} and {d.module}; "
                             "the one-file script needs distinct names")
        names[d.name] = d.module
        if d.order in seen:
            continue
        seen.add(d.order)
        defs.append(d)
    return defs, imports


def _import_block(stmts: set[str]) -> str:
    plain = sorted(s for s in stmts if s.startswith("import "))
    froms = sorted(s for s in stmts if s.startswith("from "))
    # merge `from m import a`, `from m import b`
    merged: dict[str, list[str]] = {}
    for s in froms:
        mod, what = s[5:].split(" import ")
        merged.setdefault(mod, []).append(what)
    std = [s for s in plain]
    lines = std + [f"from {mod} import {', '.join(sorted(set(w)))}" for mod, w in sorted(merged.items())]
    third = ("torch", "numpy", "sentencepiece", "brotli", "zstandard")
    first = [l for l in lines if l.split()[1].split(".")[0] not in third]
    rest = [l for l in lines if l.split()[1].split(".")[0] in third]
    return "\n".join(first) + "\n\n" + "\n".join(rest) + "\n"


def _header(plan: Plan, version: str, h: str) -> str:
    """The script's docstring. It holds no text from the spec: the name and description are
    data literals (`SPEC_NAME`, `SPEC_DESCRIPTION`) written by the serializer right below it,
    so no quote, newline or backslash in them can end the docstring and become code."""
    orders = "  ".join(f"{n}: {plan.canonical_order(n)}" for n in plan.paths if n != "main")
    return (
        f'"""train_gpt.py emitted by recurc {version} (`recurc emit`); do not edit, re-emit from the spec.\n\n'
        f"order {plan.canonical_order()}" + (f"   ({orders})" if orders else "") + "\n"
        f"plan sha256 {h}   {plan.unique_params:,} parameters\n\n"
        "Run:  torchrun --standalone --nproc_per_node=8 train_gpt.py\n"
        "Environment: DATA_PATH (shard directory), TOKENIZER_PATH, SEED, ITERATIONS, MAX_WALLCLOCK_SECONDS\n"
        "(0: no cap), RUN_ID / OUT_DIR; also DEVICE, COMPILE, MICRO_TOKENS, VAL_LOSS_EVERY, TRAIN_LOG_EVERY,\n"
        "RESUME. Writes OUT_DIR/log.jsonl, checkpoint.pt and artifact.bin (the quantized, compressed model).\n"
        '"""\n'
    )


def _spec_text(plan: Plan) -> str:
    """The spec's free text, as data literals (repr) and never inside a docstring or comment."""
    return f"SPEC_NAME = {_lit(plan.name)}\nSPEC_DESCRIPTION = {_lit(plan.description)}\n"


def _section(title: str) -> str:
    return f"# {'=' * 3} {title} {'=' * max(3, 94 - len(title))}\n"


_PREDICTED_BYTES = '''\
def predicted_bytes(plan):
    return None, "the emitted script carries no size model (run `recurc estimate`)"
'''


def emit_source(plan: Plan) -> Emitted:
    """The raw (formatted) script for a Plan."""
    sources = _sources(plan)
    key = _cache_key(plan, sources)
    hit = _EMIT_CACHE.get(key)
    if hit is not None:
        return hit
    version = _version()
    h = plan_hash(plan)
    defs, imports = _collect(plan, sources)
    imports |= _TEMPLATE_IMPORTS
    parts = [_header(plan, version, h), "from __future__ import annotations\n\n", _import_block(imports), "\n",
             _spec_text(plan), "\n"]
    section = None
    for d in defs:
        if d.section != section:
            section = d.section
            parts.append("\n" + _section(f"{section} ({d.module})"))
        parts.append(d.text.rstrip() + "\n\n\n" if d.kind != "assign" else d.text.rstrip() + "\n")
    parts += ["\n" + _section("the compiled plan"), _compiled_plan(plan), _component_table(plan), "\n\n",
              _PREDICTED_BYTES, "\n\n", _section("entry point"), _TEMPLATE_MAIN]
    raw = "".join(parts)
    raw = re.sub(r"\n{4,}", "\n\n\n", raw)
    out = Emitted(raw, [d.name for d in defs])
    if len(_EMIT_CACHE) > 256:
        _EMIT_CACHE.clear()
    _EMIT_CACHE[key] = out
    return out


_EMIT_CACHE: dict[tuple, Emitted] = {}
_PACK_CACHE: dict[tuple[str, str], str] = {}


def _cache_key(plan: Plan, sources: tuple[Source, ...]) -> tuple:
    return (json.dumps(plan.canonical(), sort_keys=True), plan.name, plan.description, _source_key(sources))


# ============================================================================ packing
def _is_doc(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def minify(src: str) -> str:
    """Docstrings, comments and function annotations removed; formatted by ast.unparse."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            a = node.args
            for arg in a.args + a.kwonlyargs + a.posonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
                arg.annotation = None
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.body and _is_doc(node.body[0]):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def pack(raw: str, packing: str) -> str:
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {', '.join(PACKINGS)}, got {packing!r}")
    if packing == "raw":
        return raw
    key = (hashlib.sha256(raw.encode()).hexdigest(), packing)
    if key in _PACK_CACHE:
        return _PACK_CACHE[key]
    mini = pack(raw, "minified") if packing == "lzma" else minify(raw)
    if packing == "minified":
        out = mini
    else:
        blob = lzma.compress(mini.encode("utf-8"), format=lzma.FORMAT_ALONE, preset=9)
        first = raw.splitlines()[0].strip('"').strip()
        out = (f"# {first} [lzma-packed]\n"
               f'import lzma,base64;exec(lzma.decompress(base64.b85decode("{base64.b85encode(blob).decode()}")))\n')
    _PACK_CACHE[key] = out
    return out


def emit(plan: Plan, packing: str = "raw") -> str:
    """The script `recurc emit` writes for this Plan with `packing`."""
    return pack(emit_source(plan).raw, packing)


def emitted_code_bytes(plan: Plan) -> int:
    """Exact UTF-8 bytes of the script `recurc emit` writes with the spec's `code.emit` packing."""
    packing = plan.code.emit or "raw"
    return len(emit(plan, packing).encode("utf-8"))
