"""Emit one self-contained `train_gpt.py` for a spec, and count its bytes exactly.

The script is generated from the code the runtime runs, never from a second copy of it: the
definitions (functions, classes, constants) are cut out of the project's modules with `ast`
(recurc/nn/layers.py, recurc/build.py, recurc/quant.py, runtime/*.py), and only those the
script reaches from its entry point are kept. What the spec fixes is folded in at emission:

* the Plan (parameter table, blocks, every execution path unrolled as a tuple of layer records,
  the depth schedule) and the spec's model, quantization and training settings are written as
  literal data in the script's "compiled spec" section;
* `if` tests whose value the spec decides (compressor, container, GPTQ, XSA, parallel
  residuals, per-pass features, skips, ...) are resolved at emission: the branch not taken is
  cut from the text and code that becomes unreachable is dropped (unused quant schemes,
  compressors, GPTQ, XSA, FiLM, ...);
* project imports are removed (`quant.pack` becomes `pack`) and the imports the kept code needs
  from the standard library, torch, numpy and sentencepiece are written at the top.

Run-time knobs stay environment variables, in the challenge's style: DATA_PATH,
TOKENIZER_PATH, SEED, ITERATIONS, MAX_WALLCLOCK_SECONDS, RUN_ID / OUT_DIR (and DEVICE, COMPILE,
MICRO_TOKENS, VAL_LOSS_EVERY, TRAIN_LOG_EVERY, RESUME).

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
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .plan import Plan

ROOT = Path(__file__).resolve().parents[1]
PACKINGS = ("raw", "minified", "lzma")

# Source modules, in the order their sections appear in the script.
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("recurc.errors", "recurc/errors.py", "errors"),
    ("recurc.atomic", "recurc/atomic.py", "atomic file writes"),
    ("recurc.quantspec", "recurc/quantspec.py", "quantization settings"),
    ("recurc.nn.layers", "recurc/nn/layers.py", "layers"),
    ("recurc.build", "recurc/build.py", "the model: execution paths walked as static tuples"),
    ("runtime.data", "runtime/data.py", "token shards and the data loader"),
    ("runtime.bpb", "runtime/bpb.py", "bits per byte"),
    ("runtime.evaluate", "runtime/evaluate.py", "validation"),
    ("runtime.optim", "runtime/optim.py", "optimizers: Muon for matrices, Adam for the rest"),
    ("recurc.quant", "recurc/quant.py", "quantization, serialization, compression"),
    ("runtime.checkpoint", "runtime/checkpoint.py", "checkpoints"),
    ("runtime.log", "runtime/log.py", "logging"),
    ("runtime.export", "runtime/export.py", "export: the artifact"),
    ("runtime.train", "runtime/train.py", "training"),
)
PROJECT_PREFIXES = ("recurc", "runtime")
_MODULES = {m for m, _, _ in SOURCES}
# Definitions the script provides itself (they read the spec or the package, not data).
TEMPLATE_NAMES = {"SPEC_NAME", "SPEC_DESCRIPTION", "build_model", "predicted_bytes", "Hyperparameters", "SPEC", "PLAN", "main",
                  "NS", "ParamInfo", "BlockInfo", "Layer", "Phase", "PLAN_HASH"}


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
    imports: dict[str, str]          # alias -> import statement for non-project imports
    project: dict[str, tuple[str, str | None]]   # alias -> (project module, object name or None)
    defs: dict[str, Definition]


_INDEX_CACHE: dict[tuple, dict[str, ModuleIndex]] = {}


def _source_key() -> tuple:
    return tuple((p, (ROOT / p).stat().st_mtime_ns) for _, p, _ in SOURCES)


def _index() -> dict[str, ModuleIndex]:
    key = _source_key()
    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = {mod: _index_module(i, mod, path, section)
                             for i, (mod, path, section) in enumerate(SOURCES)}
    return _INDEX_CACHE[key]


def _is_project(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PROJECT_PREFIXES


def _index_module(i: int, mod: str, path: str, section: str) -> ModuleIndex:
    src = (ROOT / path).read_text(encoding="utf-8")
    lines = src.splitlines(keepends=True)
    tree = ast.parse(src)
    imports: dict[str, str] = {}
    project: dict[str, tuple[str, str | None]] = {}
    defs: dict[str, Definition] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                alias = a.asname or a.name.split(".")[0]
                if _is_project(a.name):
                    project[alias] = (a.name, None)
                else:
                    imports[alias] = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
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
                    project[alias] = (sub, None) if sub in _MODULES else (module, a.name)
                else:
                    imports[alias] = f"from {node.module} import {a.name}" + (f" as {a.asname}" if a.asname else "")
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


# ============================================================================ partial evaluation
class _Unknown:
    pass


UNKNOWN = _Unknown()


def _peval(node: ast.AST, env: dict[str, Any]) -> Any:
    """Value of an expression from what the spec fixes (`env` maps expression text to values);
    UNKNOWN where it depends on run-time data."""
    if _root(node) in env.get("__roots__", ()):
        key = ast.unparse(node)
        if key in env:
            return env[key]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        v = _peval(node.operand, env)
        return UNKNOWN if v is UNKNOWN else (not v)
    if isinstance(node, ast.BoolOp):
        vals = [_peval(v, env) for v in node.values]
        is_and = isinstance(node.op, ast.And)
        for v in vals:
            if v is not UNKNOWN and bool(v) != is_and:
                return v      # a False in `and`, a True in `or` decides
        return UNKNOWN if any(v is UNKNOWN for v in vals) else vals[-1]
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        # f"{owner}.film_scale" in by_name: False when no tensor of the Plan has that suffix
        left, right = node.left, node.comparators[0]
        if isinstance(left, ast.JoinedStr) and isinstance(right, ast.Name) and right.id == "by_name" \
                and left.values and isinstance(left.values[-1], ast.Constant) \
                and str(left.values[-1].value).startswith(".") and isinstance(node.ops[0], ast.In):
            suffix = left.values[-1].value
            if not any(n.endswith(suffix) for n in env.get("__param_names__", ())):
                return False
        a, b = _peval(node.left, env), _peval(node.comparators[0], env)
        if a is UNKNOWN or b is UNKNOWN:
            return UNKNOWN
        op = node.ops[0]
        ops = {ast.Eq: lambda x, y: x == y, ast.NotEq: lambda x, y: x != y, ast.Is: lambda x, y: x is y,
               ast.IsNot: lambda x, y: x is not y, ast.In: lambda x, y: x in y, ast.NotIn: lambda x, y: x not in y}
        fn = ops.get(type(op))
        return UNKNOWN if fn is None else fn(a, b)
    if isinstance(node, ast.Tuple):
        vals = [_peval(e, env) for e in node.elts]
        return UNKNOWN if any(v is UNKNOWN for v in vals) else tuple(vals)
    return UNKNOWN


def _root(node: ast.AST) -> str | None:
    """The leftmost name of an expression (`run` of `run.xsa != 1.0`), to skip unparsing most nodes."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Compare):
            node = node.left
        elif isinstance(node, ast.UnaryOp):
            node = node.operand
        elif isinstance(node, ast.BoolOp):
            node = node.values[0]
        else:
            return None


def _with_roots(env: dict[str, Any]) -> dict[str, Any]:
    env = dict(env)
    env["__roots__"] = frozenset(_root(ast.parse(k, mode="eval").body) for k in env if not k.startswith("__"))
    return env


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _fold_once(text: str, env: dict[str, Any]) -> str | None:
    """Resolve the first decidable `if` / conditional expression in `text`; None when none is left."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    parents: dict[int, tuple[ast.AST, str]] = {}
    nodes = list(ast.walk(tree))
    for parent in nodes:
        if not isinstance(parent, (ast.stmt, ast.mod, ast.excepthandler)):
            continue
        for fld in ("body", "orelse", "finalbody"):
            kids = getattr(parent, fld, None)
            for child in kids if isinstance(kids, list) else []:
                parents[id(child)] = (parent, fld)
    for node in nodes:
        if isinstance(node, ast.If):
            v = _peval(node.test, env)
            if v is UNKNOWN:
                continue
            branch = node.body if v else node.orelse
            l0, l1 = node.lineno, node.end_lineno
            ind = _indent_of(lines[l0 - 1])
            if branch and not v and len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If) \
                    and lines[node.orelse[0].lineno - 1].lstrip().startswith("elif"):
                # `elif` becomes the `if`
                e = node.orelse[0].lineno
                new = [lines[e - 1].replace("elif", "if", 1)] + lines[e:l1]
            elif branch and branch[0].lineno <= (node.test.end_lineno if v else node.body[-1].end_lineno):
                # a one-line `if x: stmt` (or `else: stmt`)
                new = [ind + ast.get_source_segment(text, s) + "\n" for s in branch]
            elif branch:
                if v:      # body: from the line after `if ...:` (keeps its leading comments)
                    b0 = node.test.end_lineno + 1
                else:      # else-branch: from the line after `else:`
                    k = branch[0].lineno - 1
                    while k > node.body[-1].end_lineno and not lines[k - 1].strip().startswith("else"):
                        k -= 1
                    b0 = k + 1
                b1 = branch[-1].end_lineno
                body = "".join(lines[b0 - 1:b1])
                new = textwrap.indent(textwrap.dedent(body), ind).splitlines(keepends=True)
            else:
                parent, fld = parents.get(id(node), (None, None))
                siblings = getattr(parent, fld, []) if parent is not None else []
                new = [ind + "pass\n"] if len(siblings) == 1 else []
            if branch and isinstance(branch[-1], (ast.Return, ast.Raise)):
                # what follows the taken `return` in the same block is unreachable
                parent, fld = parents.get(id(node), (None, None))
                if parent is not None:
                    l1 = max(l1, getattr(parent, fld)[-1].end_lineno)
            return "".join(lines[: l0 - 1] + new + lines[l1:])
        if isinstance(node, ast.IfExp):
            v = _peval(node.test, env)
            if v is UNKNOWN:
                continue
            chosen = node.body if v else node.orelse
            seg = ast.get_source_segment(text, chosen)
            return _replace_span(text, node, seg)
    # `if <test>: pass` without else: nothing to keep
    for node in nodes:
        if isinstance(node, ast.If) and not node.orelse and len(node.body) == 1 and isinstance(node.body[0], ast.Pass):
            parent, fld = parents.get(id(node), (None, None))
            if parent is not None and len(getattr(parent, fld)) > 1:
                return "".join(lines[: node.lineno - 1] + lines[node.end_lineno:])
    return None


def _offset(text_lines: list[str], lineno: int, col: int) -> int:
    return sum(len(l) for l in text_lines[: lineno - 1]) + len(text_lines[lineno - 1].encode()[:col].decode())


def _replace_span(text: str, node: ast.AST, new: str) -> str:
    lines = text.splitlines(keepends=True)
    a = _offset(lines, node.lineno, node.col_offset)
    b = _offset(lines, node.end_lineno, node.end_col_offset)
    return text[:a] + new + text[b:]


_FOLD_CACHE: dict[tuple[str, int], str] = {}


def fold(text: str, env: dict[str, Any]) -> str:
    if "if" not in text or not ("by_name" in text or any(k in text or k.replace("'", '"') in text for k in env if not k.startswith("__"))):
        return text
    key = (text, hash(frozenset((k, repr(v)) for k, v in env.items())))
    if key not in _FOLD_CACHE:
        out = text
        while (new := _fold_once(out, env)) is not None:
            out = new
        _FOLD_CACHE[key] = out
    return _FOLD_CACHE[key]


# ============================================================================ references
def _loads(tree: ast.AST) -> set[str]:
    """Names a definition reads at run time (annotations excluded: they are never evaluated)."""
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


def _strip_project_refs(text: str, idx: ModuleIndex) -> tuple[str, set[str]]:
    """Remove project imports inside functions and `module.` prefixes of project modules;
    returns the text and the project names it needs."""
    tree = ast.parse(text)
    needs: set[str] = set()
    edits: list[tuple[ast.AST, str]] = []
    drop_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or _is_project(node.module)):
            needs.update(a.name for a in node.names)
            drop_lines.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and idx.project.get(node.value.id, ("", "x"))[1] is None and node.value.id in idx.project:
            needs.add(node.attr)
            edits.append((node, node.attr))
    for node, new in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        text = _replace_span(text, node, new)
    if drop_lines:
        text = "".join(l for i, l in enumerate(text.splitlines(keepends=True), 1) if i not in drop_lines)
    return text, needs


# ============================================================================ the spec as data
def _lit(v: Any, indent: int = 0, width: int = 100) -> str:
    """A Python literal for plain data (NS for namespaces), wrapped to `width`."""
    if isinstance(v, dict) and v.get("__ns__"):
        items = [(k, x) for k, x in v.items() if k != "__ns__"]
        flat = "NS(" + ", ".join(f"{k}={_lit(x)}" for k, x in items) + ")"
        if len(flat) + indent <= width:
            return flat
        pad = " " * (indent + 4)
        return "NS(\n" + "".join(f"{pad}{k}={_lit(x, indent + 4, width)},\n" for k, x in items) + " " * indent + ")"
    if isinstance(v, dict):
        flat = "{" + ", ".join(f"{_lit(k)}: {_lit(x)}" for k, x in v.items()) + "}"
        if len(flat) + indent <= width:
            return flat
        pad = " " * (indent + 4)
        return "{\n" + "".join(f"{pad}{_lit(k)}: {_lit(x, indent + 4, width)},\n" for k, x in v.items()) \
            + " " * indent + "}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_lit(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"cannot write the non-finite float {v!r} into the script")
    if v is None or isinstance(v, (bool, int, float, str)):
        return repr(v)
    raise TypeError(f"no literal for {type(v).__name__}")


def _ns(**kw: Any) -> dict:
    return {"__ns__": True, **kw}


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(json.dumps(plan.canonical(), sort_keys=True).encode()).hexdigest()[:16]


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("recurc")
    except Exception:  # noqa: BLE001 - not installed: a source checkout
        return "0+unknown"


def _fold_env(plan: Plan) -> dict[str, Any]:
    """Expressions of the extracted code whose value this spec decides."""
    from .quantspec import plan_tensor
    spec = plan.spec
    m, pp, q = spec.model, spec.per_pass, spec.quant
    layers = [l for p in plan.paths.values() for l in p.layers]
    names = set(plan.param_by_name)
    passes = {l.per_pass for l in layers if l.per_pass}
    env: dict[str, Any] = {}

    def uniform(key: str, values: Iterable[Any]) -> None:
        vals = set(values)
        if len(vals) == 1:
            env[key] = vals.pop()

    # model
    uniform("run.parallel", (l.parallel for l in layers))
    uniform("run.xsa", (l.xsa for l in layers))
    uniform("xsa", (l.xsa for l in layers))
    uniform("run.norm_scale != 1.0", (l.norm_scale != 1.0 for l in layers))
    uniform("run.residual_scale != 1.0", (l.residual_scale != 1.0 for l in layers))
    uniform("run.skip_slot is not None", (l.skip_slot is not None for l in layers))
    sinus = pp.iteration_embedding == "sinusoidal"
    uniform("run.depth_row is not None", (sinus and l.depth_index is not None for l in layers))
    env["self.sinusoidal"] = sinus
    env["pp.iteration_embedding == 'sinusoidal'"] = sinus
    uniform("run.cross_repeat", (l.per_pass is not None and l.prev_pass is not None
                                 and f"{l.per_pass}.cross_repeat" in names for l in layers))
    uniform("own is not None", (l.per_pass is not None for l in layers))
    for attr in ("iter_emb", "film_scale", "gamma", "cross_repeat"):
        uniform(f"hasattr(own, {attr!r})", (f"{o}.{attr}" in names for o in passes))
    env["self.gated"] = "skip_gates" in names
    env["not m.tied_embeddings"] = not m.tied_embeddings
    env["self.softcap is not None"] = m.logit_softcap is not None
    env["hasattr(self, 'lm_head')"] = not m.tied_embeddings
    uniform("self.leaky", (b.activation == "leaky_relu2" for b in plan.blocks))
    # quantization
    plans = [plan_tensor(p.shape, "float32", p.group, q) for p in plan.params]
    gqs = [tp.gq for tp in plans if tp.gq is not None]
    env["c.name"] = q.compressor.name
    env["spec.container"] = q.container
    env["spec.container == 'torch'"] = q.container == "torch"
    env["spec.compressor.byte_shuffle"] = q.compressor.byte_shuffle
    env["shuffle"] = q.compressor.byte_shuffle
    if not any(tp.kind == "ternary" for tp in plans):
        env["plan.kind == 'int'"] = True
    gptq = any(tp.kind == "int" and tp.per_row and tp.gq is not None and tp.gq.gptq for tp in plans)
    uniform("gq.gptq", (g.gptq for g in gqs))
    if not gptq:
        env["plan.gq.gptq"] = False
        env["gptq_tensors(plan)"] = []
        env["want"] = []
    uniform("gq.clip.kind", (g.clip.kind for g in gqs))
    uniform("gq.clip.kind == 'percentile'", (g.clip.kind == "percentile" for g in gqs))
    uniform("plan.per_row", (tp.per_row for tp in plans if tp.kind != "passthrough"))
    env["code is None"] = False
    env["pred is not None and 'model_bytes' in report"] = False
    env["__param_names__"] = tuple(names)
    env["self._want_progress"] = False
    env["not self._want_progress"] = True
    return _with_roots(env)


def stale_fold_keys(plan: Plan) -> list[str]:
    """Keys of `_fold_env` that match no expression in the code emit extracts. The keys are
    source text; renaming a condition in runtime/ or recurc/ without updating its key would leave
    the branch unfolded, or fold one that means something else. A test keeps this list empty."""
    exprs: set[str] = set()
    for mi in _index().values():
        for d in mi.defs.values():
            exprs.update(ast.unparse(n) for n in ast.walk(ast.parse(d.text)) if isinstance(n, ast.expr))
    return sorted(k for k in _fold_env(plan) if not k.startswith("__") and k not in exprs)


def _compiled_spec(plan: Plan, version: str, h: str) -> str:
    """The script's data section: hyperparameters, the spec's fixed settings and the Plan."""
    spec = plan.spec
    m, pp, q, t = spec.model, spec.per_pass, spec.quant, spec.train
    out: list[str] = []
    w = out.append
    # ---- hyperparameters
    w("class Hyperparameters:\n")
    w('    """Training settings fixed by the spec, and the run-time knobs (environment variables)."""\n')
    w('    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp%d")\n' % m.vocab_size)
    w('    tokenizer_path = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_%d_bpe.model")\n'
      % m.vocab_size)
    w(f'    run_id = os.environ.get("RUN_ID", {_lit(spec.name)})\n')
    w('    out_dir = os.environ.get("OUT_DIR", os.path.join("runs", run_id))\n')
    w('    device = os.environ.get("DEVICE") or None\n')
    w('    compile = bool(int(os.environ.get("COMPILE", int(torch.cuda.is_available()))))\n')
    w('    resume = bool(int(os.environ.get("RESUME", 0)))\n')
    w('    micro_tokens = int(os.environ.get("MICRO_TOKENS", 0)) or None\n')
    w('    log_every = int(os.environ.get("TRAIN_LOG_EVERY", 10))\n')
    w('    val_every = int(os.environ.get("VAL_LOSS_EVERY", %d))\n' % t.val_every)
    w('    seed = int(os.environ.get("SEED", %d))\n' % t.seed)
    w('    iterations = int(os.environ.get("ITERATIONS", %d))\n' % t.iterations)
    cap = t.max_wallclock_seconds if t.max_wallclock_seconds is not None else 0
    w('    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", %r)) or None  # 0: no cap\n'
      % cap)
    for name in type(t).model_fields:
        if name in ("seed", "iterations", "max_wallclock_seconds"):
            continue
        w(f"    {name} = {_lit(getattr(t, name))}\n")
    w("\n\n")
    # ---- spec data
    groups = {g: _ns(scheme=gq.scheme, bits=gq.bits, clip=_ns(kind=gq.clip.kind, value=gq.clip.value),
                     gptq=gq.gptq, scale_dtype=gq.scale_dtype) for g, gq in q.groups.items()}
    quant = _ns(groups=groups, passthrough_max_numel=q.passthrough_max_numel,
                passthrough_dtype=q.passthrough_dtype, control_dtype=q.control_dtype, container=q.container,
                compressor=_ns(name=q.compressor.name, effective_level=q.compressor.effective_level,
                               byte_shuffle=q.compressor.byte_shuffle))
    model = _ns(vocab_size=m.vocab_size, dim=m.dim, heads=m.heads, kv_heads=m.kv_heads, head_dim=m.head_dim,
                q_gain_init=m.q_gain_init, tied_embeddings=m.tied_embeddings, seq_len=m.seq_len,
                logit_softcap=m.logit_softcap, mlp=_ns(negative_slope=m.mlp.negative_slope),
                rope=_ns(dims=m.rope.dims, base=m.rope.base))
    per_pass = _ns(scope=pp.scope, iteration_embedding=pp.iteration_embedding, timestep_cap=pp.timestep_cap)
    w("# The spec's fixed settings. code.bytes is this file's own size: the code the artifact counts.\n")
    w("SPEC = " + _lit(_ns(name=spec.name, budget=spec.budget, model=model, per_pass=per_pass, quant=quant,
                           code="@CODE@", train="@TRAIN@")).replace("'@CODE@'", "NS(bytes=os.path.getsize(__file__))")
      .replace("'@TRAIN@'", "Hyperparameters()") + "\n\n")
    # ---- plan data
    w(f"# The Plan: every tensor of the artifact (state-dict name, shape, group, owner), in artifact order.\n")
    w("PARAMS = (\n")
    for p in plan.params:
        w(f"    ParamInfo({p.name!r}, {tuple(p.shape)!r}, {p.group!r}, {p.owner!r}),\n")
    w(")\n")
    w("BLOCKS = (  # physical blocks: index, name, MLP hidden width, activation, attention and MLP module\n")
    for b in plan.blocks:
        w(f"    BlockInfo({b.index}, {b.name!r}, {b.mlp_hidden}, {b.activation!r}, {b.attn!r}, {b.mlp!r}),\n")
    w(")\n")
    w("# Execution paths, unrolled: one Layer record per virtual layer, in execution order.\n")
    w("# Layer(index, block, passes, attn, mlp, scalars, per_pass, parallel, xsa, skip_slot, skip_from,\n")
    w("#       prev_pass, norm_scale, residual_scale, depth_index)\n")
    w("PATHS = {\n")
    for name, path in plan.paths.items():
        w(f"    # {name}: {plan.canonical_order(name)}\n")
        w(f"    {name!r}: NS(depth={path.depth}, n_skips={path.n_skips}, layers=(\n")
        for l in path.layers:
            w(f"        Layer({l.index}, {l.block}, {l.passes}, {l.attn!r}, {l.mlp!r}, {l.scalars!r}, {l.per_pass!r}, "
              f"{l.parallel}, {l.xsa}, {l.skip_slot!r}, {l.skip_from!r}, {l.prev_pass!r}, {l.norm_scale!r}, "
              f"{l.residual_scale!r}, {l.depth_index!r}),\n")
        w("    )),\n")
    w("}\n")
    phases = ", ".join(f"Phase({ph.start!r}, {ph.path!r})" for ph in plan.phases)
    w(f"PHASES = ({phases},)  # depth schedule: from training fraction `start`, `path` runs\n")
    w(f'PLAN_HASH = "{h}"\n')
    w("PLAN = NS(spec=SPEC, params=PARAMS, param_by_name={p.name: p for p in PARAMS}, blocks=BLOCKS, paths=PATHS,\n")
    w(f"          layers=PATHS['main'].layers, phases=PHASES, eval_path={plan.eval_path!r},\n")
    w(f"          unique_params={plan.unique_params}, canonical=lambda: {{'plan': PLAN_HASH}})\n")
    return "".join(out)


_TEMPLATE_TYPES = '''\
NS = SimpleNamespace
ParamInfo = namedtuple("ParamInfo", "name shape group owner")
BlockInfo = namedtuple("BlockInfo", "index name mlp_hidden activation attn mlp")
Layer = namedtuple("Layer", "index block passes attn mlp scalars per_pass parallel xsa skip_slot skip_from "
                            "prev_pass norm_scale residual_scale depth_index")
Phase = namedtuple("Phase", "start path")
'''

_TEMPLATE_MAIN = '''\
def build_model(plan, device: torch.device) -> nn.Module:
    """The spec's model, fp32, on `device`."""
    return RecurrentLM(plan).to(device)


def predicted_bytes(plan):
    return None, "the emitted script carries no size model (run `recurc estimate`)"


def main() -> int:
    args = SPEC.train
    d = init_distributed(args.device)
    try:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cfg = RunConfig(
            spec_path=__file__, overrides=[], data=os.path.join(args.data_path, "fineweb_train_*.bin"),
            val=os.path.join(args.data_path, "fineweb_val_*.bin"), tokenizer=args.tokenizer_path, out=out,
            resume=args.resume, compile=args.compile, warmup=args.compile, log_json=out / "log.jsonl",
            log_every=max(1, args.log_every), val_every=args.val_every, ckpt_every=0,
            micro_tokens=args.micro_tokens, export=True, progress=False)
        return train_rank(cfg, SPEC, PLAN, d)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
'''

# imports the template itself uses
_TEMPLATE_IMPORTS = {
    "os": "import os", "sys": "import sys", "torch": "import torch", "nn": "from torch import nn",
    "dist": "import torch.distributed as dist", "Path": "from pathlib import Path",
    "SimpleNamespace": "from types import SimpleNamespace", "namedtuple": "from collections import namedtuple",
}


# ============================================================================ emission
@dataclass
class Emitted:
    raw: str
    names: list[str]          # the definitions the script holds, in order

    def packed(self, packing: str) -> str:
        return pack(self.raw, packing)


def _collect(plan: Plan) -> tuple[list[Definition], dict[str, str], set[str]]:
    """The definitions reachable from the template, folded for this plan, and their imports."""
    index = _index()
    by_name: dict[str, ModuleIndex] = {}
    for mi in index.values():
        for n in mi.defs:
            by_name.setdefault(n, mi)
    env = _fold_env(plan)
    roots = _loads(ast.parse(_TEMPLATE_MAIN)) | _loads(ast.parse(_TEMPLATE_TYPES)) | {"RecurrentLM"}
    todo = [r for r in roots if r not in TEMPLATE_NAMES]
    chosen: dict[str, Definition] = {}
    imports: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in chosen or name in TEMPLATE_NAMES:
            continue
        mi = by_name.get(name)
        if mi is None:
            continue      # a builtin, or a name of a template / import (resolved below)
        d = mi.defs[name]
        if d.kind == "assign" and name in chosen:
            continue
        text, needs = _strip_project_refs(d.text, mi)
        text = fold(text, env)
        new = Definition(name, d.module, d.section, d.order, text, d.kind)
        chosen[name] = new
        refs = _loads(ast.parse(text)) | needs
        for r in refs:
            if r in mi.imports:
                imports[r] = mi.imports[r]
            elif r in mi.project:
                pmod, obj = mi.project[r]
                if obj is not None:
                    todo.append(obj)
            elif r in mi.defs or r in by_name:
                todo.append(r)
    # one Definition object may define several names (a, b = ...): keep each text once
    seen: set[int] = set()
    defs = []
    for d in sorted(chosen.values(), key=lambda d: d.order):
        if d.order in seen:
            continue
        seen.add(d.order)
        defs.append(d)
    return defs, imports, set(chosen)


def _import_block(imports: dict[str, str]) -> str:
    stmts = set(imports.values())
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
    return f"SPEC_NAME = {_lit(plan.spec.name)}\nSPEC_DESCRIPTION = {_lit(plan.spec.description)}\n"


def _section(title: str) -> str:
    return f"# {'=' * 3} {title} {'=' * max(3, 94 - len(title))}\n"


def emit_source(plan: Plan) -> Emitted:
    """The raw (formatted) script for a Plan."""
    key = _cache_key(plan)
    hit = _EMIT_CACHE.get(key)
    if hit is not None:
        return hit
    version = _version()
    h = plan_hash(plan)
    defs, imports, names = _collect(plan)
    for alias, stmt in _TEMPLATE_IMPORTS.items():
        imports.setdefault(alias, stmt)
    parts = [_header(plan, version, h), "from __future__ import annotations\n\n", _import_block(imports), "\n",
             _spec_text(plan), "\n",
             _TEMPLATE_TYPES, "\n\n", _section("the compiled spec"), _compiled_spec(plan, version, h), "\n\n"]
    section = None
    for d in defs:
        if d.section != section:
            section = d.section
            parts.append("\n" + _section(f"{section} ({d.module})"))
        parts.append(d.text.rstrip() + "\n\n\n" if d.kind != "assign" else d.text.rstrip() + "\n")
    parts.append("\n" + _section("entry point") + _TEMPLATE_MAIN)
    raw = "".join(parts)
    raw = re.sub(r"\n{4,}", "\n\n\n", raw)
    out = Emitted(raw, [d.name for d in defs])
    _EMIT_CACHE[key] = out
    return out


_EMIT_CACHE: dict[tuple, Emitted] = {}
_PACK_CACHE: dict[tuple[str, str], str] = {}


def _cache_key(plan: Plan) -> tuple:
    return (json.dumps(plan.canonical(), sort_keys=True, default=str), plan.spec.name, plan.spec.description,
            _source_key())


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
    packing = plan.spec.code.emit or "raw"
    return len(emit(plan, packing).encode("utf-8"))
