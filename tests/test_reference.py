"""Tests of the hand-written reference models alone (benchmarks/reference.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_REF_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference.py"
_spec = importlib.util.spec_from_file_location("recurc_benchmarks_reference", _REF_PATH)
ref = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ref  # dataclasses needs the module registered
_spec.loader.exec_module(ref)

TINY = dict(vocab_size=64, dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2, seq_len=16)


def _block_param_count(dim: int, heads: int, kv_heads: int, mlp_mult: int) -> int:
    head_dim = dim // heads
    kv_dim = kv_heads * head_dim
    attn = dim * dim + 2 * kv_dim * dim + dim * dim + heads  # q, k, v, out-proj, q_gain
    mlp = 2 * mlp_mult * dim * dim  # fc, proj
    scalars = dim + dim + 2 * dim  # attn_scale, mlp_scale, resid_mix
    return attn + mlp + scalars


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter (incl. the zero-init projections) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 2 and "skip" not in name and "resid_mix" not in name:
                p.copy_(noise * p.size(1) ** -0.5)
            else:
                p.add_(0.1 * noise)


@pytest.fixture(scope="module")
def full_baseline():
    torch.manual_seed(0)
    return ref.Reference(ref.RefConfig())  # ~0.2 s on CPU (the meta device costs ~2 s to warm up)


def test_full_baseline_param_count_is_published_figure(full_baseline):
    assert full_baseline.num_params() == 17_059_912
    per_block = _block_param_count(512, 8, 4, 2)
    assert per_block == 1_837_064
    assert 1024 * 512 + 9 * per_block + 4 * 512 == 17_059_912


def test_full_baseline_parameter_names_and_shapes(full_baseline):
    shapes = {k: tuple(v.shape) for k, v in full_baseline.state_dict().items()}
    assert shapes["tok_emb.weight"] == (1024, 512)
    assert shapes["skip_weights"] == (4, 512)
    for i in range(9):
        b = f"blocks.{i}."
        assert shapes[b + "attn.c_q.weight"] == (512, 512)
        assert shapes[b + "attn.c_k.weight"] == (256, 512)
        assert shapes[b + "attn.c_v.weight"] == (256, 512)
        assert shapes[b + "attn.proj.weight"] == (512, 512)
        assert shapes[b + "attn.q_gain"] == (8,)
        assert shapes[b + "mlp.fc.weight"] == (1024, 512)
        assert shapes[b + "mlp.proj.weight"] == (512, 1024)
        assert shapes[b + "attn_scale"] == (512,)
        assert shapes[b + "mlp_scale"] == (512,)
        assert shapes[b + "resid_mix"] == (2, 512)
    assert len(shapes) == 2 + 9 * 10  # no rope buffers, no extras


def test_looped_full_size_param_count():
    m = ref.LoopedReference()
    expected = 1024 * 512 + 11 * _block_param_count(512, 8, 4, 2) + 6 * 512
    assert m.num_params() == expected == 20_735_064
    assert len(m.blocks) == 11
    assert tuple(m.skip_weights.shape) == (6, 512)


def test_init_values():
    torch.manual_seed(0)
    m = ref.Reference(ref.RefConfig(num_layers=9, **TINY))
    b = m.blocks[0]
    assert torch.equal(b.resid_mix[0], torch.ones(32)) and torch.equal(b.resid_mix[1], torch.zeros(32))
    assert torch.equal(b.attn_scale, torch.ones(32)) and torch.equal(b.mlp_scale, torch.ones(32))
    assert torch.equal(b.attn.q_gain, torch.full((4,), 1.5))
    assert torch.equal(m.skip_weights, torch.ones(4, 32))
    assert not b.attn.proj.weight.any() and not b.mlp.proj.weight.any()
    assert abs(m.tok_emb.weight.std().item() - 0.005) < 0.001


@pytest.mark.parametrize("cls,layers", [(ref.Reference, 9), (ref.LoopedReference, 11)])
def test_tiny_forward_backward(cls, layers):
    torch.manual_seed(0)
    m = cls(ref.RefConfig(num_layers=layers, **TINY))
    idx = torch.randint(0, 64, (2, 16))
    logits = m(idx)
    assert logits.shape == (2, 16, 64) and logits.dtype == torch.float32
    assert logits.abs().max() <= 30.0
    loss = m(idx, targets=torch.roll(idx, -1, dims=1))
    assert loss.ndim == 0 and torch.isfinite(loss)
    # zero-init output projections: the model starts as "embedding -> tied head"
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.5
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the zero-init projections get gradient, so training can move them
    assert m.blocks[0].mlp.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls,layers", [(ref.Reference, 9), (ref.LoopedReference, 11)])
def test_causality(cls, layers):
    torch.manual_seed(0)
    m = cls(ref.RefConfig(num_layers=layers, **TINY))
    _randomize(m)
    idx = torch.randint(0, 64, (1, 16))
    idx2 = idx.clone()
    idx2[0, 10] = (idx[0, 10] + 1) % 64
    with torch.no_grad():
        a, b = m(idx), m(idx2)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-4  # the change does propagate


def test_looped_reuses_block_objects():
    """Running the loop counts blocks 4 and 5 twice: a hook sees 13 calls."""
    torch.manual_seed(0)
    m = ref.LoopedReference(ref.RefConfig(num_layers=11, **TINY))
    calls = []
    for i, blk in enumerate(m.blocks):
        blk.register_forward_hook(lambda mod, inp, out, i=i: calls.append(i))
    m(torch.randint(0, 64, (1, 8)))
    assert tuple(calls) == ref.LOOP_ORDER == (0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10)


def test_skip_weights_are_lifo():
    """skip_weights[0] pairs the last encoder output with the first decoder block."""
    torch.manual_seed(0)
    m = ref.Reference(ref.RefConfig(num_layers=9, **TINY))
    _randomize(m)
    out, dec_in = {}, {}
    for i in range(9):
        m.blocks[i].register_forward_hook(lambda mod, inp, o, i=i: out.__setitem__(i, o))
    for i in range(4, 9):
        m.blocks[i].register_forward_hook(lambda mod, inp, o, i=i: dec_in.__setitem__(i, inp[0]))
    with torch.no_grad():
        m(torch.randint(0, 64, (1, 8)))
    # decoder index j (block 4 + j) gets x = prev + skip_weights[j] * enc_out[3 - j]
    sw = m.skip_weights
    torch.testing.assert_close(dec_in[4], out[3] + sw[0] * out[3])
    torch.testing.assert_close(dec_in[5], out[4] + sw[1] * out[2])
    torch.testing.assert_close(dec_in[6], out[5] + sw[2] * out[1])
    torch.testing.assert_close(dec_in[7], out[6] + sw[3] * out[0])
    # 4 skips for 5 decoder blocks: the last decoder block gets no skip
    torch.testing.assert_close(dec_in[8], out[7], rtol=0, atol=0)


def test_bf16_autocast_forward():
    torch.manual_seed(0)
    m = ref.Reference(ref.RefConfig(num_layers=9, **TINY))
    idx = torch.randint(0, 64, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(idx)
    assert logits.dtype == torch.float32
