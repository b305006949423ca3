"""The execution-order DSL: parse (grammar in order.lark), expand to virtual layers, print canonically.

An `Order` is the expanded sequence of block references (ints for numbered blocks, upper-case
names for named ones) and the U-Net split. The parse tree is kept beside it so a depth schedule
can rewrite the loop count (progressive repeats, more passes at evaluation) without reparsing.

Hostile input stays cheap: the string length, nesting depth, integer size and the expanded
length are all checked on the tree before anything is expanded.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Union

import lark
from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import SpecError

MAX_ORDER_CHARS = 4096
MAX_NESTING = 32
MAX_DEPTH = 64            # nested lists and repeats together (`0x1x1x1...` nests without parentheses)
MAX_VIRTUAL_LAYERS = 512
MAX_INT = 100_000

Ref = Union[int, str]


# ---------------------------------------------------------------- syntax tree
@dataclass(frozen=True)
class Leaf:
    ref: Ref
    col: int


@dataclass(frozen=True)
class Span:
    lo: int
    hi: int
    col: int


@dataclass(frozen=True)
class Seq:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Loop:
    body: "Node"
    count: int
    col: int


Node = Union[Leaf, Span, Seq, Loop]


def _length(node: Node) -> int:
    if isinstance(node, Leaf):
        return 1
    if isinstance(node, Span):
        return node.hi - node.lo + 1
    if isinstance(node, Seq):
        return sum(_length(n) for n in node.items)
    return _length(node.body) * node.count


def _expand(node: Node) -> list[Ref]:
    if isinstance(node, Leaf):
        return [node.ref]
    if isinstance(node, Span):
        return list(range(node.lo, node.hi + 1))
    if isinstance(node, Seq):
        return [r for n in node.items for r in _expand(n)]
    return _expand(node.body) * node.count


def _loops(node: Node) -> list[Loop]:
    if isinstance(node, Loop):
        return [node, *_loops(node.body)]
    if isinstance(node, Seq):
        return [loop for n in node.items for loop in _loops(n)]
    return []


def _with_count(node: Node, target: Loop, count: int) -> Node:
    if node is target:
        return replace(node, count=count)
    if isinstance(node, Loop):
        return replace(node, body=_with_count(node.body, target, count))
    if isinstance(node, Seq):
        return Seq(tuple(_with_count(n, target, count) for n in node.items))
    return node


# ---------------------------------------------------------------- the Order
@dataclass(frozen=True)
class Order:
    """An expanded execution order. Two orders are equal when they run the same blocks in the
    same sequence with the same encoder/decoder split, however they were spelled."""

    layers: tuple[Ref, ...]
    split: int
    encoder: Node = field(compare=False, repr=False, default=Seq(()))
    decoder: Node | None = field(compare=False, repr=False, default=None)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def encoder_layers(self) -> tuple[Ref, ...]:
        return self.layers[: self.split]

    @property
    def decoder_layers(self) -> tuple[Ref, ...]:
        return self.layers[self.split:]

    @property
    def loops(self) -> list[Loop]:
        trees = [self.encoder] + ([self.decoder] if self.decoder is not None else [])
        return [loop for t in trees for loop in _loops(t)]

    def column_of(self, ref: Ref) -> int | None:
        """1-based column in the source text where `ref` is first written (None if generated)."""
        def walk(node: Node | None) -> int | None:
            if isinstance(node, Leaf):
                return node.col if node.ref == ref else None
            if isinstance(node, Span):
                return node.col if isinstance(ref, int) and node.lo <= ref <= node.hi and node.col else None
            if isinstance(node, Seq):
                return next((c for c in map(walk, node.items) if c), None)
            if isinstance(node, Loop):
                return walk(node.body)
            return None
        return walk(self.encoder) or walk(self.decoder)

    def with_loop_count(self, count: int) -> "Order":
        """The same order with its single loop run `count` times (progressive depth, K' > K).

        Only defined for an order with exactly one `x` repeat, since otherwise which loop to
        stretch would be a guess."""
        loops = self.loops
        if len(loops) != 1:
            raise SpecError(
                f"changing the loop count needs an order with exactly one repeat `xN`, this one has {len(loops)}",
                where="<order>", hint="write the order with a single loop, e.g. `0..3,(4,5)x2,6..10`, "
                "or give the schedule's orders explicitly")
        if count < 1:
            raise SpecError(f"a loop count must be at least 1, got {count}", where="<order>")
        enc = _with_count(self.encoder, loops[0], count)
        dec = _with_count(self.decoder, loops[0], count) if self.decoder is not None else None
        return _make_order(enc, dec, origin="<order>", text="")

    def canonical(self, names: dict[int, str] | None = None) -> str:
        """The one normal form of this order; parse(canonical(o)) == o."""
        return format_order(self.layers, self.split, names)


def _make_order(enc: Node, dec: Node | None, *, origin: str, text: str) -> Order:
    total = _length(enc) + (_length(dec) if dec is not None else 0)
    if total > MAX_VIRTUAL_LAYERS:
        raise SpecError(f"the order expands to {total:,} virtual layers, more than the limit of {MAX_VIRTUAL_LAYERS}",
                        where=origin, hint="lower a repeat count or a range")
    layers = _expand(enc)
    split = len(layers) if dec is not None else len(layers) // 2
    if dec is not None:
        layers += _expand(dec)
        if split == 0 or split == len(layers):
            raise SpecError("both sides of `|` need at least one layer", where=origin)
    if not layers:
        raise SpecError("the order is empty", where=origin, hint="name at least one block, e.g. `0..8`")
    return Order(tuple(layers), split, enc, dec)


# ---------------------------------------------------------------- parsing
def _private_dir(folder: Path) -> bool:
    """Whether `folder` is a real directory of ours that nobody else may write (made 0700 if absent)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(folder, 0o700)      # ours but open (an older recurc or a umask): close it
            st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _own_file_or_absent(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def table_cache(grammar: str) -> str | None:
    """Where lark may keep the LALR tables: a pickle, so only in a private per-user folder
    ($XDG_CACHE_HOME or ~/.cache, then recurc/lark/, mode 0700, owned by us), never lark's default of a
    predictable name in the shared temp folder, where anyone could plant one. None (no cache, the
    tables are built in ~40 ms) when no such folder can be had."""
    if not hasattr(os, "getuid"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    folder = Path(base) / "recurc" / "lark"
    if not _private_dir(folder):
        return None
    key = hashlib.sha256(f"{lark.__version__}\0{grammar}".encode()).hexdigest()[:16]
    path = folder / f"order-lalr-{key}.lark"
    return str(path) if _own_file_or_absent(path) else None


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("order.lark")).read_text()
    cache = table_cache(grammar)
    return Lark(grammar, start="order", parser="lalr", propagate_positions=False, maybe_placeholders=False,
                cache=cache if cache is not None else False)


class _ToAst(Transformer):
    """Parse tree → syntax tree; checks each number as it goes so no huge value survives."""

    def __init__(self, origin: str, text: str) -> None:
        super().__init__()
        self.origin, self.text = origin, text
        self.depth: dict[int, int] = {}      # id(node) → how deeply it nests (the tree keeps nodes alive)

    def _deep(self, node: Node, depth: int, col: int | None) -> Node:
        if depth > MAX_DEPTH:
            raise _error(f"the order nests deeper than the limit of {MAX_DEPTH} (lists and repeats together)",
                         self.origin, self.text, col, "write `x3` once instead of repeating repeats")
        self.depth[id(node)] = depth
        return node

    def _depth_of(self, node: Node) -> int:
        return self.depth.get(id(node), 1)

    def _int(self, tok: Token, what: str, minimum: int) -> int:
        if len(tok) > 6 or int(tok) > MAX_INT:
            raise _error(f"{what} {tok} is too large (limit {MAX_INT:,})", self.origin, self.text, tok.column)
        value = int(tok)
        if value < minimum:
            hint = "a repeat of 0 would delete the loop; remove it instead" if what == "repeat count" else None
            raise _error(f"{what} must be at least {minimum}, got {value}", self.origin, self.text, tok.column, hint)
        return value

    def index(self, c):
        return Leaf(self._int(c[0], "block index", 0), c[0].column)

    def name(self, c):
        return Leaf(str(c[0]), c[0].column)

    def range(self, c):
        lo, hi = self._int(c[0], "range start", 0), self._int(c[1], "range end", 0)
        if hi < lo:
            raise _error(f"range {lo}..{hi} runs backwards", self.origin, self.text, c[0].column,
                         f"ranges are inclusive and ascending: write {hi}..{lo} and reverse it with explicit indices")
        return Span(lo, hi, c[0].column)

    def group(self, c):
        return c[0]

    def repeat(self, c):
        return self._int(c[1], "repeat count", 1), c[0].column

    list_repeat = repeat

    def item(self, c):
        node = c[0]
        depth = self._depth_of(node)
        for count, col in c[1:]:
            depth += 1
            if depth > MAX_DEPTH:
                self._deep(node, depth, col)
            node = Loop(node, count, col)
        return self._deep(node, depth, None)

    def seq(self, c):
        items = list(c)
        repeat = items.pop() if items and isinstance(items[-1], tuple) else None
        depth = max(self._depth_of(n) for n in items)
        node: Node = items[0] if len(items) == 1 else self._deep(Seq(tuple(items)), depth + 1, None)
        if repeat is not None:
            node = self._deep(Loop(node, repeat[0], repeat[1]), self._depth_of(node) + 1, repeat[1])
        return node

    def chain(self, c):
        if len(c) == 1:
            return c[0]
        return _shorthand(list(c), self.origin, self.text)

    def order(self, c):
        return tuple(c)


def _shorthand(parts: list[Node], origin: str, text: str) -> Node:
    """`P+SxK+C` (also `P+SxK`, `SxK+C`): P prelude blocks, S shared blocks looped K times, C coda.

    The numbers are block COUNTS, not indices; blocks are numbered 0.. in execution order."""
    looped = [i for i, p in enumerate(parts) if isinstance(p, Loop)]
    shape_hint = "the shorthand is P+SxK+C with plain counts, e.g. `1+4x3+1`"
    if len(parts) > 3 or len(looped) != 1:
        raise _error("a `+` chain needs exactly one looped part", origin, text, None, shape_hint)
    counts: list[int] = []
    for p in parts:
        inner = p.body if isinstance(p, Loop) else p
        if not isinstance(inner, Leaf) or not isinstance(inner.ref, int):
            raise _error("each part of a `+` chain must be a plain count", origin, text, None, shape_hint)
        counts.append(inner.ref)
    i = looped[0]
    pre, shared = (counts[0] if i == 1 else 0), counts[i]
    coda = counts[i + 1] if i + 1 < len(counts) else 0
    if len(parts) == 3 and i != 1 or shared == 0:
        raise _error("the looped part must sit between prelude and coda and hold at least one block",
                     origin, text, None, shape_hint)
    nodes: list[Node] = []
    if pre:
        nodes.append(Span(0, pre - 1, 0))
    body: Node = Span(pre, pre + shared - 1, 0)
    nodes.append(Loop(body, parts[i].count, parts[i].col))  # type: ignore[union-attr]
    if coda:
        nodes.append(Span(pre + shared, pre + shared + coda - 1, 0))
    return Seq(tuple(nodes))


def _caret(text: str, col: int | None) -> str | None:
    if col is None or not text:
        return f"  {text}" if text else None
    return f"  {text}\n  {' ' * (col - 1)}^"


def _error(message: str, origin: str, text: str, col: int | None, hint: str | None = None) -> SpecError:
    where = f"{origin}:{col}" if col is not None else origin
    return SpecError(message, where=where, snippet=_caret(text, col), hint=hint)


_EXPECT_WORDS = {"INT": "a number", "NAME": "a block name", "LPAR": "`(`", "RPAR": "`)`", "COMMA": "`,`",
                 "TIGHT_X": "`x`", "SPACED_X": "` x`", "VBAR": "`|`", "PLUS": "`+`", "__ANON_0": "`..`",
                 "$END": "the end"}


def _syntax_error(exc: UnexpectedInput, origin: str, text: str) -> SpecError:
    col = getattr(exc, "column", None)
    col = col if isinstance(col, int) and col > 0 else len(text) + 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[col - 1] if col - 1 < len(text) else ""
        hint = None
        if ch.islower():
            hint = "block names are upper-case identifiers (A, B, PRE); repeats are written `x3`"
        elif ch == "-":
            hint = "write a range as `4..6` (inclusive)"
        return _error(f"unexpected character {ch!r}", origin, text, col, hint)
    expected = sorted({_EXPECT_WORDS.get(t, t) for t in getattr(exc, "expected", set()) or set()})
    at_end = isinstance(exc, UnexpectedEOF) or getattr(exc, "token", None) is None or exc.token.type == "$END"
    what = "end of the order" if at_end else repr(str(exc.token).strip())
    if at_end:
        col = len(text) + 1
    hint = None
    if isinstance(exc, UnexpectedToken) and exc.token.type in ("COMMA", "RPAR", "TIGHT_X", "SPACED_X") \
            and "x" in text[: col]:
        hint = ("a spaced ` xN` repeats the whole list before it and must end that list; "
                "add parentheses, e.g. `(0,1)x2,3`")
    if isinstance(exc, UnexpectedToken) and exc.token.type == "RPAR" and text[: col - 1].rstrip().endswith("("):
        hint = "an empty loop `()` runs nothing; remove it"
    msg = f"unexpected {what}" + (f", expected {' or '.join(expected)}" if expected else "")
    return _error(msg, origin, text, col, hint)


def parse_order(text: str, origin: str = "<order>") -> Order:
    """Parse and expand an order string; any problem is one SpecError with a caret.

    Orders are immutable, so valid parses are cached (variant sweeps parse the same few strings
    thousands of times)."""
    if isinstance(text, str) and isinstance(origin, str):
        return _parse_order_cached(text, origin)
    return _parse_order(text, origin)


@lru_cache(maxsize=4096)
def _parse_order_cached(text: str, origin: str) -> Order:
    return _parse_order(text, origin)


def _parse_order(text: str, origin: str) -> Order:
    if not isinstance(text, str):
        raise SpecError(f"an order must be a string, got {type(text).__name__}", where=origin,
                        hint='quote it in YAML: order: "0..3,(4,5)x2,6..10"')
    if len(text) > MAX_ORDER_CHARS:
        raise SpecError(f"the order is {len(text):,} characters long, more than the limit of {MAX_ORDER_CHARS}",
                        where=origin)
    if "\n" in text or "\r" in text:
        raise _error("an order is one line", origin, text.replace("\n", " ").replace("\r", " "),
                     min(i for i in (text.find("\n"), text.find("\r")) if i >= 0) + 1)
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth > MAX_NESTING:
            raise _error(f"parentheses nest deeper than the limit of {MAX_NESTING}", origin, text, i + 1)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, origin, text) from None
    try:
        chains = _ToAst(origin, text).transform(tree)
    except SpecError:
        raise
    except Exception as exc:  # lark wraps errors raised in callbacks
        inner = getattr(exc, "orig_exc", None)
        if isinstance(inner, SpecError):
            raise inner from None
        raise
    enc = chains[0]
    dec = chains[1] if len(chains) > 1 else None
    return _make_order(enc, dec, origin=origin, text=text)


# ---------------------------------------------------------------- canonical printing
def _atom(ref: Ref, names: dict[int, str] | None) -> str:
    if names is not None and isinstance(ref, int) and ref in names:
        return names[ref]
    return str(ref)


def _flat(seq: tuple[Ref, ...], names: dict[int, str] | None) -> list[str]:
    """Singles, merging ascending runs of 3+ numbered blocks into ranges."""
    out: list[str] = []
    i = 0
    while i < len(seq):
        j = i
        while names is None and isinstance(seq[i], int) and j + 1 < len(seq) and seq[j + 1] == seq[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{seq[i]}..{seq[j]}")
            i = j + 1
        else:
            out.append(_atom(seq[i], names))
            i += 1
    return out


def _compress(seq: tuple[Ref, ...], names: dict[int, str] | None) -> list[str]:
    """Greedy left-to-right: at each position take the tandem repeat covering the most layers
    (shortest period on ties); everything else is a single or a range."""
    out: list[str] = []
    singles: list[Ref] = []
    i, n = 0, len(seq)
    while i < n:
        best: tuple[int, int, int] | None = None
        for p in range(1, (n - i) // 2 + 1):
            k = 1
            while i + (k + 1) * p <= n and seq[i + k * p: i + (k + 1) * p] == seq[i: i + p]:
                k += 1
            if k >= 2 and (best is None or p * k > best[0]):
                best = (p * k, p, k)
        if best is None:
            singles.append(seq[i])
            i += 1
            continue
        out += _flat(tuple(singles), names)
        singles = []
        _, p, k = best
        inner = _compress(seq[i: i + p], names)
        unit = inner[0] if len(inner) == 1 and ".." not in inner[0] and "x" not in inner[0] else f"({','.join(inner)})"
        out.append(f"{unit}x{k}")
        i += p * k
    return out + _flat(tuple(singles), names)


def format_order(layers: tuple[Ref, ...], split: int, names: dict[int, str] | None = None) -> str:
    if names is None:
        return _format_plain(layers, split)
    return _format_order(layers, split, names)


@lru_cache(maxsize=4096)
def _format_plain(layers: tuple[Ref, ...], split: int) -> str:
    return _format_order(layers, split, None)


def _format_order(layers: tuple[Ref, ...], split: int, names: dict[int, str] | None) -> str:
    if split == len(layers) // 2:
        return ",".join(_compress(layers, names))
    return ",".join(_compress(layers[:split], names)) + " | " + ",".join(_compress(layers[split:], names))
