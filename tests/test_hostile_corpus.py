"""Hostile-input corpus (issue 13): well over a thousand cases over every command and input kind.

Each case runs one command in a fresh folder of a sandbox and asserts what recurc promises for
any input:
  * exit 0, or a clean failure: exactly one `error:` line on stderr (at file:line:col where the
    input has one), and no Python traceback anywhere in the output;
  * bounded time: a hang detector of HANG_S seconds (it catches a blocked read or an endless
    loop; it is not a speed check);
  * bounded memory: the address space is capped at the case's start plus MEMORY_HEADROOM while it
    runs, so a read of /dev/zero or a decompression bomb ends in MemoryError (a failed case)
    instead of filling the machine;
  * no file created, changed into another kind or removed outside the output folder the case
    names: the sandbox is snapshotted before and after, and the folders a `..` escape would reach
    (/tmp, the sandbox's parents) are probed for the MARK that every escaping name carries.
Most cases run in this process through the entry functions (recurc.cli.main, runtime.train.main,
runtime.export.read_artifact); a few run as processes (`python -m recurc`, `python -m
runtime.train`). Cases come from tables: mutations of the real specs in specs/, hostile strings
and numbers (tests/hostile/strings.json), special files (FIFOs, devices, NUL paths, /proc,
symlink loops, sparse 2 GiB files), damaged checkpoints, Hessians, artifacts and profiles, bad
output paths and full disks (RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk).
All are marked slow but a sample of them, which runs in the fast tier.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import traceback
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRINGS = Path(__file__).with_name("hostile") / "strings.json"
HANG_S = 60                      # a hang detector, far above any case's cost
MEMORY_HEADROOM = 3 * 2**30      # address space a case may add to the process (bytes)
MARK = "hx13"                    # every name meant to escape a folder carries it
FAST = ["model.seq_len=64", "train.tokens_per_step=512", "train.val_tokens=2048", "train.warmup_steps=1",
        "train.iterations=1"]    # a train case that gets as far as training stays cheap
TRAIN_OPTS = ["--device", "cpu", "--no-compile", "--no-warmup", "--no-export", "--no-progress"]
SAMPLE_EVERY = 29                # every 29th case (if it needs no torch) runs in the fast tier too


def _expand(v: Any) -> str:
    return v if isinstance(v, str) else v["prefix"] + v["repeat"] * v["times"] + v["suffix"]


TEXT = {k: [_expand(v) for v in vs] for k, vs in json.loads(STRINGS.read_text()).items()}


# ============================================================================ cases
class Special:
    """A file that is not plain content, made when the case runs."""


@dataclass(frozen=True)
class Fifo(Special):
    pass


@dataclass(frozen=True)
class Folder(Special):
    pass


@dataclass(frozen=True)
class Link(Special):
    target: str


@dataclass(frozen=True)
class Sparse(Special):
    size: int


@dataclass(frozen=True)
class Copy(Special):
    source: str


Content = str | bytes | Special | Callable[["World"], bytes]


@dataclass
class Case:
    id: str
    argv: list[str]                              # ${KEY} is replaced by the world's value
    files: dict[str, Content] = field(default_factory=dict)   # relative to the case folder
    kind: str = "cli"                            # cli | train | api | proc | proc-train
    expect: str = "any"                          # ok | error | any
    where: str | None = None                     # regex the error line must match
    allowed: str = "out"                         # the only folder new files may appear in
    fsize: int | None = None                     # RLIMIT_FSIZE bytes: a full disk past them
    api: Callable[["World", Path], Any] | None = None
    check: Callable[["World", Path, int, str], None] | None = None
    forbid: tuple[str, ...] = ()                 # texts that must not appear in the output


CASES: list[Case] = []


def add(group: str, label: str, argv: list[str], **kw: Any) -> None:
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label)[:48]
    CASES.append(Case(f"{group}-{len(CASES):04d}-{safe}", argv, **kw))


def _spec_files() -> list[str]:
    """Every spec of the library, as paths relative to specs/ (the mutation bases)."""
    return sorted(str(p.relative_to(ROOT / "specs")) for p in (ROOT / "specs").rglob("*.yaml"))


BASES = _spec_files()


def _nested(path: str, value: str) -> str:
    """YAML lines setting the dotted `path` to the raw scalar text `value`."""
    keys = path.split(".")
    lines = [f"{'  ' * i}{k}:" for i, k in enumerate(keys[:-1])]
    lines.append(f"{'  ' * (len(keys) - 1)}{keys[-1]}: {value}")
    return "\n".join(lines) + "\n"


def _overlay(base: str, body: str) -> str:
    return f'extends: "${{S}}/{base}"\n{body}'


def _yaml_str(s: str) -> str:
    """A YAML double-quoted scalar of `s` (JSON's escapes are YAML's)."""
    return json.dumps(s)


IN_SPEC = "in/s.yaml"
AT_SPEC = r"^error: \S*in/s\.yaml:\d+:\d+"        # the error is located in the case's spec
AT_OVERRIDE = r"^error: <override "


def _spec_cmd(cmd: str, spec: str) -> list[str]:
    """The command line of `cmd` with `spec` in its spec position."""
    return {
        "show": ["show", spec],
        "show-json": ["show", spec, "--json"],
        "estimate": ["estimate", spec, "--no-suggest"],
        "estimate-json": ["estimate", spec, "--json"],
        "diff-a": ["diff", spec, "${S}/tiny.yaml", "--no-estimate"],
        "diff-b": ["diff", "${S}/tiny.yaml", spec],
        "variants": ["variants", spec, "-q", "--workers", "1"],
        "render": ["render", spec, "-f", "dot", "-o", "out/graph.dot"],
        "render-mermaid": ["render", spec, "-f", "mermaid"],
        "emit": ["emit", spec, "-o", "out/train_gpt.py"],
        "emit-lzma": ["emit", spec, "-o", "out/train_gpt.py", "--pack", "lzma"],
        "build": ["build", spec],
        "measure": ["measure", spec, "${CK}"],
        "train": ["train", spec, "-o", "out/run", *TRAIN_OPTS, *DATA_ARGS, *FAST],
    }[cmd]


DATA_ARGS = ["--data", "${DATA}", "--val", "${VAL}", "--tokenizer", "${TOK}"]
CHEAP = ["show", "estimate", "emit", "render", "diff-b", "show-json", "build", "render-mermaid", "estimate-json"]


def _compiles(world: "World", case_dir: Path, rc: int, out: str) -> None:
    """An emitted script that was written compiles (text from a spec is data, never code)."""
    path = case_dir / "out" / "train_gpt.py"
    if rc == 0 and path.is_file():
        src = path.read_text()
        m = re.search(r'b85decode\("([^"]+)"\)', src)
        if m:
            import base64
            import lzma
            src = lzma.decompress(base64.b85decode(m.group(1))).decode()
        compile(src, str(path), "exec")


def _kind_kept(world: "World", case_dir: Path, rc: int, out: str) -> None:
    """The character device or FIFO a case wrote to is still one (never replaced by a file)."""
    for name, test in (("null", stat.S_ISCHR), ("fifo", stat.S_ISFIFO)):
        p = case_dir / "out" / name
        assert test(os.lstat(p).st_mode), f"{p} was replaced"


def _no_partial_files(world: "World", case_dir: Path, rc: int, out: str) -> None:
    """A failed write leaves no temp file and no half-written output behind."""
    for p in (case_dir / "out").rglob("*"):
        assert not p.name.endswith(".tmp"), f"temp file left: {p}"
        assert p.name not in ("train_gpt.py", "g.dot", "schema.json", "model.bin", "p.json", "checkpoint.pt"), \
            f"a failed write left {p}"


# ---------------------------------------------------------------- numbers in spec fields
INT_FIELDS = ["model.dim", "model.vocab_size", "train.seed", "train.tokens_per_step"]
FLOAT_FIELDS = ["model.q_gain_init", "model.mlp.mult", "model.logit_softcap", "train.max_wallclock_seconds"]
# values that are never an integer (YAML 1.1 forms, text, floats, non-finite, containers)
NOT_INT = {"nan", ".nan", ".inf", "-.inf", "'512'", '"512"', "01000", "0o1000", "8:32", "1e400", "true",
           "[]", "{}", "1.5", "!!str 512"}
NOT_FLOAT = {"nan", ".nan", ".NaN", ".inf", "-.inf", "+.inf", "1e400", "-1e400", "'0.5'", "1:30", "true", "[]"}

for i, (f, v) in enumerate((f, v) for f in INT_FIELDS for v in TEXT["int_values"]):
    bad = v in NOT_INT
    add("int", f"{f}={v}", _spec_cmd(CHEAP[i % len(CHEAP)], IN_SPEC),
        files={IN_SPEC: _overlay(BASES[i % len(BASES)], _nested(f, v))},
        expect="error" if bad else "any", where=AT_SPEC if bad else None, check=_compiles)
for i, (f, v) in enumerate((f, v) for f in FLOAT_FIELDS for v in TEXT["float_values"]):
    bad = v in NOT_FLOAT
    add("float", f"{f}={v}", _spec_cmd(CHEAP[i % len(CHEAP)], IN_SPEC),
        files={IN_SPEC: _overlay(BASES[(3 * i) % len(BASES)], _nested(f, v))},
        expect="error" if bad else "any", where=AT_SPEC if bad else None, check=_compiles)

# ---------------------------------------------------------------- the same as overrides, every command
OVR_CMDS = ["show", "estimate", "emit", "render", "build", "diff-b", "measure", "variants"]
for i, (f, v) in enumerate((f, v) for f in ("model.dim", "model.q_gain_init", "order", "name", "budget")
                           for v in TEXT["override_values"]):
    cmd = OVR_CMDS[i % len(OVR_CMDS)]
    spec = "${FIX}/sweep.yaml" if cmd == "variants" else "${S}/tiny.yaml"
    bad_number = f in ("model.dim", "train.seed", "model.q_gain_init", "budget") and v not in ("0x200",
                                                                                            "512 # comment")
    add("override", f"{cmd}-{f}={v[:20]}", [*_spec_cmd(cmd, spec), f"{f}={v}"],
        # diff takes no overrides; a sweep reports the variant a bad value spoils
        expect="error" if bad_number else "any",
        where=r"^error: <override" if bad_number and cmd not in ("diff-b", "variants") else None,
        check=_compiles)
for i, v in enumerate(["0x2", "01", "1e3", "0..3", "true", "null", "8:32", "[0, 1]"]):
    # an order is text: an override that looks like a number is still an order string
    add("override-order", v, ["show", "${S}/baseline.yaml", f"order={v}"], expect="any")
for bad in ["model.dim", "=1", "model.=1", "model..dim=1", ".dim=1", "model.dim.x=1", "a" * 5000 + "=1",
            ".".join(["a"] * 2000) + "=1", "model=5", "model.dimm=512", "train=[]", "extends=x.yaml",
            "sweep.model.dim=[1,2]", "quant.groups.mlp.bits=99", "quant.groups.nope.bits=6", "\0=1",
            "model.dim=1\0", "blocks=100000", "order=" + "0," * 2000 + "0", "name=" + "n" * 300]:
    for cmd in ("show", "estimate", "train"):
        add("override-bad", f"{cmd}-{bad[:30]}", [*_spec_cmd(cmd, "${S}/tiny.yaml"), bad], expect="error")

# ---------------------------------------------------------------- hostile names and descriptions
NAME_CMDS = ["show", "emit-lzma", "render", "variants-out", "show-override"]
for i, name in enumerate(TEXT["names"]):
    for cmd in ("emit", NAME_CMDS[i % len(NAME_CMDS)]):
        body = f"name: {_yaml_str(name)}\n"
        if cmd == "variants-out":
            add("name", f"variants-{i}", ["variants", IN_SPEC, "-q", "--workers", "1", "-o", "out/v"],
                files={IN_SPEC: f'extends: "${{S}}/tiny.yaml"\n{body}'
                                "sweep:\n  loop_windows: {layers: 4, width: [1, 2], repeats: [2, 2]}\n"
                                f"  model.dim: [128, {_yaml_str(name)}]\n"})
        elif cmd == "show-override":
            add("name", f"override-{i}", ["show", "${S}/tiny.yaml", f"name={name}"])
        else:
            add("name", f"{cmd}-{i}", _spec_cmd(cmd, IN_SPEC),
                files={IN_SPEC: _overlay(BASES[i % len(BASES)], body)}, check=_compiles)
for i, d in enumerate(TEXT["descriptions"]):
    for cmd in ("emit", ("show", "emit-lzma", "render-mermaid")[i % 3]):
        add("description", f"{cmd}-{i}", _spec_cmd(cmd, IN_SPEC),
            files={IN_SPEC: _overlay("tiny.yaml", f"description: {_yaml_str(d)}\n")}, check=_compiles)

# ---------------------------------------------------------------- orders
for i, o in enumerate(TEXT["orders"]):
    for cmd in (("show", "estimate", "render")[i % 3],):
        add("order", f"{cmd}-{o[:24]}", _spec_cmd(cmd, IN_SPEC),
            files={IN_SPEC: _overlay(BASES[i % len(BASES)], f"order: {_yaml_str(o)}\nblocks: null\n")})
    add("order", f"override-{o[:24]}", ["show", "${S}/baseline.yaml", f"order={o}", "blocks=null"])
    add("order", f"eval-{o[:24]}", ["show", "${S}/tiny.yaml", f"schedule.eval_order={o}"])

# ---------------------------------------------------------------- blocks
BLOCKS = {
    "20000-names": "[" + ", ".join(f"B{i}" for i in range(20000)) + "]",
    "513": "513", "512-unused": "512", "0": "0", "-1": "-1", "1e9": "1000000000", "lowercase": "[a, b]",
    "duplicate": "[A, A]", "long-name": "[" + "A" * 300 + "]", "empty-list": "[]", "text": "'4'",
    "nested": "[[A]]", "mapping": "{A: 1}", "nul": '["A\\0"]', "unicode": "[Ä, B]", "huge-override-ref":
    "[{name: A, attention_from: " + "B" * 300 + "}]", "self-ref": "[{name: A, mlp_from: A}]",
}
for label, v in BLOCKS.items():
    for cmd in ("show", "estimate"):
        add("blocks", f"{cmd}-{label}", _spec_cmd(cmd, IN_SPEC),
            files={IN_SPEC: _overlay("tiny.yaml", f"blocks: {v}\n")})

# ---------------------------------------------------------------- YAML structure
YAML_DOCS: dict[str, str | bytes] = {
    "anchor": "model: &m {dim: 128}\nother: *m\n",
    "alias-merge": "base: &b {dim: 128}\nmodel:\n  <<: *b\n",
    "billion-laughs": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")),
    "tag-python": "name: !!python/object/apply:os.system ['touch /tmp/hx13-pwned']\n",
    "tag-custom": "name: !evil x\n",
    "tag-binary": "name: !!binary aGVsbG8=\n",
    "tag-timestamp": "name: 2001-12-14\n",
    "set": "name: !!set {a, b}\n",
    "omap": "model: !!omap [{dim: 128}]\n",
    "deep-40": "a: " + "[" * 40 + "]" * 40 + "\n",
    "deep-10000": "a: " + "[" * 10000 + "]" * 10000 + "\n",
    "deep-map-100": "".join(f"{'  ' * i}k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n",
    "over-1MB": "description: " + "x" * 1_000_100 + "\n",
    "long-line-900k": "# " + "y" * 900_000 + "\n",
    "100k-keys": "".join(f"k{i}: {i}\n" for i in range(100_000)),
    "invalid-utf8": b"name: \xff\xfe\n",
    "utf16": "name: x\n".encode("utf-16"),
    "bom": "\ufeffname: bom\n",
    "nul-byte": "name: a\0b\n",
    "tab-indent": "model:\n\tdim: 128\n",
    "duplicate-key": "name: a\nname: b\n",
    "top-list": "- 1\n- 2\n",
    "top-scalar": "hello\n",
    "top-number": "42\n",
    "empty": "",
    "comments-only": "# nothing\n",
    "two-docs": "name: a\n---\nname: b\n",
    "doc-end": "name: a\n...\n",
    "complex-key": "? [a, b]\n: 1\n",
    "null-key": "~: 1\n",
    "int-key": "1: x\n",
    "unterminated": "name: 'abc\n",
    "bad-indent": "model:\n  dim: 1\n dim: 2\n",
    "control-chars": "name: \"\\x1b[2J\\x07\"\n",
    "surrogate-escape": 'name: "\\ud800"\n',
    "yes-no": "model:\n  tied_embeddings: yes\n",
    "on-off": "per_pass:\n  film: on\n",
    "Null-spellings": "model:\n  logit_softcap: Null\n",
    "version-directive": "%YAML 1.1\n---\nname: x\n",
    "unknown-directive": "%FOO bar\n---\nname: x\n",
    "huge-int-key": "model:\n  dim: " + "9" * 5000 + "\n",
    "float-key-sweep": "sweep:\n  1.5: [1]\n",
}
for label, doc in YAML_DOCS.items():
    content: Content = doc if isinstance(doc, bytes) else _overlay("tiny.yaml", doc)
    for cmd in (("show", "diff-a", "emit", "variants", "estimate")[len(label) % 5],):
        add("yaml", f"{cmd}-{label}", _spec_cmd(cmd, IN_SPEC), files={IN_SPEC: content},
            forbid=("Traceback",), check=_compiles)
    add("yaml-raw", label, ["show", IN_SPEC],
        files={IN_SPEC: doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass")})

# ---------------------------------------------------------------- extends
SECRET = f"{MARK}-SECRET-first-line: do not echo\n"
EXTENDS: dict[str, tuple[str, dict[str, Content]]] = {
    "dev-zero": ("/dev/zero", {}), "dev-urandom": ("/dev/urandom", {}), "dev-null": ("/dev/null", {}),
    "fifo": ("in/f.yaml", {"in/f.yaml": Fifo()}), "secret-txt": ("${FIX}/secret.txt", {}),
    "secret-yaml-link": ("in/l.yaml", {"in/l.yaml": Link("${FIX}/secret.txt")}),
    "zero-link": ("in/z.yaml", {"in/z.yaml": Link("/dev/zero")}), "etc-shadow": ("/etc/shadow", {}),
    "nul": ("a\\0b.yaml", {}), "dotdot": ("../../../../../../../../etc/passwd.yaml", {}),
    "self": ("s.yaml", {}), "missing": ("nope.yaml", {}), "folder": ("in/d.yaml", {"in/d.yaml": Folder()}),
    "loop-link": ("in/a.yaml", {"in/a.yaml": Link("b.yaml"), "in/b.yaml": Link("a.yaml")}),
    "cycle-2": ("in/c.yaml", {"in/c.yaml": 'extends: s.yaml\n'}),
    "chain-20": ("in/c0.yaml", {f"in/c{i}.yaml": f'extends: c{i + 1}.yaml\n' for i in range(20)}
                 | {"in/c20.yaml": 'extends: "${S}/tiny.yaml"\n'}),
    "sparse-2GiB": ("in/big.yaml", {"in/big.yaml": Sparse(2 * 2**30)}),
    "proc-status": ("/proc/self/status", {}), "empty-string": ("", {}), "number": ("5", {}),
    "long": ("a" * 5000 + ".yaml", {}), "url": ("http://example.com/x.yaml", {}),
    "tilde": ("~/x.yaml", {}), "glob": ("${S}/*.yaml", {}),
}
for label, (target, files) in EXTENDS.items():
    text = "extends: 5\n" if label == "number" else f"extends: {_yaml_str(target)}\nname: x\n"
    for cmd in ("show", ("estimate", "diff-b", "emit")[len(label) % 3]):
        add("extends", f"{cmd}-{label}", _spec_cmd(cmd, IN_SPEC), files={IN_SPEC: text, **files},
            expect="error", forbid=("SECRET",))

# ---------------------------------------------------------------- the spec path itself
SPEC_PATHS: dict[str, tuple[str, dict[str, Content]]] = {
    "missing": ("in/nope.yaml", {}), "empty-string": ("", {}), "nul": ("in/a\0b.yaml", {}),
    "folder": ("in/d.yaml", {"in/d.yaml": Folder()}), "root": ("/", {}), "dot": (".", {}), "dotdot": ("..", {}),
    "fifo": ("in/f.yaml", {"in/f.yaml": Fifo()}), "dev-zero": ("/dev/zero", {}),
    "dev-urandom": ("/dev/urandom", {}), "dev-null": ("/dev/null", {}), "dev-stdin": ("/dev/stdin", {}),
    "zero-link": ("in/z.yaml", {"in/z.yaml": Link("/dev/zero")}),
    "loop-link": ("in/a.yaml", {"in/a.yaml": Link("b.yaml"), "in/b.yaml": Link("a.yaml")}),
    "dangling-link": ("in/x.yaml", {"in/x.yaml": Link("nowhere.yaml")}),
    "proc-status": ("/proc/self/status", {}), "proc-mem": ("/proc/self/mem", {}),
    "long-name": ("in/" + "a" * 300 + ".yaml", {}), "long-path": ("in/" + "a/" * 3000 + "x.yaml", {}),
    "binary": ("in/bin.yaml", {"in/bin.yaml": random.Random(13).randbytes(4096)}),
    "sparse-2GiB": ("in/big.yaml", {"in/big.yaml": Sparse(2 * 2**30)}),
    "secret": ("${FIX}/secret.txt", {}), "dash": ("-", {}), "option-like": ("--spec=x", {}),
    "tilde": ("~/nope.yaml", {}), "glob": ("${S}/*.yaml", {}), "checkpoint-as-spec": ("${CK}", {}),
}
SPEC_CMDS = ["show", "estimate", "diff-a", "diff-b", "variants", "render", "emit", "build", "measure", "train"]
for i, (label, (path, files)) in enumerate(SPEC_PATHS.items()):
    for cmd in ("show", *(SPEC_CMDS[1 + (3 * i + k) % (len(SPEC_CMDS) - 1)] for k in range(3))):
        add("spec-path", f"{cmd}-{label}", _spec_cmd(cmd, path), files=dict(files), expect="error",
            forbid=("SECRET",))

# ---------------------------------------------------------------- output paths
OUTPUTS = {
    "proc": "/proc/nope/x", "proc-file": "/proc/version", "dev-full-dir": "/dev/full/x",
    "parent-is-file": "${FIX}/secret.txt/x", "existing-folder": "out", "nul": "out/a\0b",
    "empty": "", "long-name": "out/" + "n" * 300, "long-path": "out/" + "d/" * 3000 + "x",
    "char-device": "out/null", "fifo": "out/fifo", "sys": "/sys/nope.x",
}
OUTPUT_FILES: dict[str, Content] = {"out/null": Copy("${FIX}/nulldev"), "out/fifo": Fifo(), "out/.keep": ""}
OUT_CMDS = {
    "emit": lambda o: ["emit", "${S}/tiny.yaml", "-o", o],
    "render": lambda o: ["render", "${S}/tiny.yaml", "-f", "dot", "-o", o],
    "render-svg": lambda o: ["render", "${S}/tiny.yaml", "-f", "svg", "-o", o],
    "schema": lambda o: ["schema", "-o", o],
    "variants": lambda o: ["variants", "${FIX}/sweep.yaml", "-q", "--workers", "1", "-o", o,
                           ],
    "measure": lambda o: ["measure", "${S}/tiny.yaml", "${CK}", "-o", o],
    "save-profile": lambda o: ["measure", "${S}/tiny.yaml", "${CK}", "--save-profile", o + ".json"],
    "data-demo": lambda o: ["data", "demo", "-o", o, "--corpus", "${FIX}/corpus.txt", "--vocab-size", "300"],
}
# what a user may rightly ask for: `-o ""` is stdout for schema, the working folder for data demo;
# a profile `out` + .json and demo data into the existing folder `out` are plain outputs
OUTPUT_OK = {("schema", "empty"), ("data-demo", "existing-folder"), ("save-profile", "fifo"),
             ("variants", "existing-folder"), ("variants", "empty")}
OUTPUT_SKIP = {("save-profile", "existing-folder"), ("save-profile", "empty"), ("data-demo", "empty")}
for label, o in OUTPUTS.items():
    for cmd, argv in OUT_CMDS.items():
        if (cmd, label) in OUTPUT_SKIP:
            continue
        # a character device or a FIFO in the way is written through or refused, never replaced
        add("output", f"{cmd}-{label}", argv(o), files=dict(OUTPUT_FILES),
            expect="any" if label == "char-device" or (cmd, label) in OUTPUT_OK else "error",
            check=_kind_kept if label in ("char-device", "fifo") else None)


# ---------------------------------------------------------------- full disks
FULL_DISK = {
    "emit": (["emit", "${S}/tiny.yaml", "-o", "out/train_gpt.py"], 4096),
    "render": (["render", "${S}/loop45x2.yaml", "-f", "dot", "-o", "out/g.dot"], 512),
    "schema": (["schema", "-o", "out/schema.json"], 1024),
    "variants": (["variants", "${FIX}/sweep.yaml", "-q", "--workers", "1", "-o", "out/v"], 256),
    "measure": (["measure", "${S}/tiny.yaml", "${CK}", "-o", "out/model.bin"], 4096),
    "save-profile": (["measure", "${S}/tiny.yaml", "${CK}", "--save-profile", "out/p.json"], 64),
    "data-demo": (["data", "demo", "-o", "out/demo", "--corpus", "${FIX}/corpus.txt", "--vocab-size", "300"],
                  4096),
    "train-checkpoint": (["train", "${S}/tiny.yaml", "-o", "out/run", *TRAIN_OPTS, *DATA_ARGS, *FAST], 65536),
}
for label, (argv, limit) in FULL_DISK.items():
    add("disk-full", label, argv, fsize=limit, expect="error", check=_no_partial_files)


# ---------------------------------------------------------------- weight profiles (quant.weights)
def _profile(**edit: Any) -> Callable[["World"], bytes]:
    """The world's saved profile with keys edited (None deletes a key)."""
    def make(world: "World") -> bytes:
        d = json.loads(world["PROFILE"])
        for k, v in edit.items():
            target, key = (d, k) if "." not in k else (d[k.split(".")[0]], k.split(".")[1])
            if v is None:
                target.pop(key, None)
            else:
                target[key] = v
        return json.dumps(d).encode()
    return make


PROFILES: dict[str, Content] = {
    "valid": _profile(), "nan-text": b'{"name": "p", "beta": NaN}', "infinity": b'{"beta": Infinity}',
    "1e999-gptq": lambda w: _profile(**{"gptq_bits.embedding": "INF"})(w).replace(b'"INF"', b"1e999"),
    "beta-out-of-range": _profile(**{"beta.embedding": 100.0}), "beta-string": _profile(**{"beta.embedding": "2"}),
    "beta-bool": _profile(**{"beta.embedding": True}), "beta-list": _profile(beta=[1, 2]),
    "gptq-huge": _profile(**{"gptq_bits.mlp_out": 1e300}), "gptq-null": _profile(**{"gptq_bits.mlp_out": None}),
    "band-0.6": _profile(band=0.6), "band-negative": _profile(band=-1), "band-text": _profile(band="x"),
    "no-beta": _profile(beta=None), "name-10k": _profile(name="n" * 10000), "top-list": b"[1, 2]",
    "deep-100k": b"[" * 100_000 + b"]" * 100_000, "over-1MB": b" " * 1_000_001 + b"{}", "empty": b"",
    "invalid-utf8": b'{"name": "\xff"}', "bom": b"\xef\xbb\xbf{}", "truncated": lambda w: w["PROFILE"][:40].encode(),
    "extra-role": _profile(**{"beta.bogus": 2.0}), "fifo": Fifo(), "folder": Folder(),
    "dev-zero": Link("/dev/zero"), "sparse": Sparse(2 * 2**30),
}
for label, content in PROFILES.items():
    files = {"in/p.json": content}
    add("profile", f"spec-{label}", ["estimate", IN_SPEC],
        files={**files, IN_SPEC: _overlay("tiny.yaml", "quant:\n  weights: p.json\n")},
        expect="ok" if label == "valid" else "error")
    add("profile", f"override-{label}", ["estimate", "${S}/tiny.yaml", "quant.weights=in/p.json"], files=files,
        expect="ok" if label == "valid" else "error")
    if label in ("valid", "1e999-gptq", "fifo", "deep-100k", "beta-string"):
        add("profile", f"variants-{label}", ["variants", "${FIX}/sweep.yaml", "-q", "--workers", "1",
                                             "quant.weights=in/p.json"], files=files,
            expect="ok" if label == "valid" else "error")
for w in ["", "nope", "auto_", "a\0b.json", "/dev/zero", "../../../../etc/passwd", "x" * 5000 + ".json",
          "/proc/self/status.json", "${FIX}/secret.txt"]:
    add("profile", f"name-{w[:20]}", ["estimate", "${S}/tiny.yaml", f"quant.weights={w}"], expect="error",
        forbid=("SECRET",))

# ---------------------------------------------------------------- anchors
ANCHORS = ["x", "=", "=123", "${S}/tiny.yaml=", "${S}/tiny.yaml=nan", "${S}/tiny.yaml=-5", "${S}/tiny.yaml=0",
           "${S}/tiny.yaml=1e400", "${S}/tiny.yaml=" + "9" * 400, "${S}/tiny.yaml=1_000,000", "/dev/zero=100",
           "in/f.yaml=100", "${FIX}/secret.txt=100", "a\0b.yaml=100", "in/nope.yaml=100", "${S}=100",
           "${S}/tiny.yaml=100=200", "in/bad.yaml=1000", "${S}/baseline.yaml=15815847", "${S}/tiny.yaml=500000"]
ANCHOR_FILES: dict[str, Content] = {"in/f.yaml": Fifo(), "in/bad.yaml": "model: {dim: nan}\n"}
for a in ANCHORS:
    ok = a.endswith(("=15815847", "=500000", "=1_000,000"))
    add("anchor", f"cli-{a[:30]}", ["estimate", "${S}/tiny.yaml", "--anchor", a], files=dict(ANCHOR_FILES),
        expect="ok" if ok else "error", forbid=("SECRET",))
    add("anchor", f"spec-{a[:30]}", ["estimate", IN_SPEC],
        files={**ANCHOR_FILES, IN_SPEC: _overlay("tiny.yaml", f"quant:\n  anchor: {_yaml_str(a)}\n")},
        expect="ok" if ok else "error", forbid=("SECRET",))


# ---------------------------------------------------------------- checkpoints for `measure`
def _torch_file(make: Callable[["World"], Any]) -> Callable[["World"], bytes]:
    def content(world: "World") -> bytes:
        import torch
        buf = io.BytesIO()
        torch.save(make(world), buf)
        return buf.getvalue()
    return content


class _Exec:
    """Unpickling this would run a shell command (weights_only loading must refuse it)."""

    def __reduce__(self):
        return (os.system, (f"touch /tmp/{MARK}-pwned",))


def _sd(world: "World", fn: Callable[[Any], Any] | None = None, drop: int = 0, extra: bool = False) -> dict:
    import torch
    sd = {k: v.clone() for k, v in world["STATE"].items()}
    if fn is not None:
        sd = {k: fn(v) for k, v in sd.items()}
    for k in list(sd)[:drop]:
        del sd[k]
    if extra:
        sd["bogus.weight"] = torch.zeros(3)
    return sd


def _zip_not_torch(world: "World") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"not a pickle")
    return buf.getvalue()


def _t(name: str) -> Callable[[Any], Any]:
    import_torch = lambda: __import__("torch")     # noqa: E731  (torch is imported when a case runs)
    return {
        "nan": lambda v: v.fill_(float("nan")), "inf": lambda v: v.fill_(float("inf")),
        "int": lambda v: v.long(), "bool": lambda v: v > 0, "complex": lambda v: v.to(import_torch().complex64),
        "bf16": lambda v: v.bfloat16(), "half": lambda v: v.half(), "scalar": lambda v: v.sum(),
        "transposed": lambda v: v.t() if v.ndim == 2 else v, "empty": lambda v: v[:0],
        "huge-values": lambda v: v * 1e38, "denormal": lambda v: v * 1e-42,
        "non-contiguous": lambda v: v.t().contiguous().t() if v.ndim == 2 else v,
    }[name]


CHECKPOINTS: dict[str, Content] = {
    "real": _torch_file(lambda w: w["STATE"]), "under-model": _torch_file(lambda w: {"model": w["STATE"], "step": 3}),
    "random": random.Random(1).randbytes(4096), "empty": b"", "text": b"hello\n", "zip-not-torch": _zip_not_torch,
    "truncated-half": lambda w: w["CKBYTES"][: len(w["CKBYTES"]) // 2],
    "truncated-tail": lambda w: w["CKBYTES"][:-200],
    "flipped": lambda w: w["CKBYTES"][:5000] + bytes(b ^ 0xFF for b in w["CKBYTES"][5000:5100]) + w["CKBYTES"][5100:],
    "pickle-exec": pickle.dumps(_Exec(), protocol=2), "torch-exec": _torch_file(lambda w: {"model": _Exec()}),
    "list": _torch_file(lambda w: [1, 2]), "tensor": _torch_file(lambda w: __import__("torch").zeros(3)),
    "dict-no-weights": _torch_file(lambda w: {"a": 1}), "model-list": _torch_file(lambda w: {"model": [1]}),
    "model-numbers": _torch_file(lambda w: {k: 1.0 for k in w["STATE"]}),
    "model-strings": _torch_file(lambda w: {k: "x" for k in w["STATE"]}),
    "missing-keys": _torch_file(lambda w: _sd(w, drop=3)), "extra-key": _torch_file(lambda w: _sd(w, extra=True)),
    "nothing": _torch_file(lambda w: {}),
    "deep-dict": _torch_file(lambda w: {"model": _deep(100)}),
    **{f"tensors-{n}": _torch_file(lambda w, n=n: _sd(w, _t(n))) for n in
       ("nan", "inf", "int", "bool", "complex", "bf16", "half", "scalar", "transposed", "empty", "huge-values",
        "denormal", "non-contiguous")},
    "fifo": Fifo(), "folder": Folder(), "dev-zero": Link("/dev/zero"), "sparse": Sparse(2 * 2**30),
}


def _deep(n: int) -> dict:
    d: dict = {}
    for _ in range(n):
        d = {"x": d}
    return d


for label, content in CHECKPOINTS.items():
    ok = label in ("real", "under-model", "tensors-bf16", "tensors-half", "tensors-non-contiguous",
                   "tensors-denormal")
    maybe = label.startswith("tensors-") or label == "flipped"     # flipped tensor bytes are other weights
    add("checkpoint", f"measure-{label}", ["measure", "${S}/tiny.yaml", "in/ck.pt"], files={"in/ck.pt": content},
        expect="ok" if ok else "any" if maybe else "error")

# ---------------------------------------------------------------- Hessians for `measure --hessians`
GPTQ = ["quant.groups.attention.gptq=true"]


def _hs(fn: Callable[[Any, tuple], Any]) -> Callable[["World"], bytes]:
    def make(world: "World") -> dict:
        return {k: fn(world, tuple(v.shape)) for k, v in world["STATE"].items() if v.ndim == 2}
    return _torch_file(make)


def _eye(world: "World", shape: tuple) -> Any:
    import torch
    return torch.eye(shape[1], dtype=torch.float64)


HESSIANS: dict[str, Content] = {
    "identity": _hs(_eye), "random": random.Random(2).randbytes(2048), "empty": b"",
    "list": _torch_file(lambda w: [1]), "numbers": _torch_file(lambda w: {k: 1.0 for k in w["STATE"]}),
    "strings": _torch_file(lambda w: {k: "x" for k in w["STATE"]}),
    "wrong-size": _hs(lambda w, s: _eye(w, (s[0], s[1] + 1))), "non-square": _hs(lambda w, s: _eye(w, s)[:, :-1]),
    "1-d": _hs(lambda w, s: _eye(w, s)[0]), "nan": _hs(lambda w, s: _eye(w, s) * float("nan")),
    "inf": _hs(lambda w, s: _eye(w, s) * float("inf")), "negative": _hs(lambda w, s: -_eye(w, s)),
    "huge": _hs(lambda w, s: _eye(w, s) * 1e308),
    "unknown-names": _torch_file(lambda w: {"nope.weight": __import__("torch").eye(4)}),
    "int-keys": _torch_file(lambda w: {1: __import__("torch").eye(4)}),
    "pickle-exec": pickle.dumps(_Exec(), protocol=2), "torch-exec": _torch_file(lambda w: {"x": _Exec()}),
    "fifo": Fifo(), "folder": Folder(), "dev-zero": Link("/dev/zero"), "sparse": Sparse(2 * 2**30),
}
for label, content in HESSIANS.items():
    add("hessians", label, ["measure", "${S}/tiny.yaml", "${CK}", "--hessians", "in/h.pt", *GPTQ],
        files={"in/h.pt": content}, expect="ok" if label in ("identity", "unknown-names") else "any"
        if label in ("negative",) else "error")
for p in ("", "in/a\0b.pt", "/dev/urandom", "/proc/self/status", "in/nope.pt"):
    add("hessians", f"path-{p[:16]}", ["measure", "${S}/tiny.yaml", "${CK}", "--hessians", p], expect="error")

# ---------------------------------------------------------------- `train`: preflight and options
TRAIN_BAD = {
    "gpus-0": ["--gpus", "0"], "gpus-neg": ["--gpus", "-3"], "gpus-1000": ["--gpus", "1000"],
    "gpus-text": ["--gpus", "x"], "device-bogus": ["--device", "tpu"], "device-nul": ["--device", "cpu\0"],
    "data-missing": ["--data", "in/nope_*.bin", "--tokenizer", "${TOK}"],
    "data-no-tokenizer": ["--data", "${DATA}"], "tokenizer-missing": [*DATA_ARGS[:4], "--tokenizer", "in/no.model"],
    "tokenizer-fifo": [*DATA_ARGS[:4], "--tokenizer", "in/f"], "tokenizer-garbage": [*DATA_ARGS[:4], "--tokenizer",
                                                                                    "${FIX}/secret.txt"],
    "val-missing": ["--data", "${DATA}", "--val", "in/none_*.bin", "--tokenizer", "${TOK}"],
    "data-is-text": ["--data", "${FIX}/secret.txt", "--val", "${VAL}", "--tokenizer", "${TOK}"],
    "data-fifo": ["--data", "in/f", "--val", "${VAL}", "--tokenizer", "${TOK}"],
    "out-proc": ["-o", "/proc/nope/x"], "out-file": ["-o", "${FIX}/secret.txt"], "out-nul": ["-o", "out/a\0b"],
    "log-proc": ["--log-json", "/proc/nope/log.jsonl"], "steps-neg": ["--steps", "-5"],
    "micro-neg": ["--micro-tokens", "-64"],
    "log-every-text": ["--log-every", "x"], "tokens-not-multiple": ["train.tokens_per_step=100"],
    "seed-overflow": ["train.seed=18446744073709551617"], "seed-negative": ["train.seed=-1"],
    "iterations-0": ["train.iterations=0"], "val-tokens-0": ["train.val_tokens=0"],
    "vocab-mismatch": ["model.vocab_size=64"],
}
for label, extra in TRAIN_BAD.items():
    base = [] if label.startswith(("data-", "tokenizer-", "val-")) else DATA_ARGS
    out = [] if label.startswith("out-") else ["-o", "out/run"]
    add("train", label, ["train", "${S}/tiny.yaml", *out, *TRAIN_OPTS, *FAST, *base, *extra],
        files={"in/f": Fifo()}, expect="any" if label in ("seed-negative", "val-tokens-0", "micro-odd",
                                                            "steps-neg", "iterations-0") else "error",
        allowed="out")
# a spec's name becomes one sanitized folder under runs/ (no -o): train stops at a bad tokenizer
for i, name in enumerate(["../../../../../../../../../../tmp/hx13-escape", "/tmp/hx13-abs", "..", "hx13/../..",
                          "x\ny", "n" * 300]):
    add("train-name", f"{i}", ["train", "${S}/tiny.yaml", f"name={name}", *TRAIN_OPTS, *FAST, *DATA_ARGS[:4],
                               "--tokenizer", "${FIX}/secret.txt"], allowed="runs", expect="error")


# ---------------------------------------------------------------- `train --resume`
def _ck(edit: Callable[[dict], dict]) -> Callable[["World"], bytes]:
    def make(world: "World") -> Any:
        import torch
        state = torch.load(io.BytesIO(world["RUNCK"]), weights_only=True)
        return edit(state)
    return _torch_file(make)


def _set(**kv: Any) -> Callable[[dict], dict]:
    return lambda s: {**s, **kv}


RESUME: dict[str, Content] = {
    "real": lambda w: w["RUNCK"], "random": random.Random(3).randbytes(4096), "empty": b"",
    "pickle-exec": pickle.dumps(_Exec(), protocol=2), "torch-exec": _torch_file(lambda w: {"version": 1, "x": _Exec()}),
    "list": _torch_file(lambda w: [1]), "plain-state-dict": _torch_file(lambda w: w["STATE"]),
    "version-2": _ck(_set(version=2)), "foreign-spec": _ck(_set(spec='{"model": "another"}')),
    "step-negative": _ck(_set(step=-1)), "step-text": _ck(_set(step="3")), "step-bool": _ck(_set(step=True)),
    "no-model": _ck(lambda s: {k: v for k, v in s.items() if k != "model"}),
    "model-shapes": _ck(lambda s: {**s, "model": {k: v[:1] for k, v in s["model"].items()}}),
    "model-non-tensor": _ck(lambda s: {**s, "model": {k: 1 for k in s["model"]}}),
    "optimizers-empty": _ck(_set(optimizers=[])), "optimizers-garbage": _ck(_set(optimizers=[{"state": 1}])),
    "loader-empty": _ck(_set(loader={})), "loader-huge-position": _ck(lambda s: {**s, "loader": {
        k: (10**15 if isinstance(v, int) else v) for k, v in s["loader"].items()}}),
    "rng-empty": _ck(_set(rng={})), "rng-garbage": _ck(_set(rng={"torch": 1, "python": [1]})),
    "ema-garbage": _ck(_set(ema={"x": 1})), "elapsed-nan": _ck(_set(elapsed=float("nan"))),
    "truncated": lambda w: w["RUNCK"][: len(w["RUNCK"]) // 3], "folder": Folder(), "fifo": Fifo(),
    "dev-zero": Link("/dev/zero"),
}
for label, content in RESUME.items():
    add("resume", label, ["train", "${S}/tiny.yaml", "-o", "out/run", "--resume", *TRAIN_OPTS, *DATA_ARGS,
                          *FAST], files={"out/run/checkpoint.pt": content},
        expect="ok" if label == "real" else "any" if label in ("loader-huge-position", "elapsed-nan",
                                                                "ema-garbage") else "error")

# ---------------------------------------------------------------- `python -m runtime.train`, in this process
DIRECT = {
    "bad-spec": ["in/nope.yaml"], "bad-override": ["${S}/tiny.yaml", "model.dim=nan"],
    "fifo-spec": ["in/f"], "no-tokenizer": ["${S}/tiny.yaml", "--data", "${DATA}"],
    "resume-garbage": ["${S}/tiny.yaml", "--resume"], "tokens-not-multiple": ["${S}/tiny.yaml", "train.tokens_per_step=100"],
    "name-escape": ["${S}/tiny.yaml", "name=../../../../../../../../tmp/hx13-direct", "--tokenizer", "${FIX}/secret.txt"],
    "out-proc": ["${S}/tiny.yaml", "--out", "/proc/nope/x"], "log-proc": ["${S}/tiny.yaml", "--log-json", "/proc/n/x"],
    "unknown-option": ["${S}/tiny.yaml", "--bogus"], "tokenizer-garbage": ["${S}/tiny.yaml", "--tokenizer",
                                                                          "${FIX}/secret.txt"],
}
for label, argv in DIRECT.items():
    has_data = "--data" in argv
    opts = [*TRAIN_OPTS, *FAST, *(() if has_data else DATA_ARGS[:4])]
    if "--tokenizer" not in argv and not has_data:
        opts += ["--tokenizer", "${TOK}"]
    out = [] if any(a in argv for a in ("--out",)) or label == "name-escape" else ["--out", "out/run"]
    # the case's own overrides come last, so they win over FAST
    add("direct", label, [argv[0], *out, *opts, *argv[1:]], kind="train", expect="error",
        files={"in/f": Fifo(), "out/run/checkpoint.pt": b"garbage"}, allowed="runs" if label == "name-escape" else "out")

# ---------------------------------------------------------------- `data demo`
DEMO_BAD = {
    "vocab-0": ["--vocab-size", "0"], "vocab-neg": ["--vocab-size", "-1"], "vocab-huge": ["--vocab-size", "10000000"],
    "vocab-text": ["--vocab-size", "x"], "corpus-none": ["--corpus", "in/none*.txt"],
    "corpus-fifo": ["--corpus", "in/f"], "corpus-dev-zero": ["--corpus", "/dev/zero"],
    "corpus-sparse": ["--corpus", "in/big.txt", "--max-bytes", "1000"], "corpus-binary": ["--corpus", "in/bin.txt"],
    "corpus-empty": ["--corpus", "in/empty.txt"], "max-bytes-neg": ["--corpus", "${FIX}/corpus.txt",
                                                                    "--max-bytes", "-1"],
    "out-proc": ["-o", "/proc/nope/demo"], "out-file": ["-o", "${FIX}/secret.txt"], "out-nul": ["-o", "out/a\0b"],
    "what-bogus": [], "corpus-nul": ["--corpus", "in/a\0b"],
}
for label, extra in DEMO_BAD.items():
    argv = ["data", "bogus" if label == "what-bogus" else "demo"]
    if "-o" not in extra:
        argv += ["-o", "out/demo"]
    if "--vocab-size" not in extra:
        argv += ["--vocab-size", "300"]
    if "--corpus" not in extra:
        argv += ["--corpus", "${FIX}/corpus.txt"]
    add("data-demo", label, [*argv, *extra], expect="any" if label in ("max-bytes-neg",) else "error",
        files={"in/f": Fifo(), "in/big.txt": Sparse(2 * 2**30), "in/bin.txt": random.Random(4).randbytes(5000),
               "in/empty.txt": ""})
add("data-demo", "small-ok", ["data", "demo", "-o", "out/demo", "--corpus", "${FIX}/corpus.txt", "--vocab-size",
                              "300"], expect="ok")

# ---------------------------------------------------------------- `variants`: sweeps
SWEEPS = {
    "1.4M": "sweep:\n  model.dim: [" + ", ".join(str(64 * i) for i in range(1, 121)) + "]\n"
            "  train.seed: [" + ", ".join(map(str, range(120))) + "]\n  model.heads: [" + ", ".join(
                map(str, range(1, 101))) + "]\n",
    "loop-windows-huge": "sweep:\n  loop_windows: {layers: [1, 1000000000000], width: [1, 3], repeats: [2, 4]}\n",
    "loop-windows-500": "sweep:\n  loop_windows: {layers: [1, 500], width: [1, 500], repeats: [1, 500]}\n",
    "plc-huge": "sweep:\n  prelude_loop_coda: {prelude: [0, 512], shared: [1, 512], loops: [1, 512], coda: [0, 512]}\n",
    "plc-neg": "sweep:\n  prelude_loop_coda: {shared: [-5, 2], loops: 2}\n",
    "loop-windows-bool": "sweep:\n  loop_windows: {layers: true, width: 1, repeats: 2}\n",
    "loop-windows-float": "sweep:\n  loop_windows: {layers: 11.5, width: 1, repeats: 2}\n",
    "loop-windows-extra": "sweep:\n  loop_windows: {layers: 11, width: 1, repeats: 2, evil: 1}\n",
    "axis-escape": "sweep:\n  model.dim: [512]\n  name: ['../../../../../../../tmp/hx13-v', '/tmp/hx13-w']\n",
    "axis-bad-path": "sweep:\n  __class__.__init__: [1]\n", "axis-dunder": "sweep:\n  model.__dict__: [1]\n",
    "axis-empty": "sweep:\n  model.dim: []\n", "axis-nan": "sweep:\n  model.dim: [.nan]\n",
    "axis-strings": "sweep:\n  model.dim: ['512', '576']\n", "axis-octal": "sweep:\n  model.dim: [01000]\n",
    "axis-300-values": "sweep:\n  train.seed: [" + ", ".join(map(str, range(300))) + "]\n",
    "rank-injection": "sweep:\n  model.dim: [512]\n  rank: \"__import__('os').system('touch /tmp/hx13-pwned')\"\n",
    "rank-unknown": "sweep:\n  model.dim: [512]\n  rank: nope\n", "top-negative": "sweep:\n  model.dim: [512]\n  top: -1\n",
    "top-huge": "sweep:\n  model.dim: [512]\n  top: 1e400\n",
    "constraints-bad": "sweep:\n  model.dim: [512]\n  constraints: {max_total_bytes: nan}\n",
    "constraints-unknown": "sweep:\n  model.dim: [512]\n  constraints: {evil: 1}\n",
    "constraints-list": "sweep:\n  model.dim: [512]\n  constraints: [1]\n",
    "sweep-list": "sweep: [1, 2]\n", "sweep-empty": "sweep: {}\n", "sweep-text": "sweep: x\n",
    "names-collide": "sweep:\n  description: ['a/b', 'a-b', 'a b', 'a?b']\n",
}
for label, body in SWEEPS.items():
    for flags in ([], ["--max", "10"]):
        add("variants", f"{label}{'-max10' if flags else ''}",
            ["variants", IN_SPEC, "-q", "--workers", "1", "-o", "out/v", *flags],
            files={IN_SPEC: _overlay("tiny.yaml", body)},
            expect="any" if label in ("axis-escape", "names-collide", "axis-300-values", "loop-windows-500",
                                      "top-negative", "rank-unknown") else "error")
for label, flags in {"max-0": ["--max", "0"], "max-neg": ["--max", "-1"], "max-huge": ["--max", "10" * 20],
                     "max-text": ["--max", "x"], "top-neg": ["--top", "-1"], "top-0": ["--top", "0"],
                     "workers-0": ["--workers", "0"], "workers-neg": ["--workers", "-4"],
                     "workers-huge": ["--workers", "100000"], "rank-bad": ["--rank", "-,-"],
                     "rank-injection": ["--rank", "__import__('os')"], "out-proc": ["-o", "/proc/nope/v"],
                     "out-file": ["-o", "${FIX}/secret.txt"]}.items():
    add("variants-cli", label, ["variants", "${FIX}/sweep.yaml", "-q", *flags],
        expect="any" if label in ("top-0", "top-neg", "workers-huge", "max-huge") else "error")


# ---------------------------------------------------------------- artifacts: runtime.export.read_artifact
def _read_artifact(compressor: str) -> Callable[["World", Path], Any]:
    def run(world: "World", case_dir: Path) -> Any:
        from runtime.export import read_artifact
        return read_artifact(case_dir / "in" / "model.bin", world.plan(compressor))
    return run


def _damage(compressor: str, kind: str) -> Content:
    def make(world: "World") -> bytes:
        good: bytes = world[f"ART:{compressor}"]
        raw: bytes = world[f"RAW:{compressor}"]
        n = len(good)
        return {
            "good": lambda: good, "empty": lambda: b"", "one-byte": lambda: good[:1],
            "truncated-half": lambda: good[: n // 2], "truncated-last": lambda: good[:-1],
            "flip-10": lambda: _flip(good, n // 10), "flip-50": lambda: _flip(good, n // 2),
            "flip-90": lambda: _flip(good, 9 * n // 10), "appended": lambda: good + b"trailing garbage",
            "random": lambda: random.Random(5).randbytes(n),
            "bomb": lambda: world[f"BOMB:{compressor}"],
            "inner-random": lambda: world.compress(compressor, random.Random(6).randbytes(len(raw))),
            "inner-truncated": lambda: world.compress(compressor, raw[: len(raw) // 2]),
            "inner-appended": lambda: world.compress(compressor, raw + b"\0" * 100),
            "inner-zeros": lambda: world.compress(compressor, b"\0" * len(raw)),
        }[kind]()
    return make


def _flip(b: bytes, at: int) -> bytes:
    return b[:at] + bytes([b[at] ^ 0x5A]) + b[at + 1:]


for comp in ("zlib", "lzma", "zstd", "brotli"):
    for kind in ("good", "empty", "one-byte", "truncated-half", "truncated-last", "flip-10", "flip-50", "flip-90",
                 "appended", "random", "bomb", "inner-random", "inner-truncated", "inner-appended", "inner-zeros"):
        add("artifact", f"{comp}-{kind}", [], kind="api", api=_read_artifact(comp),
            files={"in/model.bin": _damage(comp, kind)},
            expect="ok" if kind == "good" else "any" if kind in ("flip-10", "flip-50", "flip-90", "appended",
                                                                 "inner-zeros", "inner-appended") else "error")
for label, content in {"fifo": Fifo(), "folder": Folder(), "dev-zero": Link("/dev/zero"),
                       "sparse": Sparse(2 * 2**30), "missing": Link("nowhere")}.items():
    add("artifact", f"path-{label}", [], kind="api", api=_read_artifact("zlib"), files={"in/model.bin": content},
        expect="error")


def _save_checkpoint_on_full_disk(world: "World", case_dir: Path) -> Any:
    from runtime.checkpoint import save_checkpoint
    return save_checkpoint(case_dir / "out" / "checkpoint.pt", {"model": world["STATE"], "step": 1})


add("disk-full", "save_checkpoint-api", [], kind="api", api=_save_checkpoint_on_full_disk, fsize=65536,
    expect="error", check=_no_partial_files)

# ---------------------------------------------------------------- as processes (exit status, stderr, limits)
PROCS = {
    "show-dev-zero": (["show", "/dev/zero"], {}), "show-fifo": (["show", "in/f.yaml"], {"in/f.yaml": Fifo()}),
    "extends-dev-zero": (["show", IN_SPEC], {IN_SPEC: "extends: /dev/zero\n"}),
    "sweep-1.4M": (["variants", IN_SPEC], {IN_SPEC: _overlay("tiny.yaml", SWEEPS["1.4M"])}),
    "emit-full-disk": (["emit", "${S}/tiny.yaml", "-o", "out/train_gpt.py"], {}),
    "measure-proc": (["measure", "${S}/tiny.yaml", "${CK}", "-o", "/proc/nope/x.bin"], {}),
}
for label, (argv, files) in PROCS.items():
    add("proc", label, argv, kind="proc", files=files, expect="error",
        fsize=4096 if "full-disk" in label else None)
for label, (argv, files) in {
        "bad-spec": (["in/nope.yaml"], {}), "resume-garbage": (["${S}/tiny.yaml", "--resume", "--out", "out/run",
                                                               *DATA_ARGS], {"out/run/checkpoint.pt": b"garbage"})}.items():
    add("proc-train", label, [*argv, *TRAIN_OPTS, *FAST], kind="proc-train", files=files, expect="error")


# ============================================================================ the sandbox
class World:
    """The sandbox every case runs in: copies of specs/ and examples/, fixed inputs (FIFOs, a
    device node, a secret, a corpus), and lazily built heavy inputs (demo data, a checkpoint, a
    real training checkpoint, artifacts for each compressor, a saved profile)."""

    def __init__(self, root: Path, demo_factory: Callable[[], Any]) -> None:
        self.root = root
        self.case_dir = root / "case"
        self._demo_factory = demo_factory
        self._values: dict[str, Any] = {}
        shutil.copytree(ROOT / "specs", root / "specs")
        shutil.copytree(ROOT / "examples", root / "examples")
        fix = root / "fix"
        fix.mkdir()
        (fix / "secret.txt").write_text(SECRET)
        (fix / "sweep.yaml").write_text('extends: ../specs/tiny.yaml\nname: sweep\nsweep:\n  model.dim: [128, 192]\n')
        (fix / "corpus.txt").write_text("\n\n".join(
            f"Paragraph {i}: the quick brown fox jumps over the lazy dog, again and again." * 6 for i in range(60)))
        os.mknod(fix / "nulldev", stat.S_IFCHR | 0o666, os.makedev(1, 3))    # a /dev/null of our own
        self._values.update(S=root / "specs", EX=root / "examples", FIX=fix)

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            self._values.update(self._build(key))
        return self._values[key]

    def _build(self, key: str) -> dict[str, Any]:
        fix = self.root / "fix"
        if key in ("DATA", "VAL", "TOK"):
            d = self._demo_factory()
            return {"DATA": d.train_pattern, "VAL": d.val_pattern, "TOK": str(d.tokenizer_path)}
        if key in ("STATE", "CK", "CKBYTES"):
            import torch
            g = torch.Generator().manual_seed(13)
            state = {p.name: (torch.ones(p.shape) if p.group in ("scalars", "per_pass") else 0.5 * torch.randn(
                p.shape, generator=g)) + 0.05 * torch.randn(p.shape, generator=g) for p in self.plan("zlib").params}
            torch.save(state, fix / "ck.pt")
            return {"STATE": state, "CK": fix / "ck.pt", "CKBYTES": (fix / "ck.pt").read_bytes()}
        if key == "RUNCK":
            from runtime.train import main
            run = fix / "run"
            with contextlib.redirect_stdout(io.StringIO()):
                rc = main([str(self["S"] / "tiny.yaml"), "--out", str(run), *TRAIN_OPTS,
                           *(self.subst(a) for a in DATA_ARGS), *FAST, "train.iterations=2"])
            assert rc == 0
            return {"RUNCK": (run / "checkpoint.pt").read_bytes()}
        if key == "PROFILE":
            from recurc.measure import measure
            measure(self["CK"], self.plan("zlib"), save_profile=fix / "profile.json")
            return {"PROFILE": (fix / "profile.json").read_text()}
        kind, _, comp = key.partition(":")
        if kind in ("ART", "RAW", "BOMB"):
            from recurc import quant
            from recurc.measure import measure
            from runtime.export import artifact_limit
            plan = self.plan(comp)
            art = fix / f"model-{comp}.bin"
            measure(self["CK"], plan, output=art)
            blob = art.read_bytes()
            limit = artifact_limit(plan)
            # more zeros than the plan's artifact can hold: a bounded read must stop at the limit
            return {f"ART:{comp}": blob, f"RAW:{comp}": quant.decompress(blob, plan.quant.compressor, limit),
                    f"BOMB:{comp}": self.compress(comp, b"\0" * (2 * limit))}
        raise KeyError(key)

    def compress(self, comp: str, data: bytes) -> bytes:
        from recurc import quant
        return quant.compress(data, self.plan(comp).quant.compressor)

    def plan(self, comp: str) -> Any:
        from recurc.plan import make_plan
        from recurc.spec import load_spec
        over = [] if comp == "zlib" else [f"quant.compressor.name={comp}", "quant.container=recurc"]
        return make_plan(load_spec(ROOT / "specs" / "tiny.yaml", over))

    def subst(self, s: str) -> str:
        # only the world's own keys: a hostile string may hold `${HOME}` and must stay as it is
        return re.sub(r"\$\{(S|EX|FIX|DATA|VAL|TOK|CK)\}", lambda m: str(self[m[1]]), s)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("hostile")

    def demo() -> Any:
        from runtime.demo import build_demo_data
        return build_demo_data(tmp_path_factory.getbasetemp() / "demo")   # shared with test_train's fixture
    return World(root, demo)


def _make(world: World, case_dir: Path, files: dict[str, Content]) -> None:
    for rel, content in files.items():
        p = case_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Fifo):
            os.mkfifo(p)
        elif isinstance(content, Folder):
            p.mkdir()
        elif isinstance(content, Link):
            os.symlink(world.subst(content.target), p)
        elif isinstance(content, Sparse):
            with open(p, "wb") as f:
                f.truncate(content.size)
        elif isinstance(content, Copy):
            src = Path(world.subst(content.source))
            if stat.S_ISCHR(src.stat().st_mode):
                os.mknod(p, stat.S_IFCHR | 0o666, src.stat().st_rdev)
            else:
                shutil.copy(src, p)
        elif callable(content):
            p.write_bytes(content(world))
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(world.subst(content), encoding="utf-8", errors="surrogatepass")


def _tree(root: Path, skip: Path) -> dict[str, int]:
    """Every path under `root` but `skip`, with its file type (a file turned into a link counts)."""
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = d / n
            if p != skip:
                out[str(p.relative_to(root))] = stat.S_IFMT(os.lstat(p).st_mode)
    return out


def _escapes(world: World) -> set[str]:
    """Paths carrying MARK where a `..` or absolute name would land outside the sandbox."""
    found = set()
    for d in {Path("/tmp"), world.root.parent, world.root.parent.parent}:
        with contextlib.suppress(OSError):
            found |= {str(d / n) for n in os.listdir(d) if MARK in n}
    return found


class _Hang(BaseException):
    """The hang detector fired (a BaseException: no `except Exception` in recurc swallows it)."""


@contextlib.contextmanager
def _limits(fsize: int | None):
    """Hang detector, address-space cap and (optionally) a full disk, for this process."""
    fired = []

    def on_alarm(signum, frame):
        fired.append(True)
        raise _Hang(f"no result after {HANG_S} s")
    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HANG_S)
    vm = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024
    old_as = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + MEMORY_HEADROOM, old_as[1]))
    old_fs = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
    if fsize is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, old_fs[1]))
    try:
        yield fired
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_FSIZE, old_fs)
        resource.setrlimit(resource.RLIMIT_AS, old_as)
        signal.signal(signal.SIGXFSZ, old_xfsz)
        signal.signal(signal.SIGALRM, old_alarm)


def _in_process(case: Case, world: World, argv: list[str]) -> tuple[int | None, str, str]:
    from recurc.cli import main as cli_main
    from recurc.errors import SpecError
    from runtime.train import main as train_main
    out, err = io.StringIO(), io.StringIO()
    rc: int | None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _limits(case.fsize) as fired:
        try:
            if case.kind == "cli":
                rc = cli_main(argv)
            elif case.kind == "train":
                rc = train_main(argv)
            else:
                assert case.api is not None
                try:
                    case.api(world, world.case_dir)
                    rc = 0
                except SpecError as exc:        # what a command would print
                    print(f"error: {exc.render()}", file=sys.stderr)
                    rc = 2
        except SystemExit as exc:               # argparse, or `raise SystemExit(message)`
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                rc = 1
            else:
                rc = exc.code or 0
        except BaseException:                   # noqa: B036  (anything else is the defect we look for)
            rc = None
            print(traceback.format_exc(), file=sys.stderr)
    assert not fired, f"{case.id}: the hang detector fired after {HANG_S} s\n{err.getvalue()[-2000:]}"
    return rc, out.getvalue(), err.getvalue()


def _as_process(case: Case, argv: list[str], case_dir: Path) -> tuple[int | None, str, str]:
    module = "runtime.train" if case.kind == "proc-train" else "recurc"

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, resource.RLIM_INFINITY))
        if case.fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, resource.RLIM_INFINITY))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", module, *argv], cwd=case_dir, capture_output=True,
                       text=True, timeout=HANG_S, preexec_fn=limits, env=env, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def run_case(case: Case, world: World) -> None:
    case_dir = world.case_dir
    if case_dir.exists():
        shutil.rmtree(case_dir)
    (case_dir / "in").mkdir(parents=True)
    (case_dir / "out").mkdir()
    argv = [world.subst(a) for a in case.argv]
    _make(world, case_dir, case.files)
    allowed = case_dir / case.allowed
    before, escapes = _tree(world.root, allowed), _escapes(world)
    cwd = os.getcwd()
    os.chdir(case_dir)
    try:
        if case.kind.startswith("proc"):
            rc, out, err = _as_process(case, argv, case_dir)
        else:
            rc, out, err = _in_process(case, world, argv)
    finally:
        os.chdir(cwd)
    text = out + err
    show = f"{case.id}: rc={rc}\n--- stderr ---\n{err[-3000:]}\n--- stdout ---\n{out[-1500:]}"
    assert rc is not None and "Traceback" not in text, show
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if rc == 0 or (rc == 1 and argv[:1] == ["diff"] and not errors):
        assert not errors, show
        assert case.expect != "error", f"expected an error\n{show}"
    else:
        assert len(errors) == 1, f"expected one error line\n{show}"
        assert case.expect != "ok", f"expected success\n{show}"
        if case.where:
            assert re.search(case.where, errors[0]), f"error not located at {case.where}\n{show}"
    for word in case.forbid:
        assert word not in text, f"{word!r} echoed\n{show}"
    after = _tree(world.root, allowed)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert not changed, f"{case.id}: files created, changed or removed outside {case.allowed}/: {sorted(changed)[:10]}"
    assert _escapes(world) == escapes, f"{case.id}: a path escaped: {_escapes(world) - escapes}"
    if case.check is not None:
        case.check(world, case_dir, rc, text)


def _param(i: int, case: Case) -> Any:
    # the fast tier's sample needs no torch: no training, measuring, building or checkpoints
    torch_free = case.kind == "cli" and case.argv[0] not in ("train", "measure", "build", "data") \
        and "${CK}" not in case.argv and not any(callable(c) for c in case.files.values())
    fast = i % SAMPLE_EVERY == 0 and torch_free
    return pytest.param(case, id=case.id, marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize("case", [_param(i, c) for i, c in enumerate(CASES)])
def test_hostile_case(case: Case, world: World) -> None:
    run_case(case, world)


def test_the_corpus_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 1000
    commands = {c.argv[0] for c in CASES if c.kind in ("cli", "proc") and c.argv}
    assert {"show", "estimate", "diff", "variants", "render", "emit", "build", "measure", "train", "data",
            "schema"} <= commands
    kinds = {c.kind for c in CASES}
    assert {"cli", "train", "api", "proc", "proc-train"} <= kinds
    assert len({c.id for c in CASES}) == len(CASES)
