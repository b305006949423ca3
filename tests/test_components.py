"""Each built-in component's forward against a small hand-written formula on the same weights,
its parameter table against the built module, and a spec using them all compiled fullgraph with
no recompiles."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recurc.plan import make_plan
from recurc.spec import spec_from_text

from model_helpers import randomised_model

BASE = """
name: c
model: {{vocab_size: 64, dim: 32, heads: 4, kv_heads: 2, seq_len: 16{model}}}
blocks: 3
order: "0,1x2,2"
{extra}
"""


def _model(model: str = "", extra: str = ""):
    plan = make_plan(spec_from_text(BASE.format(model=model, extra=extra)))
    return plan, randomised_model(plan)


IDX = torch.tensor([[5, 1, 7, 7, 2, 1, 9, 3]])


def test_smear_gate_scalar_form_with_bos_fix():
    _, m = _model(extra="components: [{use: smear_gate, form: scalar, bos_fix: true}]")
    sg = m.smear_gate
    x = torch.randn(1, 8, 32)
    out = sg(x, IDX)
    w, lam = sg.fc.weight[0], sg.scale[0]
    for t in range(8):
        prev = x[0, t - 1] if t > 0 else torch.zeros(32)
        gate = lam * torch.sigmoid(x[0, t, :12] @ w) * (0.0 if IDX[0, t] == 1 else 1.0)
        torch.testing.assert_close(out[0, t], x[0, t] + gate * prev)


def test_smear_gate_vector_form():
    _, m = _model(extra="components: [{use: smear_gate, form: vector}]")
    x = torch.randn(1, 8, 32)
    g = torch.sigmoid(m.smear_gate.gate)
    want = torch.stack([(1 - g) * x[0, t] + g * (x[0, t - 1] if t else torch.zeros(32)) for t in range(8)])
    torch.testing.assert_close(m.smear_gate(x, IDX)[0], want)


def test_bigram_hash():
    _, m = _model(extra="components: [{use: bigram_hash, buckets: 50, dim: 8}]")
    bh = m.bigram_hash
    x = torch.randn(1, 8, 32)
    out = bh(x, IDX)
    for t in range(8):
        b = 49 if t == 0 else ((36313 * int(IDX[0, t])) ^ (27191 * int(IDX[0, t - 1]))) % 49
        torch.testing.assert_close(out[0, t], x[0, t] + bh.scale[0] * (bh.proj.weight @ bh.embed.weight[b]))


def test_value_embeddings_reach_the_listed_layers_only():
    plan, m = _model(extra="components: [{use: value_embeddings, dim: 8, layers: [1], index: physical}]")
    assert [l.values for l in plan.layers] == [(), (("value_embeddings", 0),), (("value_embeddings", 0),), ()]
    ve = m.value_embeddings
    prepared = ve.prepare(IDX, torch.float32)
    want = ve.layer_scales[0, 0] * ve.scale0[0] * (ve.embed0.weight[IDX] @ ve.proj0.weight.T)
    torch.testing.assert_close(ve.extra(prepared, 0), want)


def test_attention_output_gates_and_low_rank_key():
    from recurc.nn.layers import Rotary
    for gate in ("dense", "sparse", "sigmoid2"):
        _, m = _model(model=f", attention: {{gate: {gate}, gate_scale: 2.0, k_rank: 4}}")
        attn = m.blocks["0"].attn
        x = torch.randn(1, 8, 32)
        rot = Rotary(8, 10000.0, 16)
        q = attn.c_q(x).view(1, 8, 4, 8).transpose(1, 2)
        k = (x @ attn.c_k_down.weight.T @ attn.c_k.weight.T).view(1, 8, 2, 8).transpose(1, 2)
        v = attn.c_v(x).view(1, 8, 2, 8).transpose(1, 2)
        q, k = rot(F.rms_norm(q, (8,))), rot(F.rms_norm(k, (8,)))
        q = q * attn.q_gain[None, :, None, None]
        y = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
        y = y.transpose(1, 2)                               # B, T, H, hd
        W = attn.gate.weight
        if gate == "dense":
            g = torch.sigmoid(x @ W.T)
        elif gate == "sparse":
            g = torch.sigmoid(2.0 * (x[..., :12] @ W.T))
        else:
            g = 2 * torch.sigmoid(x[..., :12] @ W.T)
        want = attn.proj((y * g[..., None]).reshape(1, 8, 32))
        torch.testing.assert_close(attn(x, rot, False), want, rtol=1e-4, atol=1e-5)


def test_document_mask_keeps_documents_apart():
    from recurc.nn.layers import document_mask
    mask = document_mask(IDX, 1)[0, 0]
    doc = [0, 1, 1, 1, 1, 2, 2, 2]
    for i in range(8):
        for j in range(8):
            assert bool(mask[i, j]) == (j <= i and doc[i] == doc[j])
    _, m = _model(model=", attention: {document_mask: true}")
    # the loss at a position does not depend on tokens of an earlier document
    a, b = IDX.clone(), IDX.clone()
    b[0, 0] = 11
    la = m(a)[0, 1:]
    lb = m(b)[0, 1:]
    torch.testing.assert_close(la, lb)


def test_factorized_embedding_and_tied_head():
    _, m = _model(model=", embed_rank: 6")
    x = F.rms_norm(m.tok_emb.weight[IDX] @ m.emb_up.weight.T, (32,))
    assert m.tok_emb.weight.shape == (64, 6) and m.head_down.weight.shape == (6, 32)
    logits = m._head(x, None)
    want = F.rms_norm(x, (32,)) @ m.head_down.weight.T @ m.tok_emb.weight.T
    torch.testing.assert_close(logits, 30 * torch.tanh(want / 30))


@pytest.mark.parametrize("form", ["two_lane", "lane_merge"])
def test_lanes(form):
    plan, m = _model(extra=f"features: {{index: physical, parallel_residual_from: 1, residual_form: {form}}}\n"
                           "skips: none")
    if form == "two_lane":
        assert m.lane_post.shape == (3, 2, 2) and m.lane_resid.shape == (3, 2)
    run = m.runs["main"][1]
    lane0, lane1, x0 = torch.randn(3, 1, 8, 32).unbind(0)
    s = run.scalars
    norm = lambda t: F.rms_norm(t, (32,))  # noqa: E731
    a = s.attn_scale * run.attn(norm(s.resid_mix[0] * lane0 + s.resid_mix[1] * x0), m.rotary, False)
    mm = s.mlp_scale * run.mlp(norm(lane1))
    got0, got1 = m._lanes(run, lane0, lane1, x0, None, {})
    if form == "lane_merge":
        torch.testing.assert_close(got0, lane0 + a)
        torch.testing.assert_close(got1, lane1 + mm)
        lam = m.lane_merge[0]
        torch.testing.assert_close(m._merge(got0, got1), lam * got0 + (1 - lam) * got1)
    else:
        P, r = m.lane_post[1], m.lane_resid[1]
        torch.testing.assert_close(got0, r[0] * lane0 + P[0, 0] * a + P[1, 0] * mm)
        torch.testing.assert_close(got1, r[1] * lane1 + P[0, 1] * a + P[1, 1] * mm)
        torch.testing.assert_close(m._merge(got0, got1), (got0 + got1) / 2)


@pytest.mark.slow
def test_everything_together_compiles_fullgraph_without_recompiles():
    plan, m = _model(
        model=", attention: {gate: sparse, document_mask: true}, embed_rank: 16",
        extra="""features: {index: virtual, parallel_residual_from: 2, residual_form: two_lane}
per_pass: {iteration_embedding: learned, film: true, timestep_scale: true, cross_repeat_scale: true}
components:
  - {use: smear_gate, form: scalar, bos_fix: true}
  - {use: bigram_hash, buckets: 64, dim: 8}
  - {use: value_embeddings, dim: 8, layers: all, index: virtual}
""")
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    batch = lambda: (torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))  # noqa: E731
    idx, tgt = batch()
    compiled(idx, tgt).backward()
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(2):
            compiled(*batch()).backward()
        torch.testing.assert_close(compiled(idx, tgt), m(idx, tgt))


def test_the_emitted_script_carries_every_component(tmp_path):
    import runpy

    from recurc.emit import emit
    plan, m = _model(
        model=", attention: {gate: dense, k_rank: 4, document_mask: true}, embed_rank: 16",
        extra="""features: {index: physical, parallel_residual_from: 1, residual_form: lane_merge}
components:
  - {use: smear_gate, form: vector}
  - {use: bigram_hash, buckets: 64, dim: 8}
  - {use: value_embeddings, tables: 2, dim: 8, layers: [0, 2], index: physical}
""")
    script = tmp_path / "train_gpt.py"
    script.write_text(emit(plan, "raw"))
    ns = runpy.run_path(str(script), run_name="emitted")
    emitted = ns["build_model"](ns["PLAN"], torch.device("cpu"))
    emitted.load_state_dict(m.state_dict())
    idx = torch.randint(0, 64, (2, 16))
    for path in plan.paths:
        torch.testing.assert_close(emitted(idx, path=path), m(idx, path=path))
