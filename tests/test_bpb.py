"""Exact BPB: the byte tables against decoded text, and the accumulator's arithmetic."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from runtime.bpb import BPBAccumulator, ByteCounter, bits_per_byte
from runtime.data import read_shard
from runtime.demo import BOS_ID, DemoData, build_demo_data


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return build_demo_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def sp(demo: DemoData) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(demo.tokenizer_path))


@pytest.fixture(scope="module")
def counter(sp: spm.SentencePieceProcessor) -> ByteCounter:
    return ByteCounter.from_sentencepiece(sp)


def _documents(tokens: np.ndarray) -> list[np.ndarray]:
    """Split a shard's stream at its BOS tokens; each document keeps its BOS."""
    starts = np.flatnonzero(tokens == BOS_ID).tolist() + [tokens.size]
    return [tokens[a:b].astype(np.int64) for a, b in zip(starts[:-1], starts[1:])]


def _decoded_bytes(sp: spm.SentencePieceProcessor, ids) -> int:
    return len(sp.decode([int(i) for i in ids]).encode("utf-8"))


def test_tables_match_decoded_text_on_demo_val(demo, sp, counter) -> None:
    docs = _documents(np.asarray(read_shard(demo.val_path)))
    assert len(docs) > 10
    for doc in docs:
        # Targets are doc[1:]; the BOS before them is the boundary that drops the
        # first piece's "▁", exactly as sp.decode does.
        assert counter.sequence_bytes(doc) == _decoded_bytes(sp, doc[1:])
    # Over the whole stream (documents back to back) the counts add up too.
    stream = np.concatenate(docs)
    assert counter.sequence_bytes(stream) == sum(_decoded_bytes(sp, d[1:]) for d in docs)


@pytest.mark.parametrize("text", [
    "Hello,   world: a plain ASCII line with 12345 digits.",
    "naïve café — “quotes” and ellipsis…",
    "日本語のテキスト and emoji 🙂🚀 need byte fallback",
])
def test_tables_match_decoded_text_with_byte_fallback(sp, counter, text: str) -> None:
    ids = [BOS_ID] + sp.encode(text)
    if "日本" in text:
        assert any(sp.is_byte(i) for i in ids)  # the case is really exercised
    assert counter.sequence_bytes(ids) == _decoded_bytes(sp, ids[1:])


def test_table_rules(sp, counter) -> None:
    pieces = {sp.id_to_piece(i): i for i in range(sp.vocab_size())}
    for special in ("<unk>", "<s>", "</s>"):
        i = pieces[special]
        assert counter.is_boundary[i] and counter.base_bytes[i] == 0
    byte_id = pieces["<0xE6>"]
    assert counter.base_bytes[byte_id] == 1 and not counter.has_leading_space[byte_id]
    the = pieces["\u2581the"]
    assert counter.base_bytes[the] == 3 and counter.has_leading_space[the]
    # "▁the" is 4 bytes after an ordinary token, 3 right after a boundary (BOS).
    word = pieces["in"]
    assert counter.token_bytes(torch.tensor([word, BOS_ID]), torch.tensor([the, the])).tolist() == [4, 3]


def test_padded_vocab_ids_are_zero_byte_boundaries(sp) -> None:
    counter = ByteCounter.from_sentencepiece(sp, vocab_size=1100)
    assert counter.vocab_size == 1100
    assert counter.is_boundary[1024:].all() and not counter.base_bytes[1024:].any()


def test_from_path_and_missing_file(demo, counter, tmp_path: Path) -> None:
    from_path = ByteCounter.from_sentencepiece(demo.tokenizer_path)
    assert torch.equal(from_path.base_bytes, counter.base_bytes)
    from recurc.errors import SpecError
    with pytest.raises(SpecError, match="nope.model"):       # one clean error, never a traceback
        ByteCounter.from_sentencepiece(tmp_path / "nope.model")
    (tmp_path / "text.model").write_text("not a model")
    with pytest.raises(SpecError, match="not a SentencePiece model"):
        ByteCounter.from_sentencepiece(tmp_path / "text.model")


def test_bits_per_byte_formula() -> None:
    # mean CE 2 nats over 100 tokens of 400 bytes: 2/ln2 * 100/400 bits per byte.
    assert bits_per_byte(200.0, 400) == pytest.approx(2 / math.log(2) * 100 / 400)
    with pytest.raises(ValueError, match="total_bytes"):
        bits_per_byte(1.0, 0)


def test_accumulator_matches_direct_computation(demo, counter) -> None:
    tokens = torch.from_numpy(np.asarray(read_shard(demo.val_path)).astype(np.int64))
    seq = 128
    n = ((tokens.numel() - 1) // seq) * seq
    x, y = tokens[:n].reshape(-1, seq), tokens[1:n + 1].reshape(-1, seq)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(x.shape[0], seq, counter.vocab_size, generator=gen)
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")

    acc, acc_mean = BPBAccumulator(counter), BPBAccumulator(counter)
    for b in range(0, x.shape[0], 8):  # uneven last batch on purpose
        xs, ys, ls = x[b:b + 8], y[b:b + 8], nll.view(x.shape)[b:b + 8]
        acc.update(ls, xs, ys)
        acc_mean.update_mean(ls.mean(), xs, ys)

    direct_bytes = counter.sequence_bytes(tokens[:n + 1])
    assert acc.tokens == n and acc.bytes == direct_bytes
    assert acc.mean_loss() == pytest.approx(nll.double().mean().item(), rel=1e-9)
    expected = nll.double().mean().item() / math.log(2) * n / direct_bytes
    assert acc.bpb() == pytest.approx(expected, rel=1e-9)
    assert acc_mean.bpb() == pytest.approx(expected, rel=1e-6)


def test_all_reduce_sums_over_a_process_group(counter, tmp_path: Path) -> None:
    import torch.distributed as dist

    acc = BPBAccumulator(counter)
    acc.update(10.0, torch.tensor([5, 6]), torch.tensor([6, 7]))
    before = acc.totals.clone()
    acc.all_reduce()  # no process group: unchanged
    assert torch.equal(acc.totals, before)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        acc.all_reduce()
        assert torch.equal(acc.totals, before)  # one rank: the sum is itself
    finally:
        dist.destroy_process_group()
