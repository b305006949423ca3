"""The quantization schemes of the records: clip search ("GPTQ-lite"), per-tensor overrides by name
and by Hessian-trace rank, LQER corrections, ternary with group scales and base-3 packing, FP8
e4m3, int8 per row for gates. Each round-trips quantize -> pack -> compress -> unpack ->
dequantize within its promised error, and `raw_bytes` is exactly what the container streams hold."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from recurc import quant
from recurc.errors import SpecError
from recurc.quantspec import (LQER, ClipRule, Compressor, GroupQuant, Override, QuantPatch, QuantSpec, RankRule,
                              lqer_raw_bytes, plan_tensor, raw_bytes)

CONTAINERS = [("recurc", "brotli"), ("recurc", "zlib"), ("torch", "lzma")]


def rt(state, groups, spec: QuantSpec, hessians=None):
    """quantize -> pack (serialize + compress) -> unpack; both states, their dequantized weights equal."""
    qs = quant.quantize_state(state, groups, spec, hessians=hessians)
    back = quant.unpack(quant.pack(qs, spec), spec, groups=groups)
    d1, d2 = quant.dequantize_state(qs), quant.dequantize_state(back)
    for n in state:
        np.testing.assert_array_equal(d1[n], d2[n], err_msg=n)
    return qs, back, d2


def with_container(spec: QuantSpec, container: str, comp: str) -> QuantSpec:
    return spec.model_copy(update={"container": container, "compressor": Compressor(name=comp)})


# ------------------------------------------------------------------ clip search ("GPTQ-lite")
def _row_errors(w, qmax, candidates):
    """Brute force: each row's squared error for each candidate quantile, fp16 scale."""
    out = []
    for c in candidates:
        clip = np.abs(w).max(axis=1) if c == 1.0 else quant.torch_quantile_rows(np.abs(w), c)
        s = np.maximum(clip / qmax, 1.0 / qmax).astype(np.float16).astype(np.float32)[:, None]   # GPTQ-lite's floor
        q = np.clip(np.round(w / s), -qmax, qmax)
        out.append(((w - q * s) ** 2).sum(axis=1, dtype=np.float64))
    return np.stack(out)          # (candidates, rows)


@pytest.mark.parametrize("per", ["row", "matrix"])
def test_clip_search_picks_least_error(per):
    rng = np.random.default_rng(0)
    w = (rng.standard_t(3, (48, 256)) * 0.3).astype(np.float32)     # heavy tails: clipping pays; rows above the floor
    gq = GroupQuant(bits=6, clip=ClipRule(kind="search", per=per))
    spec = QuantSpec(groups={"mlp": gq}, passthrough_max_numel=0)
    qs, _, deq = rt({"w": w}, {"w": "mlp"}, spec)
    errs = _row_errors(w, 31, gq.clip.candidates)
    got = ((w - deq["w"]) ** 2).sum(axis=1, dtype=np.float64)
    if per == "row":
        np.testing.assert_allclose(got, errs.min(axis=0), rtol=1e-9)
        assert len(set(np.argmin(errs, axis=0))) > 1      # rows really choose differently
    else:
        np.testing.assert_allclose(got.sum(), errs.sum(axis=1).min(), rtol=1e-9)
    # never worse than the plain absmax rule, strictly better on heavy tails
    absmax = QuantSpec(groups={"mlp": GroupQuant(bits=6, clip=ClipRule(kind="absmax"))}, passthrough_max_numel=0)
    plain = quant.dequantize_state(quant.quantize_state({"w": w}, {"w": "mlp"}, absmax))["w"]
    assert got.sum() < ((w - plain) ** 2).sum()


def test_clip_search_floors_the_scale_at_one_over_qmax():
    """GPTQ-lite's `clamp_min(1/clip_range)`: rows whose clip is under 1.0 all round at 1/qmax (weights
    kept small by weight decay), rows above it at their searched clip; absmax has no floor."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (8, 512)).astype(np.float32)
    w[4:] *= 40                                            # these rows' maxima exceed 1
    search = QuantSpec(groups={"mlp": GroupQuant(bits=6, clip=ClipRule(kind="search"))}, passthrough_max_numel=0)
    s = quant.quantize_state({"w": w}, {"w": "mlp"}, search).tensors["w"].scale.astype(np.float32)
    assert np.all(s[:4] == np.float32(np.float16(1 / 31))) and np.all(s[4:] > 1.01 / 31)
    absmax = QuantSpec(groups={"mlp": GroupQuant(bits=6, clip=ClipRule(kind="absmax"))}, passthrough_max_numel=0)
    s = quant.quantize_state({"w": w}, {"w": "mlp"}, absmax).tensors["w"].scale.astype(np.float32)
    assert np.all(s[:4] < 0.5 / 31)


def test_clip_search_with_gptq():
    """Search picks the scales, GPTQ rounds with them: with H = I GPTQ's sweep has nothing to
    spread, so it equals rounding; with a correlated H it lowers the output error tr(E H Eᵀ)."""
    rng = np.random.default_rng(1)
    w = (rng.standard_t(4, (32, 64)) * 0.05).astype(np.float32)
    lite = QuantSpec(groups={"mlp": GroupQuant(bits=4, clip=ClipRule(kind="search"))}, passthrough_max_numel=0)
    full = QuantSpec(groups={"mlp": GroupQuant(bits=4, clip=ClipRule(kind="search"), gptq=True)}, passthrough_max_numel=0)
    a = quant.quantize_state({"w": w}, {"w": "mlp"}, lite).tensors["w"]
    b = quant.quantize_state({"w": w}, {"w": "mlp"}, full, hessians={"w": np.eye(64)}).tensors["w"]
    np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(a.q, b.q)
    x = rng.normal(size=(512, 64)) @ rng.normal(size=(64, 64))
    h = x.T @ x
    _, _, deq = rt({"w": w}, {"w": "mlp"}, full, hessians={"w": h})
    e_gptq, e_rtn = w - deq["w"], w - quant.dequantize_state(quant.QuantizedState({"w": a}))["w"]
    assert np.trace(e_gptq @ h @ e_gptq.T) < np.trace(e_rtn @ h @ e_rtn.T)


# ------------------------------------------------------------------ overrides by name
def test_override_by_name_int8_gate_rows():
    """A small gate matrix (below passthrough_max_numel) forced to int8 per row, row absmax/127
    with fp16 scales: every value within half a step; a later override wins; fp16 by name."""
    rng = np.random.default_rng(2)
    state = {"blocks.0.attn.gate.weight": rng.normal(0, 0.004, (8, 64)).astype(np.float32),
             "blocks.1.attn.gate.weight": rng.normal(0, 3.0, (8, 64)).astype(np.float32),
             "blocks.0.mlp.fc.weight": rng.normal(0, 0.02, (128, 64)).astype(np.float32),
             "blocks.1.mlp.fc.weight": rng.normal(0, 0.02, (128, 64)).astype(np.float32)}
    groups = {n: "attention" if ".attn." in n else "mlp" for n in state}
    spec = QuantSpec(groups={"attention": GroupQuant(bits=6), "mlp": GroupQuant(bits=6)}, passthrough_max_numel=4096,
                     overrides=[Override(match="blocks.*.attn.gate.weight", force=True,
                                         set=QuantPatch(bits=8, clip=ClipRule(kind="absmax"))),
                                Override(match=["blocks.1.mlp.*"], set=QuantPatch(bits=5)),
                                Override(match="blocks.[1].mlp.fc.weight", set=QuantPatch(scheme="fp16"))])
    for container, comp in CONTAINERS:
        qs, back, deq = rt(state, groups, with_container(spec, container, comp))
        for n in ("blocks.0.attn.gate.weight", "blocks.1.attn.gate.weight"):
            t = back.tensors[n]
            assert (t.kind, t.bits, t.scale.dtype.name, t.scale.shape) == ("int", 8, "float16", (8,))
            w = state[n]
            np.testing.assert_array_equal(t.scale, (np.abs(w).max(axis=1) / 127).astype(np.float16))
            step = t.scale.astype(np.float32)[:, None]
            assert (np.abs(deq[n] - w) <= 0.5 * step + 128 * step * 2 ** -11).all()   # half a step + fp16 rounding
        assert back.tensors["blocks.0.mlp.fc.weight"].bits == 6
        assert back.tensors["blocks.1.mlp.fc.weight"].kind == "passthrough"
        assert back.tensors["blocks.1.mlp.fc.weight"].data.dtype == np.float16
    # the rule is data-free: the Plan and the size model see the same storage by name
    st = plan_tensor((8, 64), "float32", "attention", spec, name="blocks.3.attn.gate.weight")
    assert (st.kind, st.bits, st.per_row) == ("int", 8, True)
    assert plan_tensor((8, 64), "float32", "attention", spec).kind == "passthrough"   # no name: no override


# ------------------------------------------------------------------ rank rule
def _rank_state(rng):
    state = {f"blocks.{i}.mlp.{p}.weight": rng.normal(0, 0.02, (64, 64)).astype(np.float32)
             for i in range(4) for p in ("fc", "proj")}
    hess = {n: np.eye(64) * (1 + k) for k, n in enumerate(state)}      # trace grows with position
    return state, {n: "mlp" for n in state}, hess


def test_rank_by_hessian_trace_with_forced():
    rng = np.random.default_rng(3)
    state, groups, hess = _rank_state(rng)
    spec = QuantSpec(groups={"mlp": GroupQuant(bits=6)}, passthrough_max_numel=0,
                     rank=RankRule(match="blocks.*.mlp.*", forced=["blocks.0.*"], count=2,
                                   top=QuantPatch(bits=6), rest=QuantPatch(bits=5)), container="recurc")
    qs, back, _ = rt(state, groups, spec, hessians=hess)
    bits = {n: t.bits for n, t in back.tensors.items()}
    # forced: both of block 0; ranked: the two largest traces (block 3); the rest int5
    assert {n for n, b in bits.items() if b == 6} == {"blocks.0.mlp.fc.weight", "blocks.0.mlp.proj.weight",
                                                        "blocks.3.mlp.fc.weight", "blocks.3.mlp.proj.weight"}
    assert all(np.abs(t.q).max() <= 2 ** (t.bits - 1) - 1 for t in back.tensors.values())
    frac = spec.model_copy(update={"rank": RankRule(fraction=0.5, top=QuantPatch(bits=7))})
    got = quant.quantize_state(state, groups, frac, hessians=hess)
    assert sorted(n for n, t in got.tensors.items() if t.bits == 7) == sorted(list(state)[4:])


def test_rank_without_hessians_refuses_or_says_where():
    rng = np.random.default_rng(4)
    state, groups, hess = _rank_state(rng)
    spec = QuantSpec(groups={"mlp": GroupQuant(bits=6)}, passthrough_max_numel=0, rank=RankRule(count=3))
    with pytest.raises(SpecError, match="no Hessian was given for 'blocks.0.mlp.fc.weight' and 7 more") as e:
        quant.quantize_state(state, groups, spec)
    assert "without_hessians" in e.value.hint
    rest = spec.model_copy(update={"rank": RankRule(count=3, without_hessians="rest")})
    assert {t.bits for t in quant.quantize_state(state, groups, rest).tensors.values()} == {5}
    top = spec.model_copy(update={"rank": RankRule(count=3, without_hessians="top")})
    assert {t.bits for t in quant.quantize_state(state, groups, top).tensors.values()} == {6}
    # an estimate has no Hessians: the provisional choice is `rest` (forced tensors `top`)
    forced = spec.model_copy(update={"rank": RankRule(count=3, forced="blocks.1.*")})
    assert plan_tensor((64, 64), "float32", "mlp", forced, name="blocks.0.mlp.fc.weight").bits == 5
    assert plan_tensor((64, 64), "float32", "mlp", forced, name="blocks.1.mlp.fc.weight").bits == 6


# ------------------------------------------------------------------ LQER
def test_lqer_corrects_the_worst_matrices():
    rng = np.random.default_rng(5)
    state = {f"m{i}": (rng.normal(0, 0.02 * (1 + i), (96, 160))).astype(np.float32) for i in range(5)}
    state["m1"] += np.outer(rng.normal(size=96), rng.normal(size=160)).astype(np.float32) * 0.01   # a low-rank part
    groups = {n: "mlp" for n in state}
    base = QuantSpec(groups={"mlp": GroupQuant(bits=3, clip=ClipRule(kind="std", value=3))}, passthrough_max_numel=0)
    spec = base.model_copy(update={"lqer": LQER(rank=4, top_k=3)})
    plain = quant.dequantize_state(quant.quantize_state(state, groups, base))
    norms = {n: float(np.linalg.norm(state[n] - plain[n])) for n in state}
    worst = set(sorted(norms, key=norms.get)[-3:])
    for container, comp in CONTAINERS:
        qs, back, deq = rt(state, groups, with_container(spec, container, comp))
        assert {n for n, t in back.tensors.items() if t.lqer is not None} == worst
        for n in state:
            err = float(np.linalg.norm(state[n] - deq[n]))
            if n in worst:
                lq = back.tensors[n].lqer
                assert lq.a.shape == (96, 4) and lq.b.shape == (4, 160) and lq.b_scale.shape == (4, 3)
                assert np.abs(lq.a).max() <= 1 and np.abs(lq.b).max() <= 7      # int2 / int4 levels
                assert lq.a_scale.dtype == np.float16 and lq.b_scale.dtype == np.float16
                assert err < norms[n]                                           # the correction helps
            else:
                assert err == pytest.approx(norms[n], rel=1e-6)


# ------------------------------------------------------------------ ternary, groups of 128, base 3
def test_base3_packing():
    rng = np.random.default_rng(6)
    for n in (0, 1, 4, 5, 6, 1001):
        q = rng.integers(-1, 2, n).astype(np.int8)
        b = quant.pack_base3(q)
        assert len(b) == -(-n // 5)
        np.testing.assert_array_equal(quant.unpack_base3(b, n), q)
    with pytest.raises(SpecError, match="base-3"):
        quant.unpack_base3(bytes([243]), 5)


@pytest.mark.parametrize("container,comp", CONTAINERS)
def test_ternary_group_scales(container, comp):
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.03, (40, 100)).astype(np.float32)        # 4,000 values: 31.25 groups of 128
    spec = QuantSpec(groups={"mlp": GroupQuant(scheme="ternary", group_size=128, packing="base3")},
                     passthrough_max_numel=0, container=container, compressor=Compressor(name=comp))
    qs, back, deq = rt({"w": w}, {"w": "mlp"}, spec)
    t = back.tensors["w"]
    assert t.kind == "ternary" and t.packing == "base3" and t.group_size == 128 and t.scale.shape == (32,)
    flat = w.reshape(-1)
    means = np.array([np.abs(flat[i:i + 128]).mean(dtype=np.float64) for i in range(0, flat.size, 128)])
    np.testing.assert_allclose(t.scale.astype(np.float64), means, rtol=2 ** -10)
    s = np.repeat(means.astype(np.float32), 128)[:flat.size]
    np.testing.assert_array_equal(t.q.reshape(-1), np.clip(np.round(flat / s), -1, 1))
    assert set(np.unique(t.q)) <= {-1, 0, 1}
    # dequantized = trit * its group's stored scale, exactly
    np.testing.assert_array_equal(deq["w"].reshape(-1), t.q.reshape(-1) * np.repeat(t.scale.astype(np.float32), 128)[:flat.size])


# ------------------------------------------------------------------ FP8 e4m3
def test_fp8_encode_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    table = quant._fp8_table()
    finite = table[np.isfinite(table)]
    mids = (np.sort(finite)[1:] + np.sort(finite)[:-1]) / 2                      # exact ties
    x = np.concatenate([finite, mids, rng.normal(0, 0.02, 4000), rng.normal(0, 30, 4000),
                        rng.uniform(-2 ** -8, 2 ** -8, 2000), [0.0, -0.0, 448.0, -448.0]]).astype(np.float32)
    ours = quant.fp8_encode(x)
    ref = torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(quant.fp8_decode(ours), torch.from_numpy(ours).view(torch.float8_e4m3fn).float().numpy())
    assert quant.fp8_encode(np.array([1e4, -1e4], np.float32)).tolist() == [0x7e, 0xfe]   # saturates at ±448


@pytest.mark.parametrize("scaled", ["none", "row"])
def test_fp8_storage(scaled):
    rng = np.random.default_rng(9)
    w = rng.normal(0, 0.5, (64, 96)).astype(np.float32)
    spec = QuantSpec(groups={"attention": GroupQuant(scheme="fp8", fp8_scale=scaled)}, passthrough_max_numel=0,
                     container="recurc", compressor=Compressor(name="lzma"))
    for container in ("recurc", "torch"):
        qs, back, deq = rt({"w": w}, {"w": "attention"}, spec.model_copy(update={"container": container}))
        t = back.tensors["w"]
        assert t.kind == "fp8" and t.q.dtype == np.uint8 and (t.scale is None) == (scaled == "none")
        big = np.abs(w) > 2 ** -6 * (np.abs(w).max(axis=1, keepdims=True) / 448 if scaled == "row" else 1)
        rel = np.abs(deq["w"] - w)[big] / np.abs(w)[big]
        assert rel.max() <= 2 ** -4 * (1 + 2 ** -10)       # 3 mantissa bits: half an ulp (+ fp16 scale)


# ------------------------------------------------------------------ raw bytes
def test_raw_bytes_equal_container_streams():
    """For a state using every scheme, sum(raw_bytes) + LQER factors is the recurc container's
    stream length to the byte, and the same totals raw_payload_bytes reports."""
    rng = np.random.default_rng(10)
    state = {"tok_emb.weight": rng.normal(0, 0.5, (96, 64)).astype(np.float32),
             "blocks.0.attn.c_q.weight": rng.normal(0, 0.1, (64, 64)).astype(np.float32),
             "blocks.0.attn.gate.weight": rng.normal(0, 0.1, (4, 64)).astype(np.float32),
             "blocks.0.mlp.fc.weight": rng.normal(0, 0.1, (130, 64)).astype(np.float32),
             "blocks.0.mlp.proj.weight": rng.normal(0, 0.1, (64, 130)).astype(np.float32),
             "blocks.0.mlp.bias": rng.normal(0, 0.1, 5000).astype(np.float32),
             "blocks.0.attn_scale": rng.normal(1, 0.1, 64).astype(np.float32),
             "step": np.array([3], np.int64)}
    groups = {"tok_emb.weight": "embeddings", "blocks.0.attn_scale": "scalars", "step": "scalars"}
    groups |= {n: "attention" if ".attn." in n else "mlp" for n in state if n not in groups}
    spec = QuantSpec(groups={"embeddings": GroupQuant(scheme="fp8", fp8_scale="row"),
                             "attention": GroupQuant(bits=6, clip=ClipRule(kind="search")),
                             "mlp": GroupQuant(scheme="ternary", group_size=128, packing="base3")},
                     passthrough_max_numel=1000, container="recurc",
                     compressor=Compressor(name="none", byte_shuffle=True),
                     overrides=[Override(match="*.gate.weight", force=True, set=QuantPatch(clip=ClipRule(kind="absmax"), bits=8)),
                                Override(match="*.mlp.proj.weight", set=QuantPatch(scheme="int", bits=4, group_size=0, packing="int8")),
                                Override(match="tok_emb.weight", set=QuantPatch(fp8_scale="none"))],
                     lqer=LQER(rank=3, top_k=1, match="*.mlp.proj.weight"))
    qs = quant.quantize_state(state, groups, spec)
    assert {t.kind for t in qs.tensors.values()} == {"int", "ternary", "fp8", "passthrough"}
    raw = quant.pack(qs, spec)
    (hlen,) = struct.unpack_from("<I", raw, len(raw) - 8)
    predicted = 0
    for n, a in state.items():
        st = plan_tensor(a.shape, a.dtype.name, groups[n], spec, name=n)
        assert st.kind == qs.tensors[n].kind, n
        predicted += raw_bytes(st, a.shape)
    predicted += lqer_raw_bytes(state["blocks.0.mlp.proj.weight"].shape, spec.lqer)
    assert qs.tensors["blocks.0.mlp.proj.weight"].lqer is not None
    assert predicted == len(raw) - 8 - hlen == sum(quant.raw_payload_bytes(qs).values())
    assert raw_bytes(plan_tensor((4000,), "float32", "mlp", spec), (4000,)) == math.ceil(4000 / 5) + 32 * 2


# ------------------------------------------------------------------ spec syntax
def test_spec_validation():
    with pytest.raises(ValidationError, match="group_size applies to scheme ternary only"):
        GroupQuant(bits=6, group_size=64)
    with pytest.raises(ValidationError, match="base3"):
        GroupQuant(packing="base3")
    with pytest.raises(ValidationError, match="exactly one of count or fraction"):
        RankRule(count=2, fraction=0.5)
    with pytest.raises(ValidationError, match="quantiles in"):
        ClipRule(kind="search", candidates=(0.9, 1.5))
    with pytest.raises(ValidationError):
        Override(match=[])
    # a rule made inconsistent by an override is refused with the tensor's name
    spec = QuantSpec(groups={"mlp": GroupQuant(scheme="ternary", group_size=128)}, passthrough_max_numel=0,
                     overrides=[Override(match="w", set=QuantPatch(scheme="int"))])
    with pytest.raises(SpecError, match="tensor w: group_size applies to scheme ternary only"):
        plan_tensor((8, 8), "float32", "mlp", spec, name="w")


def test_spec_reaches_the_plan(tmp_path):
    """The `quant:` syntax of a YAML spec resolves into the Plan's QuantSettings records."""
    from recurc import make_plan
    from recurc.ir import LQERSettings, Override as IROverride, RankRule as IRRankRule
    tiny = (Path(__file__).parents[1] / "specs/tiny.yaml").as_posix()
    (tmp_path / "s.yaml").write_text(
        f"extends: {tiny}\n"
        "quant:\n"
        "  groups:\n"
        "    mlp: {scheme: ternary, group_size: 128, packing: base3}\n"
        "    attention: {bits: 6, clip: {kind: search, per: matrix}, gptq: true}\n"
        "  overrides:\n"
        "    - {match: 'blocks.*.attn.c_q.weight', set: {scheme: fp8, fp8_scale: row}}\n"
        "  rank: {match: 'blocks.*.attn.*', forced: ['blocks.0.*'], fraction: 0.5, without_hessians: rest}\n"
        "  lqer: {rank: 4, top_k: 3}\n")
    plan = make_plan(tmp_path / "s.yaml")
    q = plan.quant
    assert isinstance(q.overrides[0], IROverride) and q.overrides[0].set.scheme == "fp8"
    assert isinstance(q.rank, IRRankRule) and q.rank.forced == ("blocks.0.*",) and q.rank.fraction == 0.5
    assert isinstance(q.lqer, LQERSettings) and q.lqer.rank == 4
    assert q.groups["attention"].clip.per == "matrix" and q.groups["mlp"].packing == "base3"
    st = plan_tensor((256, 256), "float32", "attention", q, name="blocks.1.attn.c_q.weight")
    assert (st.kind, st.per_row) == ("fp8", True)
    st = plan_tensor((256, 256), "float32", "attention", q, name="blocks.0.attn.c_k.weight")
    assert (st.kind, st.bits, st.gptq) == ("int", 6, True)
