"""Exact bits-per-byte, the challenge's score.

BPB = (mean token cross-entropy in nats / ln 2) * tokens / bytes
    = total nats / (ln 2 * total bytes).

A target token's bytes come from three per-id lookup tables built from the
SentencePiece model:
  base_bytes[id]         UTF-8 length of the piece without its leading "▁";
                         1 for byte-fallback pieces <0xNN>; 0 for control,
                         unknown and unused pieces (and ids past the sp vocab).
  has_leading_space[id]  the piece starts with "▁".
  is_boundary[id]        control / unknown / unused (and ids past the sp vocab).
bytes(target) = base_bytes[target] + (has_leading_space[target] and not is_boundary[prev]).
The "▁" counts as one space byte unless it follows a boundary such as the BOS
that starts every document, where SentencePiece drops it when decoding.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

LN2 = math.log(2.0)
SPACE = "\u2581"  # "▁", SentencePiece's whitespace marker

IdTensor = torch.Tensor | np.ndarray | Sequence[int]


def bits_per_byte(total_nll_nats: float, total_bytes: float) -> float:
    """BPB from summed cross-entropy (nats) over targets and their summed byte count."""
    if total_bytes <= 0:
        raise ValueError(f"total_bytes must be positive, got {total_bytes}")
    return float(total_nll_nats) / (LN2 * float(total_bytes))


@dataclass(frozen=True)
class ByteCounter:
    """Per-token byte lookup tables (torch tensors, on any device)."""

    base_bytes: torch.Tensor         # int16 [table_size]
    has_leading_space: torch.Tensor  # bool  [table_size]
    is_boundary: torch.Tensor        # bool  [table_size]

    @classmethod
    def from_sentencepiece(cls, model: "str | os.PathLike | object", vocab_size: int | None = None,
                           device: torch.device | str = "cpu") -> "ByteCounter":
        """Tables for a SentencePiece model (a path or a SentencePieceProcessor).

        vocab_size may exceed the tokenizer's (a model padded to a rounder vocab);
        the extra ids are boundary tokens worth 0 bytes.
        """
        sp = _as_processor(model)
        sp_vocab = int(sp.vocab_size())
        size = max(sp_vocab, vocab_size or 0)
        base = np.zeros(size, dtype=np.int16)
        space = np.zeros(size, dtype=np.bool_)
        boundary = np.ones(size, dtype=np.bool_)
        for i in range(sp_vocab):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue  # boundary, 0 bytes
            boundary[i] = False
            if sp.is_byte(i):
                base[i] = 1  # <0xNN> stands for exactly one raw byte
                continue
            piece = sp.id_to_piece(i)
            if piece.startswith(SPACE):
                space[i] = True
                piece = piece[1:]
            base[i] = len(piece.encode("utf-8"))
        return cls(torch.from_numpy(base).to(device), torch.from_numpy(space).to(device),
                   torch.from_numpy(boundary).to(device))

    @property
    def vocab_size(self) -> int:
        return int(self.base_bytes.numel())

    def to(self, device: torch.device | str) -> "ByteCounter":
        return ByteCounter(self.base_bytes.to(device), self.has_leading_space.to(device),
                           self.is_boundary.to(device))

    def token_bytes(self, prev_ids: IdTensor, target_ids: IdTensor) -> torch.Tensor:
        """Bytes of each target token (int32, same shape as target_ids)."""
        prev = _ids(prev_ids, self.base_bytes.device)
        tgt = _ids(target_ids, self.base_bytes.device)
        if prev.shape != tgt.shape:
            raise ValueError(f"prev_ids {tuple(prev.shape)} and target_ids {tuple(tgt.shape)} differ in shape")
        extra = self.has_leading_space[tgt] & ~self.is_boundary[prev]
        return self.base_bytes[tgt].to(torch.int32) + extra.to(torch.int32)

    def count_bytes(self, prev_ids: IdTensor, target_ids: IdTensor) -> torch.Tensor:
        """Total bytes of the targets, as an int64 scalar tensor (no host sync)."""
        return self.token_bytes(prev_ids, target_ids).sum(dtype=torch.int64)

    def sequence_bytes(self, ids: IdTensor) -> int:
        """Bytes of the targets ids[1:] of one token sequence (ids[0] is context only)."""
        ids = _ids(ids, self.base_bytes.device).reshape(-1)
        return int(self.count_bytes(ids[:-1], ids[1:]))


class BPBAccumulator:
    """Running sums (nll nats, tokens, bytes) in float64 for a (distributed) eval.

    Sums stay on the device, so update() never syncs with the host; call
    all_reduce() once at the end on every rank, then bpb().
    """

    def __init__(self, counter: ByteCounter) -> None:
        self.counter = counter
        self.totals = torch.zeros(3, dtype=torch.float64, device=counter.base_bytes.device)

    def update(self, nll_sum: torch.Tensor | float, prev_ids: IdTensor, target_ids: IdTensor) -> None:
        """Add a batch: summed cross-entropy (nats) over target_ids, and the ids."""
        nbytes = self.counter.count_bytes(prev_ids, target_ids)
        ntok = _numel(target_ids)
        nll = torch.as_tensor(nll_sum, device=self.totals.device).to(torch.float64).sum()
        self.totals += torch.stack([nll, self.totals.new_tensor(float(ntok)), nbytes.to(torch.float64)])

    def update_mean(self, mean_nll: torch.Tensor | float, prev_ids: IdTensor, target_ids: IdTensor) -> None:
        """As update(), for a loss averaged over the batch's targets (what models return)."""
        ntok = _numel(target_ids)
        mean = torch.as_tensor(mean_nll, device=self.totals.device).to(torch.float64)
        self.update(mean * ntok, prev_ids, target_ids)

    def all_reduce(self) -> None:
        """Sum the three totals over ranks (no-op without an initialised process group)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.totals, op=torch.distributed.ReduceOp.SUM)

    @property
    def nll_nats(self) -> float:
        return float(self.totals[0])

    @property
    def tokens(self) -> int:
        return int(self.totals[1])

    @property
    def bytes(self) -> int:
        return int(self.totals[2])

    def mean_loss(self) -> float:
        """Mean cross-entropy per token, in nats (the challenge's val_loss)."""
        return self.nll_nats / self.tokens

    def bpb(self) -> float:
        return bits_per_byte(self.nll_nats, self.bytes)


MAX_TOKENIZER_BYTES = 64 << 20      # SentencePiece models of the challenge are well under 1 MB


def _as_processor(model: "str | os.PathLike | object"):
    """A SentencePieceProcessor from a path, or the processor itself."""
    import sentencepiece as spm

    if isinstance(model, spm.SentencePieceProcessor):
        return model
    from recurc.errors import SpecError
    from recurc.safeio import read_bytes
    path = os.fspath(model)
    proto = read_bytes(path, MAX_TOKENIZER_BYTES, "SentencePiece model")   # a regular file, bounded
    try:
        return spm.SentencePieceProcessor(model_proto=proto)
    except (RuntimeError, ValueError, TypeError) as exc:   # not a ModelProto
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise SpecError(f"{path} is not a SentencePiece model ({first})",
                        hint="--tokenizer takes the .model file the shards were tokenized with") from None


def _numel(ids: IdTensor) -> int:
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else int(np.size(ids))


def _ids(ids: IdTensor, device: torch.device) -> torch.Tensor:
    """Token ids as an int64 tensor on the tables' device (uint16 arrays and lists included)."""
    if isinstance(ids, np.ndarray):
        ids = torch.from_numpy(ids.astype(np.int64, copy=False))
    elif not isinstance(ids, torch.Tensor):
        ids = torch.as_tensor(ids, dtype=torch.int64)
    return ids.to(device=device, dtype=torch.int64)
