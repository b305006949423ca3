"""The IR's records: everything a Plan holds, as frozen dataclasses of plain values.

Nothing here imports torch, pydantic, lark or the spec: these records are what the emitted
`train_gpt.py` carries as data (`Plan.from_json(PLAN)`), what checkpoints are keyed by, and what
estimate, build, diff and render read. `to_data` / `from_data` walk the type hints, so a field
added to a record is serialised, compared and diffed with no other change.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Union

# Tensor roles every parameter of a Plan belongs to (the quantization groups of a spec).
GROUPS = ("embeddings", "attention", "mlp", "per_pass", "scalars")


# ---------------------------------------------------------------- generic (de)serialisation
def to_data(obj: Any) -> Any:
    """A record tree as JSON-able data: dataclasses become dicts of their fields."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (tuple, list)):
        return [to_data(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_data(v) for k, v in obj.items()}
    return obj


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    return _HINTS[cls]


def from_data(tp: Any, data: Any) -> Any:
    """Inverse of `to_data` for the type `tp` (a record class or a typing expression)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return tp(**{f.name: from_data(hints[f.name], data[f.name])
                     for f in dataclasses.fields(tp) if f.init and f.name in data})
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return from_data(rest[0], data)
        for a in rest:      # primitive unions (int | str): the value's own type decides
            if isinstance(a, type) and isinstance(data, a) and not (a is int and isinstance(data, bool)):
                return data
        return data
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_data(args[0], x) for x in data)
        return tuple(from_data(a, x) for a, x in zip(args, data))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        return {(int(k) if kt is int else k): from_data(vt, v) for k, v in data.items()}
    if origin is list:
        (et,) = typing.get_args(tp)
        return [from_data(et, x) for x in data]
    if tp is float and isinstance(data, int):
        return float(data)
    return data


# ---------------------------------------------------------------- owners and storage
@dataclass(frozen=True, order=True)
class Owner:
    """Who owns a tensor or a sub-module: the model itself, a physical block, or a virtual layer
    (a pass). `part` names a sub-module ("attn", "mlp", or a component's own name)."""
    kind: Literal["model", "block", "pass"]
    key: str = ""               # block name ("4", "A") or virtual-layer index ("6")
    part: str = ""

    @property
    def path(self) -> str:
        """The module path in the built model (the state-dict prefix)."""
        base = {"model": "", "block": f"blocks.{self.key}", "pass": f"passes.{self.key}"}[self.kind]
        return ".".join(x for x in (base, self.part) if x) or "model"

    def sub(self, part: str) -> Owner:
        return Owner(self.kind, self.key, part)

    @property
    def whole(self) -> Owner:
        return Owner(self.kind, self.key)

    def __str__(self) -> str:
        return self.path


# the row quantiles of |w| the clip search ("GPTQ-lite") tries
CLIP_SEARCH_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)


@dataclass(frozen=True)
class ClipRule:
    """percentile: the value-th percentile of |w| per row; std: value * std(row); absmax: max|w|
    per row (no floor); search: of `candidates` (row quantiles of |w|), the one with the least
    reconstruction MSE, per row or per matrix (`per`)."""
    kind: Literal["percentile", "std", "absmax", "search"] = "percentile"
    value: float = 99.99984
    candidates: tuple[float, ...] = CLIP_SEARCH_QUANTILES
    per: Literal["row", "matrix"] = "row"


@dataclass(frozen=True)
class GroupQuant:
    """How the large tensors of one group are stored (the resolved `quant.groups.<g>`)."""
    scheme: Literal["int", "ternary", "fp8", "fp16", "fp32"] = "int"
    bits: int = 8
    clip: ClipRule = ClipRule()
    gptq: bool = False
    scale_dtype: Literal["fp16", "fp32"] = "fp16"
    group_size: int = 0            # ternary: one scale per this many values (flattened); 0: per row
    packing: Literal["int8", "base3"] = "int8"   # ternary values: a byte each, or 5 trits a byte
    fp8_scale: Literal["none", "row"] = "none"   # fp8: plain e4m3 cast, or rows scaled to absmax 448


@dataclass(frozen=True)
class QuantPatch:
    """Fields of a GroupQuant that a per-tensor rule replaces (None keeps the group's)."""
    scheme: Literal["int", "ternary", "fp8", "fp16", "fp32"] | None = None
    bits: int | None = None
    clip: ClipRule | None = None
    gptq: bool | None = None
    scale_dtype: Literal["fp16", "fp32"] | None = None
    group_size: int | None = None
    packing: Literal["int8", "base3"] | None = None
    fp8_scale: Literal["none", "row"] | None = None


@dataclass(frozen=True)
class Override:
    """`quant.overrides[i]`: tensors whose state-dict name matches one of the globs take `set`;
    `force` quantizes them even at or below passthrough_max_numel (small gate matrices)."""
    match: tuple[str, ...]
    set: QuantPatch = QuantPatch()
    force: bool = False


@dataclass(frozen=True)
class RankRule:
    """`quant.rank`: among the integer matrices matching `match`, the `forced` ones and the
    `count` (or `fraction`) others with the largest Hessian trace take `top`, the rest `rest`.
    Without a Hessian for a candidate: refuse, or put it in top / rest (`without_hessians`)."""
    match: tuple[str, ...] = ("*",)
    forced: tuple[str, ...] = ()
    count: int | None = None
    fraction: float | None = None
    top: QuantPatch = QuantPatch(bits=6)
    rest: QuantPatch = QuantPatch(bits=5)
    by: Literal["hessian_trace"] = "hessian_trace"
    without_hessians: Literal["refuse", "top", "rest"] = "refuse"


@dataclass(frozen=True)
class LQERSettings:
    """`quant.lqer`: the `top_k` integer matrices (matching `match`) with the largest quantization-
    error norm also store a rank-`rank` SVD of their error E ≈ A·B: A = U·S as `a_bits` integers
    with one fp16 scale, B = Vᵀ as `b_bits` integers with one fp16 scale per `b_group` columns."""
    rank: int = 4
    top_k: int = 3
    a_bits: int = 2
    b_bits: int = 4
    b_group: int = 64
    match: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class Storage:
    """What export does with one tensor, decided from (shape, dtype, group, quant) alone, so the
    export (recurc.quant) and the size model (recurc.sizemodel) apply the very same rule."""
    kind: Literal["int", "ternary", "fp8", "passthrough"]
    bits: int = 8                  # int: 2..8; ternary: 2 (stored as int8 values in -1..1); fp8: 8
    per_row: bool = False          # int/ternary/fp8: one scale per row (2-D) else one per tensor
    store_dtype: str = "float32"   # passthrough: numpy dtype name stored
    scale_dtype: str = "float16"   # per-row scale dtype ("float32" for per-tensor scales)
    gq: GroupQuant | None = None

    @property
    def gptq(self) -> bool:
        """The one definition of "this tensor is GPTQ'd": a per-row integer matrix of a group
        that asks for it."""
        return self.kind == "int" and self.per_row and self.gq is not None and self.gq.gptq


@dataclass(frozen=True)
class ParamInfo:
    name: str                    # state-dict name
    shape: tuple[int, ...]
    group: str                   # role: one of GROUPS
    owner: Owner                 # the module that holds it
    storage: Storage             # how the artifact stores it
    init: str = "zeros"          # how the built module initialises it (see recurc.nn.init_tensor)
    component: str = ""          # the component that declared it ("" for the core)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# ---------------------------------------------------------------- model settings
@dataclass(frozen=True)
class Rope:
    base: float
    dims: int                    # rotated dimensions of each head (resolved: head_dim when unset)


@dataclass(frozen=True)
class AttentionSettings:
    """Attention options shared by every block (model.attention)."""
    gate: Literal["none", "dense", "sparse", "sigmoid2"] = "none"   # per-head output gate
    gate_window: int = 12          # sparse / sigmoid2: leading channels the gate reads
    gate_scale: float = 1.0        # sparse: fixed scale s in σ(s·W·x[:w])
    k_rank: int = 0                # > 0: low-rank key projection d → k_rank → kv
    document_mask: bool = False    # attend within documents only (a document starts at bos_id)
    bos_id: int = 1


@dataclass(frozen=True)
class ResidualSettings:
    """The parallel residual's form, for the layers marked `parallel` (features.residual_form)."""
    form: Literal["gptj", "two_lane", "lane_merge"] = "gptj"
    lane_final: Literal["mean", "mlp"] = "mean"
    lane_resid_init: float = 1.1


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    dim: int
    heads: int
    kv_heads: int
    tied_embeddings: bool
    rope: Rope
    logit_softcap: float | None
    q_gain_init: float
    norm_scale: Literal["none", "inv_sqrt_layer"]
    seq_len: int
    attention: AttentionSettings = AttentionSettings()
    norm_scale_index: Literal["physical", "virtual"] = "physical"
    embed_rank: int = 0            # > 0: factorized embedding V×r with r↔d projections (tied head through them)
    residual: ResidualSettings = ResidualSettings()

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


@dataclass(frozen=True)
class MLPSettings:
    hidden: int
    activation: str              # the MLP component's name ("relu2", "leaky_relu2", a plugin's)
    negative_slope: float        # leaky_relu2's slope below 0 (0.0 where the activation has none)


@dataclass(frozen=True)
class ComponentUse:
    """A component named by the spec, with its validated configuration (plain data)."""
    name: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    stage: str = ""          # token components: "embed" (raw embedding) or "input" (after its norm)

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)


@dataclass(frozen=True)
class Block:
    """A physical block: the weights one or more virtual layers run."""
    index: int
    name: str                    # "4" for numbered blocks, "A" for named ones; the state-dict key
    mlp_settings: MLPSettings
    attn: Owner                  # the attention it runs (its own, or a borrowed block's)
    mlp: Owner                   # the MLP of its first pass

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_settings.hidden

    @property
    def activation(self) -> str:
        return self.mlp_settings.activation


@dataclass(frozen=True)
class VirtualLayer:
    """One executed layer: a pass of a physical block at a depth position."""
    index: int
    block: int
    pass_index: int              # how many times this block ran earlier in the same order
    passes: int                  # K: how many times this block runs in the order
    side: Literal["encoder", "decoder"]
    skip_slot: int | None        # decoder layers: row of skip_weights added before the block
    skip_from: int | None        # ... and the encoder layer whose output it adds
    parallel: bool               # attention and MLP read the same input
    xsa: bool                    # exclusive self-attention
    attn: Owner | None           # the modules this layer runs (no attention: None)
    mlp: Owner
    scalars: Owner               # owner of attn_scale / mlp_scale / resid_mix
    per_pass: Owner | None       # owner of per-pass parameters (iteration embedding, FiLM, ...)
    prev_pass: int | None        # virtual index of the same block's previous pass
    norm_scale: float            # 1/sqrt(physical index + 1) when model.norm_scale asks for it
    residual_scale: float        # 1/sqrt(K) when per_pass.residual_scale asks for it
    depth_index: int | None      # row of the sinusoidal depth encoding: the main order's (block, pass)
    hooks: tuple[str, ...] = ()  # per-pass components this layer runs, in the order they apply
    values: tuple[tuple[str, int], ...] = ()   # (value component, its layer slot) added to v here
    mlp_down: Owner | None = None  # the pass's own MLP down projection (sharing: mlp_down)


@dataclass(frozen=True)
class ExecPath:
    """A complete execution order; the built module prebuilds one forward per path."""
    name: str
    canonical: str               # the order in its canonical DSL form
    split: int                   # virtual layers before the U-Net split
    layers: tuple[VirtualLayer, ...]
    n_skips: int

    @property
    def depth(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class Phase:
    start: float       # training fraction from which `path` runs
    path: str
    step: int | None = None   # or the step from which it runs (start is then step / iterations)
    # A distribution over paths drawn afresh each training step (a schedule component such as
    # random_depth): (path, probability) pairs summing to 1. Empty: `path` runs every step.
    choices: tuple[tuple[str, float], ...] = ()

    def started(self, fraction: float, step: int) -> bool:
        return step >= self.step if self.step is not None else fraction >= self.start

    def weighted(self) -> tuple[tuple[str, float], ...]:
        """(path, probability) of what a training step of this phase runs."""
        return self.choices or ((self.path, 1.0),)

    def draw(self, seed: int, step: int) -> str:
        """The path training step `step` runs: a pure function of (seed, step), so every DDP rank
        and every resumed run draws the same. Evaluation and export never draw (eval_path)."""
        if not self.choices:
            return self.path
        u = _uniform(seed, step)
        acc = 0.0
        for path, p in self.choices:
            acc += p
            if u < acc:
                return path
        return self.choices[-1][0]


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """The splitmix64 finaliser: a fixed, platform-independent 64-bit mixing of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _uniform(seed: int, step: int) -> float:
    """A uniform number in [0, 1) from (seed, step), 53 bits."""
    return (_splitmix64(_splitmix64(seed & _MASK64) ^ (step & _MASK64)) >> 11) / float(1 << 53)


@dataclass(frozen=True)
class Compressor:
    name: Literal["zlib", "lzma", "zstd", "brotli", "none"] = "zlib"
    level: int | None = None
    byte_shuffle: bool = False

    @property
    def effective_level(self) -> int:
        if self.level is not None:
            return self.level
        return {"zlib": 9, "lzma": 9, "zstd": 22, "brotli": 11, "none": 0}[self.name]


@dataclass(frozen=True)
class QuantSettings:
    """The resolved `quant:` section: per-group rules, passthrough, container, compressor."""
    groups: dict[str, GroupQuant]
    passthrough_max_numel: int
    passthrough_dtype: Literal["fp16", "fp32"]
    control_dtype: Literal["fp16", "fp32"]
    container: Literal["torch", "recurc"]
    compressor: Compressor
    weights: str                 # the trained-weight profile the size model assumes
    anchor: str | None = None    # the size model's sibling "PATH=BYTES" (quant.anchor)
    fit_budget: bool = True      # export fits the artifact to the budget (recurc/fit_budget.py)
    fit_margin: int = 0          # ... this many bytes under it
    overrides: tuple[Override, ...] = ()   # per-tensor rules by name, applied in order
    rank: RankRule | None = None            # mixed precision by Hessian-trace rank
    lqer: LQERSettings | None = None        # low-rank corrections of the worst-quantized matrices


@dataclass(frozen=True)
class TrainSettings:
    tokens_per_step: int
    iterations: int
    max_wallclock_seconds: float | None
    warmup_steps: int
    lr_warmup_steps: int
    warmdown_steps: int
    matrix_lr: float
    scalar_lr: float
    embed_lr: float
    head_lr: float
    muon_momentum: float
    muon_momentum_warmup_start: float
    muon_momentum_warmup_steps: int
    muon_backend_steps: int
    beta1: float
    beta2: float
    weight_decay: float
    ema_decay: float | None
    grad_clip: float | None
    val_every: int
    val_tokens: int | None
    seed: int


@dataclass(frozen=True)
class CodeSettings:
    bytes: int | None
    emit: Literal["raw", "minified", "lzma"] | None


@dataclass(frozen=True)
class PerPassSettings:
    scope: Literal["looped", "all"]
    block_scalars: bool
    q_gain: bool
    iteration_embedding: Literal["none", "learned", "sinusoidal"]
    timestep_cap: float
    residual_scale: Literal["none", "inv_sqrt_k"]


# ---------------------------------------------------------------- the Plan
@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    model: ModelShape
    blocks: tuple[Block, ...]
    paths: dict[str, ExecPath]
    phases: tuple[Phase, ...]
    eval_path: str
    params: tuple[ParamInfo, ...]
    components: tuple[ComponentUse, ...]   # components beyond the core, in spec order
    per_pass: PerPassSettings
    sharing: Literal["block", "attention", "mlp", "mlp_down"]
    skips: Literal["none", "unet", "gated_unet"]
    named_blocks: bool
    quant: QuantSettings
    train: TrainSettings
    code: CodeSettings
    budget: int
    # The spec as validated data (provenance): what re-planning with overrides starts from
    # (estimate's budget guard, variants). Not part of the identity: canonical() ignores it.
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    # ---- (de)serialisation
    def to_json(self) -> dict[str, Any]:
        return to_data(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return from_data(cls, data)

    def canonical(self) -> dict[str, Any]:
        """Everything that defines the architecture and its export, spelling removed: two specs
        with equal canonical() build the same model and the same artifact. Derived from the
        same records as to_json, so no field can be missed; the free text, the provenance and
        the size model's weight profile (which changes neither model nor artifact) are left out."""
        data = self.to_json()
        for k in ("name", "description", "source"):
            data.pop(k)
        data["quant"].pop("weights")
        data["quant"].pop("anchor", None)
        return data

    # ---- views
    @property
    def main(self) -> ExecPath:
        return self.paths["main"]

    @property
    def layers(self) -> tuple[VirtualLayer, ...]:
        return self.main.layers

    @cached_property
    def param_by_name(self) -> dict[str, ParamInfo]:
        return {p.name: p for p in self.params}

    @property
    def block_names(self) -> dict[int, str] | None:
        return {b.index: b.name for b in self.blocks} if self.named_blocks else None

    def canonical_order(self, path: str = "main") -> str:
        return self.paths[path].canonical

    def uses(self, name: str) -> ComponentUse | None:
        return next((c for c in self.components if c.name == name), None)

    # ---- counts (no torch)
    @cached_property
    def unique_params(self) -> int:
        return sum(p.numel for p in self.params)

    def unique_by_group(self) -> dict[str, int]:
        out = {g: 0 for g in GROUPS}
        for p in self.params:
            out[p.group] += p.numel
        return out

    @cached_property
    def by_owner(self) -> dict[Owner, list[ParamInfo]]:
        out: dict[Owner, list[ParamInfo]] = {}
        for p in self.params:
            out.setdefault(p.owner, []).append(p)
        return out

    def owned(self, owner: Owner, recursive: bool = False) -> list[ParamInfo]:
        """Tensors an owner holds itself (or, recursive, with its sub-modules)."""
        if not recursive:
            return self.by_owner.get(owner, [])
        prefix = owner.path + "."
        return [p for p in self.params if p.owner == owner or p.name.startswith(prefix)]

    def effective_by_group(self, path: str = "main") -> dict[str, int]:
        """Parameters executed per token: a block run K times counts K times."""
        out = {g: 0 for g in GROUPS}
        for layer in self.paths[path].layers:
            owners = {layer.attn, layer.mlp, layer.scalars} | ({layer.per_pass} if layer.per_pass else set())
            for owner in owners:
                for p in self.by_owner.get(owner, ()):
                    out[p.group] += p.numel
        for p in self.params:
            if p.owner.kind == "model":
                out[p.group] += p.numel
        return out

    def effective_params(self, path: str = "main") -> int:
        return sum(self.effective_by_group(path).values())
