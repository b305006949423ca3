"""Shards, the distributed loader, validation tokens and the demo data build."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.data import (HEADER_BYTES, SHARD_MAGIC, DistributedTokenLoader, ShardError,
                          find_shards, load_validation_tokens, read_header, read_shard,
                          validation_batches, write_shard)
from runtime.demo import BOS_ID, build_demo_data


# --------------------------------------------------------------------------- shards

def test_round_trip_and_layout(tmp_path: Path) -> None:
    tokens = np.array([0, 1, 2, 1023, 65535, 7], dtype=np.int64)
    path = write_shard(tmp_path / "s.bin", tokens)
    raw = path.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[:3].tolist() == [SHARD_MAGIC, 1, 6] and not header[3:].any()
    assert len(raw) == HEADER_BYTES + 2 * 6
    for mmap in (True, False):
        got = read_shard(path, mmap=mmap)
        assert got.dtype == np.dtype("<u2")
        assert got.tolist() == tokens.tolist()
    assert read_header(path) == 6


def test_round_trip_accepts_lists_tensors_and_empty(tmp_path: Path) -> None:
    assert read_shard(write_shard(tmp_path / "a.bin", [5, 6, 7])).tolist() == [5, 6, 7]
    assert read_shard(write_shard(tmp_path / "b.bin", torch.tensor([9, 8]))).tolist() == [9, 8]
    assert read_shard(write_shard(tmp_path / "c.bin", [])).size == 0


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "s.bin", [1, 2, 3])
    with pytest.raises(ShardError):
        write_shard(path, [1, 70000])  # rejected before anything is written
    assert read_shard(path).tolist() == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin"]


@pytest.mark.parametrize("tokens, needle", [
    ([1, 65536], "65536 at index 1 does not fit in uint16"),
    ([-1, 2], "-1 at index 0"),
    ([[1, 2]], "must be 1-D"),
    (np.array([1.0, 2.0]), "must be integers"),
])
def test_write_rejects_bad_tokens(tmp_path: Path, tokens, needle: str) -> None:
    with pytest.raises(ShardError, match=needle) as err:
        write_shard(tmp_path / "bad.bin", tokens)
    assert "bad.bin" in str(err.value)
    assert not (tmp_path / "bad.bin").exists()


def _corrupt(path: Path, *, magic: int | None = None, version: int | None = None,
             count: int | None = None, extra: bytes = b"", cut: int = 0) -> Path:
    raw = bytearray(path.read_bytes())
    header = np.frombuffer(bytes(raw[:HEADER_BYTES]), dtype="<i4").copy()
    for i, v in ((0, magic), (1, version), (2, count)):
        if v is not None:
            header[i] = v
    raw[:HEADER_BYTES] = header.tobytes()
    data = bytes(raw) + extra
    path.write_bytes(data[:len(data) - cut])
    return path


@pytest.mark.parametrize("kwargs, needle", [
    (dict(magic=12345), "wrong magic 12345 \\(expected 20240520\\)"),
    (dict(version=2), "unsupported shard version 2"),
    (dict(cut=2), "truncated: header says 4 tokens \\(1032 bytes\\) but the file is 1030 bytes"),
    (dict(extra=b"\0\0"), "oversized: header says 4 tokens"),
    (dict(count=5), "truncated: header says 5 tokens"),
    (dict(count=-3), "negative token count"),
    (dict(cut=1030), "shorter than the 1024-byte header"),
])
def test_read_rejects_bad_files(tmp_path: Path, kwargs: dict, needle: str) -> None:
    path = _corrupt(write_shard(tmp_path / "shard_x.bin", [1, 2, 3, 4]), **kwargs)
    with pytest.raises(ShardError, match=needle) as err:
        read_shard(path)
    assert str(err.value).startswith(str(path))
    assert isinstance(err.value, ValueError) and err.value.path == path


def test_find_shards_sorted_and_clear_error(tmp_path: Path) -> None:
    for name in ("t_000002.bin", "t_000000.bin", "t_000001.bin"):
        write_shard(tmp_path / name, [1])
    assert [p.name for p in find_shards(tmp_path / "t_*.bin")] == \
        ["t_000000.bin", "t_000001.bin", "t_000002.bin"]
    with pytest.raises(FileNotFoundError, match="no shard matches .*v_\\*.bin.*holds no matching file"):
        find_shards(tmp_path / "v_*.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_shards(tmp_path / "nowhere" / "*.bin")


# --------------------------------------------------------------------------- loader

SIZES = (1000, 37, 0, 523)  # uneven shards, one empty, so batches cross shard ends


@pytest.fixture()
def shards(tmp_path: Path) -> tuple[str, np.ndarray]:
    """Shards whose tokens are consecutive numbers, so a token names its stream position."""
    start = 0
    for i, n in enumerate(SIZES):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.arange(start, start + n) % 65536)
        start += n
    return str(tmp_path / "fineweb_train_*.bin"), np.arange(start)


def _reference_batch(stream: np.ndarray, step: int, rank: int, world: int, tpr: int, seq: int):
    """The challenge's loader: global chunks of world*(tpr+1), rank r takes the r-th span."""
    span = tpr + 1
    begin = step * world * span + rank * span
    local = torch.from_numpy(np.resize(stream, begin + span)[begin:].astype(np.int64))
    return local[:-1].reshape(-1, seq), local[1:].reshape(-1, seq)


def test_seed_zero_matches_challenge_order(shards) -> None:
    pattern, stream = shards
    world, tpr, seq = 3, 96, 32
    loaders = [DistributedTokenLoader(pattern, r, world, seed=0) for r in range(world)]
    for step in range(30):  # ~9.5 passes over the data: wraps around several times
        for r, loader in enumerate(loaders):
            x, y = loader.next_batch(tpr, seq)
            ex, ey = _reference_batch(stream, step, r, world, tpr, seq)
            assert x.dtype == torch.int64 and x.shape == (tpr // seq, seq)
            assert torch.equal(x, ex) and torch.equal(y, ey)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_ranks_get_disjoint_adjacent_spans(shards, seed: int) -> None:
    pattern, _ = shards
    world, tpr, seq = 4, 64, 16
    loaders = [DistributedTokenLoader(pattern, r, world, seed=seed) for r in range(world)]
    seen: list[int] = []
    for _ in range(3):
        spans = []
        for loader in loaders:
            x, y = loader.next_batch(tpr, seq)
            assert torch.equal(x.flatten()[1:], y.flatten()[:-1])  # y is x shifted by one
            spans.append(torch.cat([x.flatten(), y.flatten()[-1:]]).tolist())
        flat = [t for s in spans for t in s]
        seen.extend(flat)
    # Within one pass over the data each position appears at most once.
    assert len(seen) == len(set(seen)) and len(seen) < sum(SIZES)


def test_deterministic_and_seed_dependent(shards) -> None:
    pattern, _ = shards

    def first_batches(seed: int) -> list[torch.Tensor]:
        loader = DistributedTokenLoader(pattern, 1, 2, seed=seed)
        return [loader.next_batch(48, 16)[0] for _ in range(5)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize("seed", [0, 3])
def test_resume_from_state_dict(shards, seed: int) -> None:
    pattern, _ = shards
    loader = DistributedTokenLoader(pattern, 0, 2, seed=seed)
    for _ in range(7):
        loader.next_batch(64, 32)
    state = json.loads(json.dumps(loader.state_dict()))  # survives serialization
    assert all(isinstance(v, int) for v in state.values())
    expected = [loader.next_batch(64, 32) for _ in range(20)]

    resumed = DistributedTokenLoader(pattern, 0, 2, seed=seed)
    resumed.load_state_dict(state)
    for ex, ey in expected:
        x, y = resumed.next_batch(64, 32)
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert resumed.state_dict() == loader.state_dict()


def test_resume_refuses_other_data_or_seed(shards, tmp_path: Path) -> None:
    pattern, _ = shards
    state = DistributedTokenLoader(pattern, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed is 1 in the checkpoint but 2 here"):
        DistributedTokenLoader(pattern, seed=2).load_state_dict(state)
    write_shard(tmp_path / "other_000000.bin", np.arange(10))
    with pytest.raises(ValueError, match="num_files"):
        DistributedTokenLoader(tmp_path / "other_*.bin", seed=1).load_state_dict(state)


def test_loader_argument_errors(shards, tmp_path: Path) -> None:
    pattern, _ = shards
    with pytest.raises(ValueError, match="rank < world_size"):
        DistributedTokenLoader(pattern, rank=2, world_size=2)
    with pytest.raises(ValueError, match="positive multiple of seq_len"):
        DistributedTokenLoader(pattern).next_batch(100, 32)
    write_shard(tmp_path / "empty_0.bin", [])
    with pytest.raises(ShardError, match="are empty"):
        DistributedTokenLoader(tmp_path / "empty_*.bin")


# --------------------------------------------------------------------------- validation

def test_validation_tokens_trimmed_and_split(tmp_path: Path) -> None:
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(0, 70))
    write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(70, 105))
    tokens = load_validation_tokens(tmp_path / "fineweb_val_*.bin", seq_len=16)
    assert tokens.tolist() == list(range(6 * 16 + 1))
    targets: list[int] = []
    for rank in range(4):
        for x, y in validation_batches(tokens, 16, batch_seqs=1, rank=rank, world_size=4):
            assert x.shape == y.shape == (1, 16) and torch.equal(x[:, 1:], y[:, :-1])
            targets.extend(y.flatten().tolist())
    assert sorted(targets) == list(range(1, 97))  # every target exactly once
    with pytest.raises(ShardError, match="fewer than seq_len"):
        load_validation_tokens(tmp_path / "fineweb_val_*.bin", seq_len=200)


# --------------------------------------------------------------------------- demo data

def test_demo_build_is_fast_idempotent_and_deterministic(tmp_path: Path) -> None:
    demo = build_demo_data(tmp_path / "a")
    assert find_shards(demo.train_pattern) == [demo.train_path]
    assert find_shards(demo.val_pattern) == [demo.val_path]
    assert demo.tokenizer_path.is_file()
    assert sorted(p.name for p in demo.out_dir.iterdir()) == [
        "demo_manifest.json", "fineweb_train_000000.bin", "fineweb_val_000000.bin", "tokenizer.model"]

    train, val = read_shard(demo.train_path), read_shard(demo.val_path)
    assert (train.size, val.size) == (demo.train_tokens, demo.val_tokens)
    assert train[0] == BOS_ID and val[0] == BOS_ID and int(train.max()) < demo.vocab_size == 1024
    assert 0.05 < val.size / (train.size + val.size) < 0.2

    mtime = demo.train_path.stat().st_mtime_ns
    assert build_demo_data(tmp_path / "a") == demo  # reused, not rebuilt
    assert demo.train_path.stat().st_mtime_ns == mtime

    again = build_demo_data(tmp_path / "b")  # a fresh build gives identical bytes
    for name in ("tokenizer.model", "fineweb_train_000000.bin", "fineweb_val_000000.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert again.train_tokens == demo.train_tokens


def test_demo_rebuilds_when_params_change_or_files_break(tmp_path: Path) -> None:
    demo = build_demo_data(tmp_path, val_fraction=0.2)
    assert build_demo_data(tmp_path, val_fraction=0.1).val_tokens < demo.val_tokens
    demo.val_path.write_bytes(b"garbage")
    rebuilt = build_demo_data(tmp_path, val_fraction=0.1)
    assert read_shard(rebuilt.val_path).size == rebuilt.val_tokens
    with pytest.raises(ValueError, match="val_fraction"):
        build_demo_data(tmp_path / "x", val_fraction=1.5)
