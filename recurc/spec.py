"""The spec: pydantic models of an architecture, and its loading from YAML.

Loading is `extends` resolution (deep merge, paths relative to the spec, cycles reported), then
`key.path=value` overrides, then validation. Every value remembers where it came from
(file:line:col, or the override that set it) so a validation error can point at it.
Specs are data: YAML is read with the safe loader, aliases are refused (no billion laughs),
and sizes and nesting are bounded before anything is built.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import SpecError
from .safeio import read_text
from .strict import Strict
from .quantspec import QuantSpec

MAX_SPEC_BYTES = 1_000_000
MAX_YAML_DEPTH = 32
MAX_EXTENDS_DEPTH = 16
MAX_NAME_CHARS = 256              # spec and block names end up in file names, logs and tables
MAX_DESCRIPTION_CHARS = 10_000
MAX_BLOCKS = 512
SPEC_SUFFIXES = (".yaml", ".yml")
BLOCK_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


# ---------------------------------------------------------------- model shape
class MLPSpec(Strict):
    hidden: int | None = Field(None, ge=1, le=1 << 16, description="hidden width; default mult × dim")
    mult: float = Field(2.0, gt=0, le=64)
    activation: str = Field("relu2", description="the MLP component: relu2, leaky_relu2, or one an installed "
                            "package registers")
    negative_slope: float = Field(0.5, ge=0, le=1, description="slope of leaky_relu2 below 0")

    def width(self, dim: int) -> int:
        return self.hidden if self.hidden is not None else int(round(self.mult * dim))


class RopeSpec(Strict):
    base: float = Field(10000.0, gt=0)
    dims: int | None = Field(None, ge=2, description="rotate only the first `dims` of each head (partial RoPE)")


class AttentionSpec(Strict):
    gate: Literal["none", "dense", "sparse", "sigmoid2"] = Field(
        "none", description="per-head output gate before the output projection: dense σ(W·x), W (H, d); "
        "sparse σ(s·W·x[:w]), W (H, w); sigmoid2 2·σ(W·x[:w])")
    gate_window: int = Field(12, ge=1, description="sparse / sigmoid2: leading channels the gate reads")
    gate_scale: float = Field(1.0, gt=0, description="sparse: the fixed scale s")
    k_rank: int = Field(0, ge=0, description="low-rank key projection d → k_rank → KV·hd (0: full)")
    document_mask: bool = Field(False, description="attend within documents only (varlen attention); "
                                "a document starts at token bos_id")
    bos_id: int = Field(1, ge=0)


class ModelSpec(Strict):
    vocab_size: int = Field(1024, ge=2, le=65536, description="tokens are stored as uint16")
    dim: int = Field(512, ge=8, le=16384)
    heads: int = Field(8, ge=1, le=256)
    kv_heads: int = Field(4, ge=1, le=256)
    mlp: MLPSpec = MLPSpec()
    tied_embeddings: bool = True
    rope: RopeSpec = RopeSpec()
    logit_softcap: float | None = Field(30.0, gt=0)
    q_gain_init: float = 1.5
    norm_scale: Literal["none", "inv_sqrt_layer"] = Field(
        "none", description="inv_sqrt_layer: block norm outputs × 1/sqrt(index + 1)")
    norm_scale_index: Literal["physical", "virtual"] = Field(
        "physical", description="the index of norm_scale: the physical block's or the virtual layer's")
    attention: AttentionSpec = AttentionSpec()
    embed_rank: int = Field(0, ge=0, description="factorized embedding: a V×r table with r↔d projections, "
                            "the tied head through the same factors (0: a full V×d table)")
    seq_len: int = Field(1024, ge=2, le=1 << 17)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @model_validator(mode="after")
    def _shape(self) -> "ModelSpec":
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads})")
        if self.head_dim % 2:
            raise ValueError(f"the head dimension dim/heads = {self.head_dim} must be even for RoPE")
        if self.rope.dims is not None and (self.rope.dims > self.head_dim or self.rope.dims % 2):
            raise ValueError(f"rope.dims ({self.rope.dims}) must be even and at most the head dimension "
                             f"({self.head_dim})")
        return self


class BlockSpec(Strict):
    """A named physical block, optionally overriding the MLP or borrowing a sub-module of another block."""
    name: str = Field(max_length=MAX_NAME_CHARS)
    mlp: MLPSpec | None = None
    attention_from: str | None = Field(None, description="use this other block's attention (shared by reference)")
    mlp_from: str | None = Field(None, description="use this other block's MLP (shared by reference)")

    @field_validator("name", "attention_from", "mlp_from")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not BLOCK_NAME.fullmatch(v):
            raise ValueError(f"block name {v!r} must be an upper-case identifier like A, B or PRE")
        return v


# ---------------------------------------------------------------- recurrence
class PerPassSpec(Strict):
    """Parameters owned by a virtual layer (a pass of a block) rather than by the block."""
    scope: Literal["looped", "all"] = Field(
        "looped", description="which virtual layers get per-pass parameters: those of blocks run more than "
        "once, or all")
    block_scalars: bool = Field(False, description="attn_scale, mlp_scale and resid_mix per virtual layer")
    q_gain: bool = Field(False, description="q_gain per virtual layer instead of per attention module")
    iteration_embedding: Literal["none", "learned", "sinusoidal"] = "none"
    film: bool = Field(False, description="FiLM scale and shift of the block input, per pass")
    timestep_scale: bool = Field(False, description="γ per pass scaling the block's residual update")
    timestep_cap: float = Field(4.0, gt=0)
    cross_repeat_scale: bool = Field(False, description="add scale ⊙ (the same block's output on the previous pass)")
    residual_scale: Literal["none", "inv_sqrt_k"] = Field(
        "none", description="inv_sqrt_k: residual updates of a block run K times are scaled by 1/sqrt(K)")


class FeaturesSpec(Strict):
    """Layer features chosen by layer index. Published entries count indices differently, so a
    spec that uses one must say whether indices count virtual (executed) or physical layers."""
    index: Literal["virtual", "physical"] | None = None
    parallel_residual_from: int | None = Field(None, ge=0, description="attention and MLP read the same input "
                                                                        "from this layer on")
    xsa_last: int = Field(0, ge=0, description="exclusive self-attention on the last n layers")
    no_attention: list[int] = Field(default_factory=list, description="layers that run no attention "
                                    "(e.g. [0]); their blocks own no attention unless another layer runs it")
    residual_form: Literal["gptj", "two_lane", "lane_merge"] = Field(
        "gptj", description="the parallel residual from parallel_residual_from on: gptj (attention and MLP "
        "read one input), two_lane (lanes mixed by P (L,2,2) and r (L,2) per physical layer), lane_merge "
        "(attention updates lane 0, the MLP lane 1, one scalar mixes them at the end)")
    lane_final: Literal["mean", "mlp"] = Field("mean", description="two_lane: the final state is the lanes' "
                                               "mean, or the MLP lane alone")
    lane_resid_init: float = Field(1.1, description="two_lane: the initial value of r")

    @model_validator(mode="after")
    def _index(self) -> "FeaturesSpec":
        if self.index is None and (self.parallel_residual_from is not None or self.xsa_last or self.no_attention):
            raise ValueError("say whether layer indices count `virtual` or `physical` layers (features.index)")
        return self


class ProgressiveStep(Strict):
    at: float = Field(ge=0, lt=1, description="training fraction from which this step runs")
    repeats: int | None = Field(None, ge=1, le=64, description="the main order with this loop count")
    order: str | None = Field(None, description="or an explicit order, e.g. 0..5,4 | 5,4,5,6..10")

    @model_validator(mode="after")
    def _one(self) -> "ProgressiveStep":
        if (self.repeats is None) == (self.order is None):
            raise ValueError("a progressive step gives exactly one of `repeats` and `order`")
        return self


class ScheduleSpec(Strict):
    """Depth schedule: which order runs when. Each distinct order is one prebuilt path."""
    loops_at: float | int | None = Field(
        None, gt=0, description="when loops switch on: a training fraction (< 1), or a step (an integer ≥ 1); "
        "before it `before` runs")
    before: str | None = Field(None, description="order before loops_at; default the flat 0..N-1")
    progressive: list[ProgressiveStep] | None = None
    eval_repeats: int | None = Field(None, ge=1, le=64, description="loop count at evaluation (K' > K)")
    eval_order: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ScheduleSpec":
        if self.progressive is not None:
            if not self.progressive or self.progressive[0].at != 0:
                raise ValueError("progressive steps must start at `at: 0`")
            ats = [s.at for s in self.progressive]
            if ats != sorted(set(ats)):
                raise ValueError("progressive steps must have strictly increasing `at`")
            if self.loops_at is not None:
                raise ValueError("use either loops_at or progressive, not both")
        if isinstance(self.loops_at, float) and self.loops_at >= 1:
            raise ValueError("loops_at is a training fraction below 1, or an integer step")
        if self.eval_repeats is not None and self.eval_order is not None:
            raise ValueError("use either eval_repeats or eval_order, not both")
        if self.before is not None and self.loops_at is None:
            raise ValueError("`before` needs `loops_at`")
        return self


# ---------------------------------------------------------------- training and artifact
class TrainSpec(Strict):
    tokens_per_step: int = Field(524_288, ge=1)
    iterations: int = Field(20_000, ge=1)
    max_wallclock_seconds: float | None = Field(600.0, gt=0)
    warmup_steps: int = Field(20, ge=0, description="compile/warm-up steps whose updates are discarded")
    lr_warmup_steps: int = Field(0, ge=0)
    warmdown_steps: int = Field(1200, ge=0, description="linear decay to 0 over the last steps (or wall-clock)")
    matrix_lr: float = Field(0.04, gt=0)
    scalar_lr: float = Field(0.04, gt=0)
    embed_lr: float = Field(0.05, gt=0)
    head_lr: float = Field(0.008, gt=0)
    muon_momentum: float = Field(0.95, ge=0, lt=1)
    muon_momentum_warmup_start: float = Field(0.85, ge=0, lt=1, description="Muon momentum at step 0, linear to muon_momentum (the challenge's recipe)")
    muon_momentum_warmup_steps: int = Field(500, ge=0, description="steps of the Muon momentum warm-up; 0: none")
    muon_backend_steps: int = Field(5, ge=1)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = Field(0.0, ge=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    val_every: int = Field(1000, ge=0)
    val_tokens: int | None = Field(None, ge=1, description="cap on validation tokens; default all")
    seed: int = Field(1337, ge=0, le=2**32 - 1, description="numpy and torch both take 32-bit seeds")


class CodeSpec(Strict):
    """Code bytes counted in the artifact: a fixed figure, or the size of `recurc emit`'s script."""
    bytes: int | None = Field(None, ge=0)
    emit: Literal["raw", "minified", "lzma"] | None = None

    @model_validator(mode="after")
    def _one(self) -> "CodeSpec":
        if (self.bytes is None) == (self.emit is None):
            raise ValueError("give exactly one of code.bytes and code.emit")
        return self


class Spec(Strict):
    name: str = Field("unnamed", min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)
    model: ModelSpec = ModelSpec()
    blocks: Union[int, list[Union[str, BlockSpec]]] | None = Field(
        None, description="a count, or named blocks; default max index in the order + 1",
        json_schema_extra={"maxItems": MAX_BLOCKS})
    order: str = Field(description='execution order, e.g. "0..3,(4,5)x2,6..10"')
    sharing: Literal["block", "attention", "mlp", "mlp_down"] = Field(
        "block", description="what the passes of one block share: everything, the attention only "
        "(each later pass owns its MLP), the MLP only (each later pass owns its attention), or all but "
        "the MLP's down projection (each later pass owns that)")
    untie_init: Literal["fresh", "copy"] = Field(
        "fresh", description="how a later pass's own sub-module starts: freshly initialised, or a copy of "
        "the shared one (made again when loops switch on, as records do)")
    per_pass: PerPassSpec = PerPassSpec()
    features: FeaturesSpec = FeaturesSpec()
    skips: Literal["none", "unet", "gated_unet"] = "unet"
    skip_count: Literal["longest", "flat"] = Field(
        "longest", description="how many skip weights exist: the training order with most encoder/decoder "
        "pairs, or the flat order's (blocks // 2)")
    skip_past_last: Literal["none", "share"] = Field(
        "none", description="decoder layers past the last skip weight: no skip, or the last weight "
        "(min(i, n-1)) with their mirrored encoder output")
    schedule: ScheduleSpec = ScheduleSpec()
    components: list[dict[str, Any]] = Field(
        default_factory=list, description="components beyond the core, in the order they apply: "
        "[{use: smear_gate, form: scalar}, {use: bigram_hash, buckets: 3072}] (recurc/components)")
    quant: QuantSpec = QuantSpec()
    budget: int = Field(16_000_000, ge=1)
    code: CodeSpec = CodeSpec(bytes=47_642)
    train: TrainSpec = TrainSpec()

    _where: dict[tuple, str] = PrivateAttr(default_factory=dict)

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v):
        if isinstance(v, int) and not 1 <= v <= MAX_BLOCKS:
            raise ValueError(f"blocks must be between 1 and {MAX_BLOCKS}")
        if isinstance(v, list):
            if not v:
                raise ValueError("blocks must name at least one block")
            if len(v) > MAX_BLOCKS:
                raise ValueError(f"{len(v):,} blocks named, more than the limit of {MAX_BLOCKS}")
            for b in v:
                if isinstance(b, str) and not (len(b) <= MAX_NAME_CHARS and BLOCK_NAME.fullmatch(b)):
                    shown = b if len(b) <= 40 else b[:40] + "..."
                    raise ValueError(f"block name {shown!r} must be an upper-case identifier like A, B or PRE "
                                     f"(at most {MAX_NAME_CHARS} characters)")
            v = [BlockSpec(name=b) if isinstance(b, str) else b for b in v]
            seen: set[str] = set()
            dup = sorted({b.name for b in v if b.name in seen or seen.add(b.name)})
            if dup:
                raise ValueError(f"block names must be unique, repeated: {', '.join(dup)}")
        return v

    @field_validator("components")
    @classmethod
    def _components(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for c in v:
            if not isinstance(c.get("use"), str):
                raise ValueError("each component needs `use: NAME`")
        return v

    def where(self, *path: Any) -> str | None:
        """file:line:col (or override) where the value at `path` was written, if known."""
        for n in range(len(path), 0, -1):
            if path[:n] in self._where:
                return self._where[path[:n]]
        return None

    def to_data(self) -> dict:
        """Plain data, as YAML would hold it (defaults included)."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- YAML with positions
# libyaml's parser when PyYAML has it (5x faster; same events, nodes and marks), else pure Python
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YAML_LOADER(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader, with YAML 1.2's floats: `1e-3` is a number (YAML 1.1 wants `1.0e-3` and
    reads `1e-3` as a string, which strict validation would then refuse)."""


_YAML_LOADER.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))

# YAML 1.1 integers that YAML 1.2 reads differently (or not at all): 01000 is octal 512, 8:32 is
# base 60 (512), 0b1 binary. A spec that means 1000 would silently get 512, so they are refused.
_YAML11_NUMBER = re.compile(r"^[-+]?(?:0[0-7_]+|0b[01_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?)$")


def _at(origin: str, mark) -> str:
    """file:line:col (1-based) of a YAML mark."""
    return f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark else origin


def _yaml_error(exc: yaml.YAMLError, origin: str) -> SpecError:
    return SpecError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                     where=_at(origin, getattr(exc, "problem_mark", None)))


def _check_yaml_shape(text: str, origin: str) -> None:
    """Refuse aliases and deep nesting by scanning parse events (no recursion, no expansion)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_YAML_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                m = event.start_mark
                raise SpecError("YAML anchors and aliases are not allowed in specs",
                                where=_at(origin, m), hint="write the value out; use "
                                "`extends:` to reuse another spec")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    m = event.start_mark
                    raise SpecError(f"the YAML nests deeper than {MAX_YAML_DEPTH} levels",
                                    where=_at(origin, m))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, origin) from None


def _to_data(node: yaml.Node, origin: str, path: tuple, where: dict[tuple, str]) -> Any:
    where[path] = _at(origin, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for k, v in node.value:
            key = _scalar(k, origin)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise SpecError(f"mapping keys must be names, got {key!r}",
                                where=_at(origin, k.start_mark))
            if key in out:
                raise SpecError(f"key {key!r} appears twice",
                                where=_at(origin, k.start_mark))
            out[key] = _to_data(v, origin, path + (key,), where)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(v, origin, path + (i,), where) for i, v in enumerate(node.value)]
    return _scalar(node, origin)


def _scalar(node: yaml.Node, origin: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError("mapping keys must be plain names",
                        where=_at(origin, node.start_mark))
    if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and _YAML11_NUMBER.match(node.value):
        v = node.value
        meaning = "base 60" if ":" in v else "binary" if "b" in v else "octal"
        plain = v.replace("_", "").lstrip("+-").lstrip("0") or "0"
        example = f" (e.g. {plain})" if meaning == "octal" else ""
        raise SpecError(f"{v} is a YAML 1.1 {meaning} number, which is ambiguous", where=_at(origin, node.start_mark),
                        hint=f"write a plain decimal number{example}, or quote it if you mean text")
    try:
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise SpecError(f"invalid YAML value: {exc}",
                        where=_at(origin, node.start_mark)) from None


def parse_yaml(text: str, origin: str) -> tuple[dict, dict[tuple, str]]:
    """YAML text → (plain dict, path → position)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:   # e.g. undecodable bytes of a command-line override
        raise SpecError(f"invalid YAML: the text holds {text[exc.start]!r}, which is not a character "
                        "UTF-8 can encode", where=origin) from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is larger than the limit of {MAX_SPEC_BYTES:,} bytes", where=origin)
    _check_yaml_shape(text, origin)
    try:
        node = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, origin) from None
    where: dict[tuple, str] = {}
    if node is None:
        return {}, where
    data = _to_data(node, origin, (), where)
    if not isinstance(data, dict):
        raise SpecError("a spec is a YAML mapping (key: value lines)", where=f"{origin}:1:1")
    return data, where


# ---------------------------------------------------------------- extends and overrides
def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _anchor_paths(data: dict, base: Path) -> None:
    """A weight-profile file named in a spec is relative to that spec's file, like `extends`."""
    quant = data.get("quant")
    w = quant.get("weights") if isinstance(quant, dict) else None
    if isinstance(w, str) and w.endswith(".json") and not Path(w).is_absolute():
        quant["weights"] = os.path.normpath(base / w)     # no resolve(): a symlink loop would raise
    anchor = quant.get("anchor") if isinstance(quant, dict) else None
    if isinstance(anchor, str) and "=" in anchor:   # quant.anchor: SIBLING=BYTES, SIBLING like `extends`
        sib, _, n = anchor.rpartition("=")
        if sib.strip() and not Path(sib.strip()).is_absolute():
            quant["anchor"] = f"{os.path.normpath(base / sib.strip())}={n}"


def _resolve(path: Path, chain: tuple[Path, ...], at: str | None = None) -> tuple[dict, dict[tuple, str]]:
    """The merged data and positions of the spec at `path`; `at` is the `extends:` line naming it."""
    origin = str(path)
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise SpecError(f"`extends` forms a cycle: {cycle}", where=str(chain[-1]))
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError(f"`extends` chains deeper than {MAX_EXTENDS_DEPTH} specs", where=origin)
    if not path.exists() and not path.is_symlink():
        raise SpecError(f"spec file {origin} does not exist", where=at or (str(chain[-1]) if chain else None))
    # only a regular file, read up to the limit (st_size is 0 for /dev/zero); no content echoed
    try:
        text = read_text(path, MAX_SPEC_BYTES, "spec file")
    except SpecError as exc:
        raise SpecError(exc.message, where=at, hint=exc.hint) from None
    data, where = parse_yaml(text, origin)
    _anchor_paths(data, path.parent)
    parent = data.pop("extends", None)
    if parent is None:
        return data, where
    if not isinstance(parent, str) or not parent or "\0" in parent:
        raise SpecError("`extends` takes the path of one spec", where=where.get(("extends",)))
    if not parent.endswith(SPEC_SUFFIXES):
        raise SpecError(f"`extends` names a spec file ending in {' or '.join(SPEC_SUFFIXES)}",
                        where=where.get(("extends",)), hint="extends: baseline.yaml")
    try:
        target = (path.parent / parent).resolve()
    except (OSError, RuntimeError) as exc:        # a symlink loop, a name too long
        raise SpecError(f"cannot read spec file {parent}: {getattr(exc, 'strerror', None) or exc}",
                        where=where.get(("extends",))) from None
    base, base_where = _resolve(target, (*chain, path), where.get(("extends",)))
    merged_where = dict(base_where)
    merged_where.update({k: v for k, v in where.items() if k != ("extends",)})
    return _deep_merge(base, data), merged_where


def _set_path(data: dict, keys: list[str], value: Any, text: str) -> None:
    node = data
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise SpecError(f"cannot set {'.'.join(keys)}: {k} is not a section", where=f"<override {text}>")
        node = nxt
    node[keys[-1]] = value


def _is_text_field(keys: list[str]) -> bool:
    """Whether the spec field at `keys` holds text (str or str | None), by the models' annotations."""
    model: Any = Spec
    for i, k in enumerate(keys):
        f = getattr(model, "model_fields", {}).get(k)
        if f is None:
            return False
        ann = f.annotation
        args = [a for a in getattr(ann, "__args__", (ann,)) if a is not type(None)]
        if i == len(keys) - 1:
            return args == [str]
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(nested) != 1:
            return False
        model = nested[0]
    return False


def apply_overrides(data: dict, where: dict[tuple, str], overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for text in overrides:
        key, sep, raw = text.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in keys):
            raise SpecError(f"an override is key.path=value, got {text!r}", where="<override>",
                            hint='e.g. model.dim=576 or order="0..3,(4,5)x2,6..8"')
        value, _ = parse_yaml(f"v: {raw}", f"<override {text}>") if raw.strip() else ({"v": None}, {})
        v = value["v"]
        if isinstance(v, (int, float, bool)) and _is_text_field(keys):
            v = raw.strip()           # order=0x2 is the order "0x2", not the integer 2
        _set_path(data, keys, v, text)
        for p in list(where):
            if p[: len(keys)] == tuple(keys):
                del where[p]
        where[tuple(keys)] = f"<override {text}>"
    return data


# ---------------------------------------------------------------- validation
def _friendly(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "this field is required"
    return msg.removeprefix("Value error, ")


def validate(data: dict, where: dict[tuple, str], origin: str) -> Spec:
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        # drop pydantic's union-branch labels from the location, keeping field names and indices
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p in ("int", "list[union[str,BlockSpec]]") or p.startswith(("function-", "union[")))))
        pos = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in where:
                pos = where[loc[:n]]
                break
        # an override inside the failing section is the likelier culprit than the section's line
        inside = [v for k, v in where.items() if k[: len(loc)] == loc and v.startswith("<override")]
        if inside and not (pos or "").startswith("<override"):
            pos = inside[-1]
        field = ".".join(str(p) for p in loc) or "(spec)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        hint = None
        if err["type"] == "extra_forbidden":
            from .suggest import did_you_mean, field_names
            hint = did_you_mean(loc[-1], field_names(Spec, loc)) if loc else None
            hint = hint or "`recurc schema` lists every field"
        raise SpecError(f"{field}: {_friendly(err)}{more}", where=pos or origin, hint=hint) from None
    spec._where = where
    return spec


def resolve_root(p: Path) -> tuple[dict, dict[tuple, str]]:
    """_resolve for the spec the user named, with positions in the path as they typed it."""
    if "\0" in str(p):
        raise SpecError(f"cannot read spec file {str(p)!r}: the path holds a NUL byte")
    try:
        full = p.resolve() if p.exists() else p
    except (OSError, RuntimeError) as exc:        # a symlink loop, a name too long
        raise SpecError(f"cannot read spec file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    data, where = _resolve(full, ())
    return data, {k: v.replace(str(full), str(p)) for k, v in where.items()}


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read a YAML spec (following `extends`), apply `key.path=value` overrides, validate."""
    p = Path(path)
    data, where = resolve_root(p)
    data = apply_overrides(data, where, list(overrides))
    return validate(data, where, str(p))


def spec_from_text(text: str, origin: str = "<spec>", overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    data, where = parse_yaml(text, origin)
    if "extends" in data:
        raise SpecError("`extends` needs a spec loaded from a file", where=where.get(("extends",)))
    data = apply_overrides(data, where, list(overrides))
    return validate(data, where, origin)


def spec_from_data(data: dict, origin: str = "<data>") -> Spec:
    return validate(copy.deepcopy(data), {}, origin)


def json_schema() -> dict:
    return Spec.model_json_schema()
