"""Token shards of the parameter-golf challenge: reading, writing and streaming.

A shard is a header of 256 little-endian int32 (magic 20240520, version 1, token
count, then zeros) followed by the tokens as little-endian uint16. Train files are
`fineweb_train_*.bin`, validation files `fineweb_val_*.bin`.

`DistributedTokenLoader` streams the shards the way the challenge's script does:
one global stream, cut into global chunks of `world_size * (tokens_per_rank + 1)`
tokens; rank r takes the r-th contiguous span of `tokens_per_rank + 1` tokens, so
spans are disjoint and each rank's x/y pair needs no token from another rank. Its
position is a small dict of ints, so a run can checkpoint and resume with exactly
the same data order.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from recurc.atomic import atomic_write

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")  # little-endian uint16 on any host
MAX_TOKEN_ID = 65535
MAX_SHARD_TOKENS = 2**31 - 1  # the count lives in an int32 header slot

PathLike = str | os.PathLike


class ShardError(ValueError):
    """A shard file that is malformed, or tokens that cannot be written to one."""

    def __init__(self, path: PathLike, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


# --------------------------------------------------------------------------- shards

def write_shard(path: PathLike, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> Path:
    """Write a 1-D sequence of token ids to `path` atomically; return the path.

    The file is written to a temporary sibling and moved into place with
    os.replace, so a reader never sees a half-written shard.
    """
    path = Path(path)
    arr = _validated_tokens(path, tokens)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    return atomic_write(path, header.tobytes() + arr.astype(TOKEN_DTYPE, copy=False).tobytes())


def _validated_tokens(path: Path, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    """Tokens as a 1-D integer array, with every id in [0, 65535]."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(path, f"tokens must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(TOKEN_DTYPE)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ShardError(path, f"tokens must be integers, got dtype {arr.dtype}")
    if arr.size > MAX_SHARD_TOKENS:
        raise ShardError(path, f"{arr.size} tokens exceed the int32 header limit {MAX_SHARD_TOKENS}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > MAX_TOKEN_ID:
        bad = int(np.flatnonzero((arr < 0) | (arr > MAX_TOKEN_ID))[0])
        raise ShardError(path, f"token id {int(arr[bad])} at index {bad} does not fit in uint16 "
                               f"(ids must be in [0, {MAX_TOKEN_ID}]; vocab must be <= 65536)")
    return arr


def read_header(path: PathLike) -> int:
    """Check a shard's header and size; return its token count."""
    path = Path(path)
    file_size = path.stat().st_size
    if file_size < HEADER_BYTES:
        raise ShardError(path, f"file is {file_size} bytes, shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    if magic != SHARD_MAGIC:
        raise ShardError(path, f"wrong magic {magic} (expected {SHARD_MAGIC}); not a token shard")
    if version != SHARD_VERSION:
        raise ShardError(path, f"unsupported shard version {version} (expected {SHARD_VERSION})")
    if count < 0:
        raise ShardError(path, f"negative token count {count} in header")
    expected = HEADER_BYTES + count * TOKEN_DTYPE.itemsize
    if file_size != expected:
        kind = "truncated" if file_size < expected else "oversized"
        raise ShardError(path, f"{kind}: header says {count} tokens ({expected} bytes) "
                               f"but the file is {file_size} bytes")
    return count


def read_shard(path: PathLike, *, mmap: bool = True) -> np.ndarray:
    """The tokens of one shard as a 1-D little-endian uint16 array.

    With mmap=True (default) the array is a read-only memory map, so opening a
    multi-GB shard costs nothing until its tokens are touched.
    """
    path = Path(path)
    count = read_header(path)
    if count == 0:
        return np.empty(0, dtype=TOKEN_DTYPE)  # np.memmap refuses empty maps
    if mmap:
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        return np.fromfile(f, dtype=TOKEN_DTYPE, count=count)


def find_shards(pattern: PathLike) -> list[Path]:
    """Files matching a glob pattern, sorted by name; an error if none match."""
    pattern = str(pattern)
    files = sorted(Path(p) for p in glob.glob(pattern) if os.path.isfile(p))
    if not files:
        parent = Path(pattern).parent
        where = (f"directory {parent} exists but holds no matching file" if parent.is_dir()
                 else f"directory {parent} does not exist")
        raise FileNotFoundError(f"no shard matches {pattern!r}: {where}")
    return files


# --------------------------------------------------------------------------- loader

class DistributedTokenLoader:
    """Deterministic, resumable training stream split across ranks.

    seed=0 reproduces the challenge's order exactly: shards sorted by name,
    starting at token 0, cycling forever. Any other seed permutes the shard order
    (fixed for the whole run) and starts the first shard at a seeded offset, so
    different seeds see different data early on. Every rank must be built with
    the same pattern and seed; they then agree on the global stream.
    """

    def __init__(self, pattern: PathLike, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.files = find_shards(pattern)
        self.counts = [read_header(f) for f in self.files]
        if sum(self.counts) == 0:
            raise ShardError(self.files[0], f"all {len(self.files)} shards matching {str(pattern)!r} are empty")
        self.order, start_pos = self._seeded_start()
        # Position of the global stream: the cursor counts shard switches since the
        # start (cursor % num_files indexes self.order), pos is the offset inside it.
        self._cursor = 0
        self._pos = start_pos
        self._batches = 0
        self._loaded: tuple[int, np.ndarray] | None = None

    def _seeded_start(self) -> tuple[list[int], int]:
        n = len(self.files)
        if self.seed == 0:
            return list(range(n)), 0
        rng = np.random.default_rng(self.seed)
        order = [int(i) for i in rng.permutation(n)]
        first = self.counts[order[0]]
        return order, int(rng.integers(0, first)) if first > 0 else 0

    # -- stream primitives ---------------------------------------------------------
    def _shard(self) -> np.ndarray:
        """The tokens of the shard under the cursor (kept open between calls)."""
        file_idx = self.order[self._cursor % len(self.files)]
        if self._loaded is None or self._loaded[0] != file_idx:
            self._loaded = (file_idx, read_shard(self.files[file_idx]))
        return self._loaded[1]

    def _advance(self, n: int, out: list[np.ndarray] | None) -> None:
        """Move n tokens along the stream, collecting them into `out` if given."""
        while n > 0:
            count = self.counts[self.order[self._cursor % len(self.files)]]
            avail = count - self._pos
            if avail <= 0:  # end of shard (or an empty one): go to the next
                self._cursor += 1
                self._pos = 0
                continue
            k = min(n, avail)
            if out is not None:
                out.append(np.asarray(self._shard()[self._pos:self._pos + k]))
            self._pos += k
            n -= k

    # -- public API ----------------------------------------------------------------
    def next_batch(self, tokens_per_rank: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next (x, y), each int64 of shape (tokens_per_rank // seq_len, seq_len).

        Reads only this rank's span; the other ranks' spans are skipped, not loaded.
        """
        if seq_len < 1 or tokens_per_rank < seq_len or tokens_per_rank % seq_len:
            raise ValueError(f"tokens_per_rank ({tokens_per_rank}) must be a positive multiple "
                             f"of seq_len ({seq_len})")
        span = tokens_per_rank + 1
        chunks: list[np.ndarray] = []
        self._advance(self.rank * span, None)
        self._advance(span, chunks)
        self._advance((self.world_size - self.rank - 1) * span, None)
        self._batches += 1
        local = torch.from_numpy(np.concatenate(chunks).astype(np.int64))
        return local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)

    def state_dict(self) -> dict[str, int]:
        """The stream position; identical on every rank."""
        return {"seed": self.seed, "num_files": len(self.files), "total_tokens": sum(self.counts),
                "cursor": self._cursor, "pos": self._pos, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from `state_dict()`; refuses a state taken over other data or seed."""
        mine = self.state_dict()
        for key in ("seed", "num_files", "total_tokens"):
            if int(state[key]) != mine[key]:
                raise ValueError(f"loader state does not match this data: {key} is {state[key]} in "
                                 f"the checkpoint but {mine[key]} here (same shards and seed needed)")
        self._cursor, self._pos, self._batches = int(state["cursor"]), int(state["pos"]), int(state["batches"])


# --------------------------------------------------------------------------- validation

def load_validation_tokens(pattern: PathLike, seq_len: int) -> np.ndarray:
    """All validation tokens, concatenated in file order and trimmed to k*seq_len + 1.

    Returned as uint16 (the full FineWeb val set is ~62M tokens: 124 MB rather
    than 500 MB as int64); convert per batch, e.g. with `validation_batches`.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    files = find_shards(pattern)
    tokens = np.concatenate([read_shard(f, mmap=False) for f in files])
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ShardError(files[0], f"validation set has {tokens.size} tokens, "
                                   f"fewer than seq_len + 1 = {seq_len + 1}")
    return tokens[:usable + 1]


def validation_batches(tokens: np.ndarray, seq_len: int, batch_seqs: int, rank: int = 0,
                       world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's (x, y) int64 batches of at most `batch_seqs` sequences.

    Sequences are split across ranks as contiguous, disjoint ranges (as the
    challenge's eval does), so the union over ranks covers every target once.
    """
    total_seqs = (tokens.size - 1) // seq_len
    first, last = total_seqs * rank // world_size, total_seqs * (rank + 1) // world_size
    for s in range(first, last, batch_seqs):
        e = min(s + batch_seqs, last)
        local = torch.from_numpy(tokens[s * seq_len:e * seq_len + 1].astype(np.int64))
        yield local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
